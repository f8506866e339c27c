"""Queries over many run directories (DuckDB over their parquet files)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from grokscope.errors import RunDirError
from grokscope.store import rundir

EVENTS = ["t_mem_epoch", "t_grok_epoch"]
RUN_COLUMNS = [
    "run",
    "task",
    "op",
    "p",
    "seed",
    "state",
    "epochs",
    "train_acc",
    "test_acc",
    "gen_acc",
    "t_mem_epoch",
    "t_grok_epoch",
]


def find_runs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a config.json, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise RunDirError(f"directory {root} does not exist")
    return sorted(p.parent for p in root.rglob("config.json"))


def collect_runs(paths: Path | list[Path]) -> list[Path]:
    """Run directories named directly or found under the given folders (sweeps, folders of
    runs), de-duplicated, in order: the one way every command that takes many runs finds them."""
    runs: list[Path] = []
    for path in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(path)
        if not path.exists():
            raise RunDirError(f"{path} does not exist")
        found = [path] if (path / "config.json").is_file() else find_runs(path)
        if not found:
            raise RunDirError(f"no run directories under {path}")
        runs += [r for r in found if r not in runs]
    return runs


def _status(run: Path) -> dict:
    """status.json with the core's keys; {} when missing or corrupt."""
    try:
        return rundir.read_status(run)
    except RunDirError:
        return {}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def runs_table(root: Path) -> pd.DataFrame:
    """One row per run under ``root``: task, status, epochs trained, final accuracies, and
    t_mem / t_grok as the trainer recorded them in status.json (first evaluated epoch with
    train / test accuracy >= the run's own ``train.mem_threshold`` / ``grok_threshold``; null
    when not reached)."""
    runs = find_runs(root)
    meta = []
    for run in runs:
        cfg, status = _read(run / "config.json"), _status(run)
        task = cfg.get("task", {})
        meta.append(
            {
                "run": str(run),
                "task": task.get("name"),
                "op": task.get("op"),
                "p": task.get("p") if task.get("name") == "modular" else None,
                "seed": cfg.get("train", {}).get("seed"),
                "state": status.get("state", "unknown"),
                "t_mem_epoch": status.get("t_mem_epoch"),
                "t_grok_epoch": status.get("t_grok_epoch"),
            }
        )
    meta_df = pd.DataFrame(meta, columns=["run", "task", "op", "p", "seed", "state"] + EVENTS)
    files = [str(r / "metrics.parquet") for r in runs if (r / "metrics.parquet").is_file()]
    if not files:
        for col in ("epochs", "train_acc", "test_acc", "gen_acc"):
            meta_df[col] = None
        return meta_df[RUN_COLUMNS]
    # runs with a generalization set (language models: their t_mem / t_grok are t_id / t_gen)
    has_gen = any("gen_acc" in pq.read_schema(f).names for f in files)
    gen = "arg_max(gen_acc, epoch)" if has_gen else "CAST(NULL AS DOUBLE)"
    con = duckdb.connect()
    con.register("meta_df", meta_df)
    query = f"""
        WITH m AS (
            SELECT regexp_replace(filename, '/metrics\\.parquet$', '') AS run, *
            FROM read_parquet({files!r}, filename = true, union_by_name = true)
        ), agg AS (
            SELECT run,
                max(epoch) AS epochs,
                arg_max(train_acc, epoch) AS train_acc,
                arg_max(test_acc, epoch) AS test_acc,
                {gen} AS gen_acc
            FROM m GROUP BY run
        )
        SELECT meta_df.run, task, op, p, seed, state, epochs, train_acc, test_acc, gen_acc,
               t_mem_epoch, t_grok_epoch
        FROM meta_df LEFT JOIN agg USING (run) ORDER BY meta_df.run
    """
    df = con.execute(query).df()
    for col in ("p", "seed", "epochs", "t_mem_epoch", "t_grok_epoch"):  # integers, null allowed
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df
