"""The tables of docs/documents.md, from document sweeps that `grokscope sweep-summary` has read
(it writes runs.parquet and documents_runs.parquet). Prints markdown.

    python examples/documents_tables.py sweeps/documents sweeps/documents_long
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from grokscope.dynamics.levels import in_order, level_events

LEVELS = (1, 2, 3, 4)


def cells(frame: pd.DataFrame, fields: list[str]):
    """(name, rows) of every cell of a sweep's table, named by its grid values."""
    for values, cell in frame.groupby(fields or ["cell"], sort=False):
        values = values if isinstance(values, tuple) else (values,)
        names = fields or ["cell"]
        yield ", ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(names, values, strict=True)), cell


def ci(k: int, n: int) -> str:
    if n == 0:
        return "-"
    c = binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} ({c.low:.2f}-{c.high:.2f})"


def spread(x: pd.Series) -> str:
    x = x.dropna()
    if not len(x):
        return "-"
    return f"{x.median():.2f} [{x.min():.2f}, {x.max():.2f}]"


def mean_sd(x: pd.Series) -> str:
    x = x.dropna()
    return "-" if not len(x) else f"{x.mean():.2f} ± {x.std(ddof=1) if len(x) > 1 else 0:.2f}"


def tables(root: Path) -> None:
    runs = pd.read_parquet(root / "runs.parquet")
    docs = pd.read_parquet(root / "documents_runs.parquet")
    both = runs.merge(docs, on=["run", "cell", "seed"], suffixes=("", "_d"))
    fields = [c for c in runs.columns if c.startswith(("task.", "model.")) and runs[c].nunique()]
    fields = fields or ["cell"]
    print(f"\n### {root}\n")
    print(
        "Levels: reached on the test set (c_k >= 1/2 held 3 evaluations), median t*_k [range]; "
        "final c_k mean ± sd over seeds; in order (all four levels / levels 1-3)\n"
    )
    head = ["cell", "runs", *[f"level {k}: reached, t*" for k in LEVELS],
            *[f"final c{k}" for k in LEVELS], "in order 1-4", "in order 1-3"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cell in cells(both, fields):
        row = [name, str(len(cell))]
        for k in LEVELS:
            t = cell[f"t_star_l{k}"].dropna()
            row.append(
                f"{len(t)}/{len(cell)}"
                + (f", {t.median():.0f} [{t.min():.0f}, {t.max():.0f}]" if len(t) else "")
            )
        for k in LEVELS:
            row.append(mean_sd(cell[f"progress_l{k}"]))
        for top in (4, 3):
            verdicts = [
                in_order([None if pd.isna(r[f"t_star_l{k}"]) else r[f"t_star_l{k}"]
                          for k in range(1, top + 1)])
                for _, r in cell.iterrows()
            ]  # fmt: skip
            decided = [v for v in verdicts if v is not None]
            row.append(
                f"{ci(sum(decided), len(decided))} of decided; "
                f"{len(verdicts) - len(decided)} undecided"
            )
        print("| " + " | ".join(row) + " |")
    print(
        "\nTransition or ramp: rise ratio (t90 - t10) / t90 of each level's coefficient, "
        "median [range] over the runs that reached 0.9 (n); near 0 sudden, near 1 gradual\n"
    )
    head = ["cell", *[f"level {k}" for k in LEVELS]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cell in cells(both, fields):
        ratios = {k: [] for k in LEVELS}
        for run in cell["run"]:
            metrics = pd.read_parquet(root / "runs" / run / "metrics.parquet")
            ev = level_events(metrics, len(LEVELS))
            for k in LEVELS:
                r = ev["levels"][str(k)].get("test", {}).get("rise_ratio")
                if r is not None:
                    ratios[k].append(r)
        row = [name]
        for k in LEVELS:
            r = pd.Series(ratios[k], dtype=float)
            row.append(f"{spread(r)} ({len(r)})" if len(r) else "- (0)")
        print("| " + " | ".join(row) + " |")
    print(
        "\nBoundaries: marker first (insert_marker onset strictly before swap_topic's) among "
        "ordered runs, exact 95 % CI; onsets median [range]; final responses median [range]\n"
    )
    head = [
        "cell", "marker first", "onset insert_marker", "onset swap_topic", "insert_marker",
        "remove_marker", "swap_topic", "shuffle", "boundary AUC model / exact",
    ]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cell in cells(both, fields):
        cell = cell[cell["analysed"]]
        verdicts = [v for v in cell.get("marker_first", []) if v is not None and not pd.isna(v)]
        auc = "-"
        if "final_boundary_auc_model" in cell and cell["final_boundary_auc_model"].notna().any():
            auc = (f"{cell['final_boundary_auc_model'].median():.2f} / "
                   f"{cell['final_boundary_auc_exact'].median():.2f}")  # fmt: skip
        row = [
            f"{name} ({len(cell)})",
            ci(sum(bool(v) for v in verdicts), len(verdicts)) if "onset_insert_marker" in cell
            else "no marker edits",
            spread(cell.get("onset_insert_marker", pd.Series(dtype=float))),
            spread(cell["onset_swap_topic"]),
            *[spread(cell.get(f"final_response_{e}", pd.Series(dtype=float)))
              for e in ("insert_marker", "remove_marker", "swap_topic", "shuffle")],
            auc,
        ]  # fmt: skip
        print("| " + " | ".join(row) + " |")
    print(
        "\nGenre gain (nats below the trajectory level's loss) by paragraph, final checkpoint, "
        "mean over seeds: model / exact\n"
    )
    paragraphs = sorted(int(c.split("_p")[1].split("_")[0]) for c in both.columns
                        if c.startswith("final_genre_gain_p") and c.endswith("_model"))  # fmt: skip
    head = ["cell", *[f"paragraph {i}" for i in paragraphs]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cell in cells(both, fields):
        cell = cell[cell["analysed"]]
        row = [name]
        for i in paragraphs:
            m, e = cell[f"final_genre_gain_p{i}_model"], cell[f"final_genre_gain_p{i}_exact"]
            row.append(f"{m.mean():.3f} / {e.mean():.3f}")
        print("| " + " | ".join(row) + " |")


def genre_table(root: Path) -> None:
    """The genre coefficient per paragraph (final checkpoint), where the runs have it."""
    docs = pd.read_parquet(root / "documents_runs.parquet")
    cols = sorted(c for c in docs.columns if c.startswith("final_coef_l4_p"))
    if not cols:
        return
    fields = [c for c in docs.columns if c.startswith(("task.", "model.")) and docs[c].nunique()]
    print(
        "\nGenre coefficient c_4 per paragraph (final checkpoint; mean ± sd over the seeds "
        "that have it), and the exact genre evidence there (nats per token)\n"
    )
    head = ["cell", *[f"paragraph {c.split('_p')[-1]}" for c in cols]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cell in cells(docs[docs["analysed"]], fields):
        row = [f"{name} ({max(cell[c].notna().sum() for c in cols)})"]
        for c in cols:
            evidence = cell[c.replace("coef_l4", "genre_evidence")].mean()
            row.append(f"{mean_sd(cell[c])} (evidence {evidence:.3f})")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        tables(Path(arg))
        genre_table(Path(arg))
    np.seterr(all="ignore")
