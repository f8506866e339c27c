"""Build the latent-state training map of a set of runs: read runs, fit, write map.json + figures.

The side-effecting edge of :mod:`grokscope.dynamics.hmm` (Hu, Chen, Saphra & Cho, "Latent State
Models of Training Dynamics"). For each run the 14 weight statistics per checkpoint come from its
``analysis.parquet`` when ``grokscope analyze`` wrote them, and are otherwise computed from the
checkpoints and stored there. Only checkpoints on the run's regular grid (multiples of
``train.checkpoint_every``, plus epoch 0) are used, so that every HMM step spans the same number
of epochs; the dense early checkpoints would otherwise stretch the first phase. The convergence
epoch of a run is its first evaluated epoch with test accuracy >= the threshold (None, a
censored run, when never reached).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.dynamics.hmm import TrainingMap, TrainingMapWarning
from grokscope.dynamics.phases import event_epoch
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.measures.weights import WEIGHT_STAT_COLUMNS, weight_stats
from grokscope.store import rundir
from grokscope.store.query import find_runs


def collect_runs(paths: list[Path]) -> list[Path]:
    """Run directories named directly or found under the given folders (sweeps), de-duplicated."""
    runs: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise RunDirError(f"{path} does not exist")
        found = [path] if (path / "config.json").is_file() else find_runs(path)
        if not found:
            raise RunDirError(f"no run directories under {path}")
        runs += [r for r in found if r not in runs]
    return runs


def weight_table(run: Path) -> pd.DataFrame:
    """Epoch + the 14 weight statistics for every regular checkpoint of ``run`` (cached in the
    run's analysis.parquet)."""
    cfg = rundir.read_config(run)
    epochs = [e for e in rundir.list_epochs(run) if e % cfg.train.checkpoint_every == 0]
    path = run / "analysis.parquet"
    cached = rundir.read_table(path) if path.is_file() else pd.DataFrame({"epoch": []})
    have = set(cached["epoch"]) if set(WEIGHT_STAT_COLUMNS) <= set(cached.columns) else set()
    if set(epochs) <= have:
        table = cached[cached["epoch"].isin(epochs)]
        return table[["epoch", *WEIGHT_STAT_COLUMNS]].sort_values("epoch").reset_index(drop=True)
    rows = []
    for epoch in epochs:
        params = {k: v.double().numpy() for k, v in rundir.load_weights(run, epoch).items()}
        rows.append({"epoch": epoch, **weight_stats(params)})
    table = pd.DataFrame(rows, columns=["epoch", *WEIGHT_STAT_COLUMNS])
    if len(cached.columns) > 1 and "epoch" in cached.columns:
        merged = cached.drop(columns=[c for c in WEIGHT_STAT_COLUMNS if c in cached.columns])
        merged = merged.merge(table, on="epoch", how="outer")
    else:
        merged = table
    rundir.write_table(path, merged.sort_values("epoch").reset_index(drop=True))
    return table


def convergence_epoch(run: Path, threshold: float | None) -> int | None:
    """First evaluated epoch with test accuracy >= threshold (default: the run's grok threshold)."""
    cfg = rundir.read_config(run)
    limit = cfg.train.grok_threshold if threshold is None else threshold
    return event_epoch(rundir.read_metrics(run), "test_acc", limit)


def build_map(
    paths: list[Path],
    out: Path,
    max_states: int = 8,
    restarts: int = 5,
    covariance: str = "diag",
    threshold: float | None = None,
    seed: int = 0,
    figures: bool = True,
    scaling: str = "per_run",
) -> dict:
    """Fit the training map of the runs under ``paths`` and write ``out/map.json`` and figures.

    Returns the map dict (``n_states``, ``bic``, ``transitions``, ``states`` with means,
    occupancy, ``detour``, ``p_value``, ... and ``runs``: id, convergence epoch, state path).
    """
    runs = collect_runs(paths)
    tables, conv = [], []
    for run in runs:
        table = weight_table(run)
        if len(table) < 2:
            raise RunDirError(f"{run} has fewer than 2 regular checkpoints; nothing to map")
        tables.append(table)
        conv.append(convergence_epoch(run, threshold))
    tm = TrainingMap(
        n_states_range=range(1, max_states + 1),
        n_restarts=restarts,
        covariance_type=covariance,
        random_state=seed,
        scaling=scaling,
    )
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TrainingMapWarning)
        try:
            tm.fit(
                [t[list(WEIGHT_STAT_COLUMNS)].to_numpy(np.float64) for t in tables],
                list(WEIGHT_STAT_COLUMNS),
                convergence_epochs=conv,
                epochs=[t["epoch"].to_numpy(np.float64) for t in tables],
            )
        except ValueError as e:
            raise GrokscopeError(f"cannot fit the training map: {e}") from None
    notes = [str(w.message) for w in caught if issubclass(w.category, TrainingMapWarning)]
    result = tm.to_dict()
    result["notes"] = notes
    result["runs"] = [
        {
            "run": str(run),
            "convergence_epoch": c,
            "epochs": t["epoch"].tolist(),
            "states": [int(s) for s in path],
        }
        for run, c, t, path in zip(runs, conv, tables, tm.paths_, strict=True)
    ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "map.json", result)
    if figures:
        from grokscope.report.training_map import plot_bic, plot_state_sequences, plot_training_map

        fig_dir = out / "figures"
        plot_training_map(tm, fig_dir / "training_map.png")
        plot_state_sequences(tm, None, fig_dir / "state_sequences.png")
        plot_bic(tm, fig_dir / "bic.png")
    return result
