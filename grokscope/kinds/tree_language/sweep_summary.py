"""Summary of a sweep of tree-language runs: which levels each run learned and when, per cell,
and the training-set size each level needs.

Each run's level events come from its metrics (:func:`grokscope.dynamics.levels.level_events`,
evaluated at every evaluation during training; no analysis needed). Per cell: for each level,
how many runs reached its transition on the test set (progress >= 1/2, sustained; the progress is
the level coefficient c_k, or f_k for runs recorded before it), their transition
times (listed, not averaged: with a few seeds and censored runs a mean would mislead, and a
median of the reached ones alone would be biased low), the mean final progress, and how many
runs learned their reached levels in order. The training-set size a level needs, per value of
the other grid fields: the smallest P of the grid at which every finished run of the cell
reached the level (None when none did): a bracket on the grid, not a fitted threshold.

Writes ``runs.parquet``, ``summary.parquet`` and ``figures/levels_by_size.png`` (final progress
of each level against P, one line per value of the other fields).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.display import fmt, isnull
from grokscope.dynamics.levels import level_events
from grokscope.kinds.base import SweepView
from grokscope.report.level_figures import size_figure
from grokscope.store import rundir
from grokscope.store.sweepdir import manifest_runs

SIZE = "task.n_train"


def level_runs(root: Path, manifest: dict) -> pd.DataFrame:
    """One row per run: grid values, state, steps, and per level k the test and train transition
    times (``t_star_l{k}``, ``t_star_train_l{k}``), final and largest test progress."""
    rows = []
    for row, _, loaded in manifest_runs(root, manifest):
        if loaded is None:
            rows.append({**row, "state": "new"})
            continue
        status, metrics, cfg = loaded.status, loaded.metrics, loaded.config
        row.update(state=status.get("state"), steps=status.get("epochs_done"))
        row.setdefault(SIZE, cfg.task.n_train)
        if len(metrics):
            from grokscope.kinds import kind_of

            ev = level_events(metrics, kind_of(cfg).level_count(cfg))
            row["in_order"] = ev["in_order"]
            row["measure"] = ev["measure"]
            for k, entry in ev["levels"].items():
                te, tr = entry.get("test", {}), entry.get("train", {})
                row[f"t_star_l{k}"] = te.get("t_star")
                row[f"t_star_train_l{k}"] = tr.get("t_star")
                row[f"progress_l{k}"] = te.get("final_progress")
                row[f"max_progress_l{k}"] = te.get("max_progress")
                row[f"rise_l{k}"] = te.get("rise")
        rows.append(row)
    return pd.DataFrame(rows)


def _levels(runs: pd.DataFrame) -> list[int]:
    return sorted(int(c.rsplit("l", 1)[1]) for c in runs.columns if c.startswith("progress_l"))


def level_cells(runs: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Per cell and level: runs reached / finished, the transition times, the mean final
    progress, and the runs whose reached levels came in order."""
    rows = []
    for cell, group in runs.groupby("cell", sort=True):
        done = group[group["state"] == "done"] if "state" in group else group.iloc[0:0]
        row = {"cell": cell, **{f: group[f].iloc[0] for f in fields}}
        row.update(n_runs=len(group), n_done=len(done))
        for k in _levels(runs):
            t = done[f"t_star_l{k}"] if f"t_star_l{k}" in done else pd.Series(dtype=float)
            reached = [int(x) for x in t if not isnull(x)]
            row[f"reached_l{k}"] = len(reached)
            row[f"t_star_l{k}"] = ",".join(str(x) for x in sorted(reached)) or "-"
            prog = done[f"progress_l{k}"].dropna() if f"progress_l{k}" in done else []
            row[f"progress_l{k}_mean"] = float(np.mean(prog)) if len(prog) else math.nan
        flags = done["in_order"] if "in_order" in done else []
        row["n_in_order"] = int(sum(f is True for f in flags))
        row["n_out_of_order"] = int(sum(f is False for f in flags))
        rows.append(row)
    return pd.DataFrame(rows)


def size_needed(cells: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Per value of the grid fields other than P and per level: the smallest P of the grid at
    which every finished run reached the level on the test set (None: at no P)."""
    if SIZE not in cells:
        return pd.DataFrame()
    others = [f for f in fields if f != SIZE]
    levels = sorted(int(c.split("_l")[1]) for c in cells.columns if c.startswith("reached_l"))
    groups = cells.groupby(others, sort=True) if others else [((), cells)]
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(others, key, strict=True))
        group = group.sort_values(SIZE)
        for k in levels:
            ok = group[(group["n_done"] > 0) & (group[f"reached_l{k}"] == group["n_done"])]
            row[f"p_needed_l{k}"] = int(ok[SIZE].iloc[0]) if len(ok) else None
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_levels(root: Path, manifest: dict, figures: bool = True) -> tuple:
    """Write runs.parquet, summary.parquet and the figure; return (runs, cells, sizes, paths)."""
    root = Path(root)
    fields = list(manifest["spec"]["grid"])
    runs = level_runs(root, manifest)
    cells = level_cells(runs, fields)
    sizes = size_needed(cells, fields)
    rundir.write_table(root / "runs.parquet", runs)
    rundir.write_table(root / "summary.parquet", cells)
    paths = []
    if figures and SIZE in cells and len(cells):
        paths.append(size_figure(runs, fields, root / "figures" / "levels_by_size.png"))
    return runs, cells, sizes, paths


def levels_view(root: Path, manifest: dict, figures: bool) -> SweepView:
    """What ``sweep-summary`` shows of a sweep of runs with level transitions (tree languages,
    documents): per cell, each level's reached count and transition times, the final progress,
    the ordering verdicts; the training-set size each level needs."""
    runs, cells, sizes, paths = summarize_levels(root, manifest, figures)
    fields = list(manifest["spec"]["grid"])
    levels = sorted(int(c.split("_l")[1]) for c in cells.columns if c.startswith("reached_l"))
    rows = []
    for _, row in cells.iterrows():
        progress = [
            "-" if isnull(row[f"progress_l{k}_mean"]) else f"{row[f'progress_l{k}_mean']:.2f}"
            for k in levels
        ]
        rows.append(
            [
                *[fmt(row[f]) for f in fields],
                f"{row['n_done']}/{row['n_runs']}",
                *[f"{row[f'reached_l{k}']}: {row[f't_star_l{k}']}" for k in levels],
                *progress,
                f"{row['n_in_order']} yes, {row['n_out_of_order']} no",
            ]
        )
    lines = []
    for _, row in sizes.iterrows():
        where = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in sizes.columns if "." in k)
        needs = "; ".join(
            f"level {c.split('_l')[1]}: "
            + ("not at any P" if isnull(row[c]) else f"P >= {int(row[c])}")
            for c in sizes.columns
            if c.startswith("p_needed_l")
        )
        lines.append(f"training-set size needed ({where or 'all runs'}): {needs}")
    measures = set(runs["measure"].dropna()) if "measure" in runs else set()
    lines.append(
        "progress p_k: final test level coefficient c_k"
        + (" (runs recorded before it: positional f_k)" if "positional" in measures else "")
    )
    lines.append(f"wrote {Path(root) / 'summary.parquet'} and {len(paths)} figures")
    headers = [
        *[f.split(".")[-1] for f in fields], "done",
        *[f"level {k}: reached, t*" for k in levels], *[f"p{k}" for k in levels], "in order",
    ]  # fmt: skip
    return SweepView(headers, rows, lines, paths)
