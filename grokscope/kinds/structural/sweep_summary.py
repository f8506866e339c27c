"""Summary of a sweep of sequence runs (structural grokking): one row per run, one per cell, the
three candidate predictors of generalization, and the figure of generalization per cell.

Murty, Sharma, Andreas & Manning (ACL 2023) ask which property of a trained model predicts the
depth that generalizes best: the tree score of its tree projection does, weight norm and
attention sparsity do not. Here each run contributes its final generalization accuracy and, from
the last analysed checkpoint (``grokscope analyze``), its tree score, bracketing F1, weight norm
and attention entropy. Per cell: means over the finished runs. Across runs: Spearman's rank
correlation of each measure with final generalization accuracy (``scipy.stats.spearmanr``), with
its two-sided p-value, from 5 finished and analysed runs on (fewer give NaN); with a handful of
runs these are descriptive (a p below 0.05 needs |rho| > 0.8 with six runs), and the cell
means answer the paper's question directly: does the
cell with the highest tree score also generalize best?

Over depth (a grid over ``model.n_layers``), the inverted U of Murty et al. is tested as the
depth experiment's design fixed it (docs/structural.md): on each finished run's mean
generalization accuracy over its last 5k steps (``gen_acc_last5k``), the contrast ends minus
middle and the quadratic term, with their intervals (:mod:`grokscope.dynamics.depth_trend`);
per cell that mean with its t-interval and the share grokking structurally with its
Clopper-Pearson interval.

Writes ``runs.parquet``, ``summary.parquet`` and ``figures/generalization_by_cell.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from grokscope.dynamics.depth_trend import (
    ends_minus_middle,
    mean_interval,
    quadratic_term,
    share_interval,
)
from grokscope.dynamics.structural import structural_events
from grokscope.report.structural_figures import depth_figure
from grokscope.store import rundir
from grokscope.store.sweepdir import manifest_runs

PREDICTORS = ("tree_score", "bracket_f1", "weight_norm", "attn_entropy")
# fewer runs than this give no correlation (NaN): with 3 or 4 runs every rank order is one of a
# handful, and scipy's p-value for a perfect order of 3 (exactly 0) would read as proof
MIN_RUNS_FOR_RHO = 5
# the window of the depth experiment's per-run value: the mean generalization accuracy over the
# last 5k steps (a single evaluation swings by 0.1-0.3 between evaluations late in a run)
LAST_STEPS = 5000
DEPTH = "model.n_layers"


def last_window_mean(metrics: pd.DataFrame, steps: int = LAST_STEPS) -> float:
    """Mean generalization accuracy over the evaluations of the last ``steps`` steps."""
    end = metrics["epoch"].max()
    return float(metrics.loc[metrics["epoch"] > end - steps, "gen_acc"].mean())


def _final_analysis(table: pd.DataFrame | None, steps: int | None) -> dict:
    """The measures of the last analysed checkpoint, if it is the run's last step. An analysis
    written before the tree score followed Murty et al.'s definition (it has no
    ``tree_score_random`` column) contributes its weight norm only: its tree score, F1 and
    attention entropy were taken otherwise and are not comparable."""
    if table is None or not len(table):
        return {}
    last = table.sort_values("epoch").iloc[-1]
    if steps is not None and int(last["epoch"]) != steps:
        return {}
    names = PREDICTORS if "tree_score_random" in last else ("weight_norm",)
    return {k: float(last[k]) for k in names if k in last}


def structural_runs(root: Path, manifest: dict) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per run of the sweep, and each run's metrics table (by run id)."""
    rows, curves = [], {}
    for row, _, loaded in manifest_runs(root, manifest):
        if loaded is None:
            rows.append({**row, "state": "new"})
            continue
        status, metrics, cfg = loaded.status, loaded.metrics, loaded.config
        steps = status.get("epochs_done")
        row.update(state=status.get("state"), device=status.get("device"), steps=steps)
        if len(metrics):
            curves[row["run"]] = metrics
            ev = structural_events(metrics, cfg.train.mem_threshold, cfg.train.grok_threshold)
            row.update(
                id_acc=ev["final_id_acc"],
                gen_acc=ev["final_gen_acc"],
                gen_acc_max=float(metrics["gen_acc"].max()),
                gen_acc_last5k=last_window_mean(metrics),
                t_id_step=ev["t_id_step"],
                t_gen_step=ev["t_gen_step"],
                structural_grokking=ev["structural_grokking"],
                gen_dip=ev["gen_dip"],
            )
        row.update(_final_analysis(loaded.analysis, steps))
        rows.append(row)
    return pd.DataFrame(rows), curves


