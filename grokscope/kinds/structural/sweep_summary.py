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

Writes ``runs.parquet``, ``summary.parquet`` and ``figures/generalization_by_cell.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from grokscope.dynamics.structural import structural_events
from grokscope.report.structural_figures import depth_figure
from grokscope.store import rundir
from grokscope.store.sweepdir import manifest_runs

PREDICTORS = ("tree_score", "bracket_f1", "weight_norm", "attn_entropy")
# fewer runs than this give no correlation (NaN): with 3 or 4 runs every rank order is one of a
# handful, and scipy's p-value for a perfect order of 3 (exactly 0) would read as proof
MIN_RUNS_FOR_RHO = 5


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
        for col in ("gen_acc", "gen_acc_max", "id_acc", *PREDICTORS):
            vals = done[col].dropna() if col in done else pd.Series(dtype=float)
            row[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        flags = done["structural_grokking"] if "structural_grokking" in done else []
        row["n_structural"] = int(np.sum([f is True for f in flags]))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_structural(root: Path, manifest: dict, figures: bool = True) -> tuple:
    """Write runs.parquet, summary.parquet (cells) and the figure; return (runs, cells,
    correlations, figure paths)."""
    root = Path(root)
    fields = list(manifest["spec"]["grid"])
    runs, curves = structural_runs(root, manifest)
    cells = structural_cells(runs, fields)
    corr = predictor_correlations(runs)
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
    return runs, cells, corr, paths
