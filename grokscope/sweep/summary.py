"""Summarise a sweep directory: per-run events, per-cell statistics, figures.

Writes ``runs.parquet`` (one row per run), ``summary.parquet`` (one row per grid cell) and
``figures/*.png`` into the sweep directory. The statistics are the pure functions of
:mod:`grokscope.dynamics.sweep_stats`; this module only reads run directories and writes files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from grokscope.dynamics.sweep_stats import LAG_FRACTION, cell_summary, run_events
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.store import rundir

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
    "phase",
    "final_train_acc",
    "final_test_acc",
    "wall_s",
]


def read_manifest(root: Path) -> dict[str, Any]:
    """The sweep.json of a sweep directory (GrokscopeError if this is not one)."""
    path = Path(root) / "sweep.json"
    if not path.is_file():
        raise GrokscopeError(f"{root} is not a sweep directory (no sweep.json)")
    return rundir.read_json(path)


def grid_fields(manifest: dict[str, Any]) -> list[str]:
    """The swept fields, in file order."""
    return list(manifest["spec"]["grid"])


def runs_table(root: Path, lag_fraction: float = LAG_FRACTION) -> pd.DataFrame:
    """One row per run of the sweep (never-started runs included, with state ``new``).

    The phase is given only for finished runs (done / diverged); ``epochs_done`` is the
    censoring time of a run that did not grok.
    """
    root = Path(root)
    manifest = read_manifest(root)
    values = {c["cell"]: c["values"] for c in manifest["cells"]}
    rows = []
    for item in manifest["runs"]:
        run = root / "runs" / item["run"]
        row: dict[str, Any] = {"run": item["run"], "cell": item["cell"], "seed": item["seed"]}
        row.update(values[item["cell"]])
        try:
            cfg = rundir.read_config(run)
            status = rundir.read_status(run)
            metrics = rundir.read_metrics(run)
        except RunDirError:
            rows.append({**row, "state": "new", "epochs_done": 0, "phase": None})
            continue
        ev = run_events(
            metrics, cfg.train.epochs, cfg.train.grok_threshold, lag_fraction=lag_fraction
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
    for col in ("t_mem_epoch", "t_grok_epoch", "t_train90_epoch", "t_val90_epoch"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df[["run", "cell", *fields, *RUN_COLUMNS[2:]]]


def summarize(
    root: Path, lag_fraction: float = LAG_FRACTION, figures: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """Write runs.parquet, summary.parquet and (optionally) the figures; return (runs, cells,
    figure paths)."""
    root = Path(root)
    manifest = read_manifest(root)
    fields = grid_fields(manifest)
    runs = runs_table(root, lag_fraction)
    cells = cell_summary(runs, fields)
    budget = runs.groupby("cell")["epochs_budget"].max()
    cells.insert(len(fields) + 1, "epochs_budget", cells["cell"].map(budget))
    rundir.write_table(root / "runs.parquet", runs)
    rundir.write_table(root / "summary.parquet", cells)
    paths: list[Path] = []
    if figures:
        from grokscope.report.sweep_figures import sweep_figures

        paths = sweep_figures(runs, cells, fields, root / "figures", title=manifest["spec"]["name"])
    return runs, cells, paths
