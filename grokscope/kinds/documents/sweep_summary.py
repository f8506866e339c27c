"""What a sweep of document runs answers beyond the level transitions: per cell, whether the
marker moved the model before content did (:mod:`grokscope.dynamics.documents`), the final
responses to each edit, and the genre gain per paragraph index, model against exact.

Reads each analysed run's ``analysis.parquet`` (runs not analysed are counted, not guessed);
writes ``documents_runs.parquet`` (one row per analysed run) beside the sweep's summary, and
``figures/documents_responses.png``: every seed's responses over training, one panel a cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from grokscope.dynamics.documents import marker_first, response_onsets
from grokscope.measures.document_interventions import EDITS
from grokscope.store import rundir
from grokscope.store.sweepdir import manifest_runs


def document_runs(root: Path, manifest: dict) -> pd.DataFrame:
    """One row per run: grid values, whether analysed, the onsets of the edit responses, the
    marker-first verdict, the final responses and the final genre gains."""
    rows = []
    for row, path, loaded in manifest_runs(root, manifest):
        table_path = path / "analysis.parquet"
        row["analysed"] = loaded is not None and table_path.is_file()
        if row["analysed"]:
            table = pd.read_parquet(table_path)
            onsets = response_onsets(table)
            row.update({f"onset_{k}": v for k, v in onsets.items()})
            row["marker_first"] = marker_first(onsets)
            last = table.sort_values("epoch").iloc[-1]
            for name in EDITS:
                if f"response_{name}" in table:
                    row[f"final_response_{name}"] = float(last[f"response_{name}"])
            for col in table.columns:
                if col.startswith(("genre_gain_p", "coef_l4_p", "genre_evidence_p")):
                    row[f"final_{col}"] = float(last[col])
            if "boundary_auc_model" in table:
                row["final_boundary_auc_model"] = float(last["boundary_auc_model"])
                row["final_boundary_auc_exact"] = float(last["boundary_auc_exact"])
        rows.append(row)
    return pd.DataFrame(rows)


def document_lines(root: Path, manifest: dict) -> list[str]:
    """One line per cell: analysed runs, marker-first count with its exact 95 % interval, the
    median final response to each edit, the mean final genre gains (model / exact) by
    paragraph."""
    runs = document_runs(root, manifest)
    rundir.write_table(Path(root) / "documents_runs.parquet", runs)
    fields = list(manifest["spec"]["grid"])
    lines = []
    for values, cell in runs.groupby(fields, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        where = ", ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(fields, values, strict=True))
        done = cell[cell["analysed"]]
        if not len(done):
            lines.append(f"{where}: no run analysed yet")
            continue
        verdicts = [v for v in done.get("marker_first", pd.Series(dtype=object)) if v is not None]
        if "final_response_insert_marker" in done and verdicts:
            k, n = sum(bool(v) for v in verdicts), len(verdicts)
            ci = binomtest(k, n).proportion_ci(0.95, method="exact")
            first = f"marker first in {k}/{n} ordered runs (95 % CI {ci.low:.2f}-{ci.high:.2f})"
        else:
            first = "marker first: no ordered run"
        responses = ", ".join(
            f"{name} {np.nanmedian(done[f'final_response_{name}']):.2f}"
            for name in EDITS
            if f"final_response_{name}" in done
        )
        gains = []
        i = 0
        while f"final_genre_gain_p{i}_model" in done:
            m = np.nanmean(done[f"final_genre_gain_p{i}_model"])
            e = np.nanmean(done[f"final_genre_gain_p{i}_exact"])
            gains.append(f"p{i} {m:.3f}/{e:.3f}")
            i += 1
        lines.append(
            f"{where} ({len(done)}/{len(cell)} analysed): {first}; final responses (median) "
            f"{responses}; genre gain model/exact nats {', '.join(gains)}"
        )
    return lines


def response_figure(root: Path, manifest: dict, out: Path) -> Path | None:
    """One panel per cell: each analysed seed's response to an inserted marker, a removed one
    and a swapped topic over training (model over exact; 1: as the optimal predictor)."""
    from grokscope.report.document_figures import EDIT_COLORS
    from grokscope.report.figure_io import save_figure, subplots

    fields = list(manifest["spec"]["grid"])
    tables: dict[tuple, list[pd.DataFrame]] = {}
    for row, path, loaded in manifest_runs(root, manifest):
        if loaded is not None and (path / "analysis.parquet").is_file():
            key = tuple(row[f] for f in fields)
            tables.setdefault(key, []).append(pd.read_parquet(path / "analysis.parquet"))
    if not tables:
        return None
    keys = sorted(tables, key=str)
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = subplots(
        rows, cols, figsize=(3.6 * cols, 2.8 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes.flat, keys, strict=False):
        for t in tables[key]:
            t = t[t["epoch"] > 0].sort_values("epoch")
            for name, ls in (("insert_marker", "-"), ("remove_marker", ":"), ("swap_topic", "-")):
                if f"response_{name}" in t:
                    ax.plot(t["epoch"], t[f"response_{name}"], color=EDIT_COLORS[name], ls=ls,
                            lw=1, alpha=0.8)  # fmt: skip
        ax.axhline(1.0, color="0.5", lw=0.7, ls=":")
        ax.axhline(0.0, color="0.5", lw=0.7)
        ax.set_xscale("log")
        ax.set_ylim(-0.3, 2.0)
        ax.set_title(", ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(fields, key, strict=True)),
                     fontsize=7)  # fmt: skip
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    handles = [
        plt_line(EDIT_COLORS[n], ls, n)
        for n, ls in (("insert_marker", "-"), ("remove_marker", ":"), ("swap_topic", "-"))
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    fig.supxlabel("step", fontsize=8)
    fig.supylabel("response, model / exact", fontsize=8)
    return save_figure(fig, out)


def plt_line(color: str, ls: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=color, ls=ls, label=label)