def predictor_correlations(runs: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho (and p) of each measure with final generalization accuracy over the
    finished, analysed runs."""
    out = []
    done = runs[runs.get("state") == "done"] if "state" in runs else runs.iloc[0:0]
    for name in PREDICTORS:
        if name not in done or "gen_acc" not in done:
            continue
        both = done[[name, "gen_acc"]].dropna()
        enough = len(both) >= MIN_RUNS_FOR_RHO
        if enough and both[name].nunique() > 1 and both["gen_acc"].nunique() > 1:
            rho, p = stats.spearmanr(both[name], both["gen_acc"])
            out.append({"measure": name, "n_runs": len(both), "rho": rho, "p": p})
        else:
            out.append({"measure": name, "n_runs": len(both), "rho": math.nan, "p": math.nan})
    return pd.DataFrame(out)


def structural_cells(runs: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Per cell: runs, finished runs, and the means (and spread) over the finished ones."""
    rows = []
    for cell, group in runs.groupby("cell", sort=True):
        done = group[group.get("state") == "done"] if "state" in group else group.iloc[0:0]
        row = {"cell": cell, **{f: group[f].iloc[0] for f in fields}}
        row.update(n_runs=len(group), n_done=len(done))
        for col in ("gen_acc", "gen_acc_max", "gen_acc_last5k", "id_acc", *PREDICTORS):
            vals = done[col].dropna() if col in done else pd.Series(dtype=float)
            row[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        last = done["gen_acc_last5k"].dropna() if "gen_acc_last5k" in done else []
        if len(last):
            _, row["gen_acc_last5k_lo"], row["gen_acc_last5k_hi"] = mean_interval(last)
        flags = done["structural_grokking"] if "structural_grokking" in done else []
        row["n_structural"] = int(np.sum([f is True for f in flags]))
        _, row["structural_lo"], row["structural_hi"] = share_interval(
            row["n_structural"], len(done)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def depth_trend(runs: pd.DataFrame) -> dict | str:
    """The inverted-U tests over the finished runs of a grid over depth: {"contrast": ...,
    "quadratic": ...}, or why they cannot be made (a sentence)."""
    if DEPTH not in runs or "gen_acc_last5k" not in runs:
        return "the sweep is not over model.n_layers"
    done = runs[runs["state"] == "done"].dropna(subset=["gen_acc_last5k"])
    counts = done.groupby(DEPTH).size().reindex(sorted(runs[DEPTH].unique()), fill_value=0)
    if len(counts) < 3 or counts.min() < 2:
        have = ", ".join(f"{int(d)} layers: {n}" for d, n in counts.items())
        return f"needs 3 or more depths with 2 or more finished runs each (finished: {have})"
    depths, values = done[DEPTH].to_numpy(float), done["gen_acc_last5k"].to_numpy(float)
    return {
        "contrast": ends_minus_middle(depths, values),
        "quadratic": quadratic_term(depths, values),
    }


def summarize_structural(root: Path, manifest: dict, figures: bool = True) -> tuple:
    """Write runs.parquet, summary.parquet (cells) and the figure; return (runs, cells,
    correlations, figure paths)."""
    root = Path(root)
    fields = list(manifest["spec"]["grid"])
    runs, curves = structural_runs(root, manifest)
    cells = structural_cells(runs, fields)
    corr = predictor_correlations(runs)
    trend = depth_trend(runs)
    rundir.write_table(root / "runs.parquet", runs)
    rundir.write_table(root / "summary.parquet", cells)
    paths = []
    if figures and curves:
        by_cell: dict = {}
        for _, r in runs.iterrows():
            if r["run"] in curves:
                key = r[fields[0]] if fields else r["cell"]
                by_cell.setdefault(key, []).append(curves[r["run"]])
        title = f"{manifest['spec'].get('name', root.name)}: generalization accuracy per cell"
        label = f"{fields[0].split('.')[-1]} = " if fields else ""
        out = root / "figures" / "generalization_by_cell.png"
        paths.append(depth_figure(by_cell, title, out, label))
    return runs, cells, corr, trend, paths
