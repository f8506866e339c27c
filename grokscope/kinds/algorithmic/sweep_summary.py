"""Summarise a sweep directory: per-run events, per-cell statistics, figures.

Writes ``runs.parquet`` (one row per run), ``summary.parquet`` (one row per grid cell) and
``figures/*.png`` into the sweep directory. The statistics are the pure functions of
:mod:`grokscope.dynamics.sweep_stats`; this module only reads run directories and writes files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from grokscope.dynamics.sweep_stats import TIME_RATIO, cell_summary, km_inputs, run_events
from grokscope.report.sweep_figures import sweep_figures
from grokscope.store import rundir
from grokscope.store.sweepdir import grid_fields, manifest_runs, read_manifest

RUN_COLUMNS = [
    "run",
    "cell",
    "seed",
    "data_seed",
    "state",
    "epochs_budget",
    "epochs_done",
    "t_mem_epoch",
    "t_grok_epoch",
    "t_train90_epoch",
    "t_val90_epoch",
    "lag_epochs",
    "lag_limit_epochs",
    "phase",
    "km_entry",
    "km_time_epoch",
    "final_train_acc",
    "final_test_acc",
    "wall_s",
]


def phase_rule(time_ratio: float = TIME_RATIO, lag_fraction: float | None = None) -> str:
    """The phase rule in words, for the tables: which lag counts as grokking."""
    if lag_fraction is not None:
        return f"lag > {lag_fraction:g} x budget"
    return f"t_val90 > {time_ratio:g} x t_train90"


def sweep_runs_table(
    root: Path, time_ratio: float = TIME_RATIO, lag_fraction: float | None = None
) -> pd.DataFrame:
    """One row per run of the sweep (never-started runs included, with state ``new``).

    The phase is given only for finished runs (done / diverged), by the ratio rule
    (``time_ratio``) or, when ``lag_fraction`` is given, the budget-scaled one. ``km_entry`` and
    ``km_time_epoch`` say how the run enters the Kaplan-Meier estimate (grokked at t_grok;
    censored at ``epochs_done``; diverged: censored at the budget).
    """
    root = Path(root)
    manifest = read_manifest(root)
    rows = []
    for row, _, loaded in manifest_runs(root, manifest):
        if loaded is None:
            rows.append({**row, "state": "new", "epochs_done": 0, "phase": None})
            continue
        cfg, status, metrics = loaded.config, loaded.status, loaded.metrics
        ev = run_events(
            metrics,
            cfg.train.epochs,
            cfg.train.grok_threshold,
            time_ratio=time_ratio,
            lag_fraction=lag_fraction,
        )
        state = status.get("state", "unknown")
        last = metrics.sort_values("epoch").iloc[-1] if len(metrics) else None
        rows.append(
            {
                **row,
                "data_seed": cfg.task.data_seed,
                "state": state,
                "epochs_budget": cfg.train.epochs,
                "epochs_done": int(status.get("epochs_done", ev["last_epoch"])),
                "t_mem_epoch": status.get("t_mem_epoch"),
                "t_grok_epoch": ev["t_grok_epoch"],
                "t_train90_epoch": ev["t_train90_epoch"],
                "t_val90_epoch": ev["t_val90_epoch"],
                "lag_epochs": ev["lag_epochs"],
                "lag_limit_epochs": ev["lag_limit_epochs"],
                "phase": ev["phase"] if state in ("done", "diverged") else None,
                "final_train_acc": None if last is None else float(last["train_acc"]),
                "final_test_acc": None if last is None else float(last["test_acc"]),
                "wall_s": status.get("wall_s"),
            }
        )
    df = pd.DataFrame(rows)
    fields = grid_fields(manifest)
    for col in RUN_COLUMNS:
        if col not in df.columns:
            df[col] = None
    for col in ("t_mem_epoch", "t_grok_epoch", "t_train90_epoch", "t_val90_epoch", "lag_epochs"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    df["lag_limit_epochs"] = pd.to_numeric(df["lag_limit_epochs"]).astype(float)
    df[["km_entry", "km_time_epoch"]] = km_inputs(df)
    return df[["run", "cell", *fields, *RUN_COLUMNS[2:]]]


def summarize(
    root: Path,
    time_ratio: float = TIME_RATIO,
    lag_fraction: float | None = None,
    figures: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Write runs.parquet, summary.parquet and (optionally) the figures; return (runs, cells,
    figure paths). The phase rule: see :func:`sweep_runs_table`; its wording is the cells' column
    ``phase_rule``."""
    root = Path(root)
    manifest = read_manifest(root)
    fields = grid_fields(manifest)
    runs = sweep_runs_table(root, time_ratio, lag_fraction)
    cells = cell_summary(runs, fields)
    budget = runs.groupby("cell")["epochs_budget"].max()
    cells.insert(len(fields) + 1, "epochs_budget", cells["cell"].map(budget))
    cells["phase_rule"] = phase_rule(time_ratio, lag_fraction)
    rundir.write_table(root / "runs.parquet", runs)
    rundir.write_table(root / "summary.parquet", cells)
    paths: list[Path] = []
    if figures:
        paths = sweep_figures(runs, cells, fields, root / "figures", title=manifest["spec"]["name"])
    return runs, cells, paths
