"""Build the latent-state training map of a set of runs: read runs, fit, write map.json + figures.

The side-effecting edge of :mod:`grokscope.dynamics.hmm` (Hu, Chen, Saphra & Cho, "Latent State
Models of Training Dynamics"). For each run the 14 weight statistics per checkpoint come from its
``analysis.parquet`` when ``grokscope analyze`` wrote them for every checkpoint needed; otherwise
from the run's own cache ``weight_stats.parquet`` (one row per checkpoint: ``epoch`` + the
statistic columns), computing the checkpoints it lacks from their weights and rewriting it. The
map never writes ``analysis.parquet``. Both tables tag every row with the definition its values
follow (``weight_stats_definition``); rows of another definition, or without the tag, are
recomputed, so a change of definition never feeds stale values into a map.
Only checkpoints on the run's regular grid (multiples of ``train.checkpoint_every``, plus epoch
0) are used, so that every HMM step spans the same number of epochs; the dense early checkpoints
would otherwise stretch the first phase. The convergence epoch of a run is its first evaluated
epoch with test accuracy >= the threshold (:func:`grokscope.events.event_epoch`; None, a
censored run, when never reached).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.dynamics.hmm import TrainingMap, TrainingMapWarning, check_map_options
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.measures.weights import (
    WEIGHT_STAT_COLUMNS,
    WEIGHT_STATS_DEFINITION,
    weight_stats,
)
from grokscope.orchestrate.load import load_run
from grokscope.orchestrate.threads import use_threads
from grokscope.report.training_map import plot_bic, plot_state_sequences, plot_training_map
from grokscope.store import rundir
from grokscope.store.query import collect_runs

DEFINITION = "weight_stats_definition"
WEIGHT_STATS_FILE = "weight_stats.parquet"
# Held-out model selection needs runs to fit and runs to score, and a detour test compares
# visitors with other runs: with fewer than 3 runs neither means anything.
MIN_RUNS = 3


def _stat_rows(path: Path, epochs: list[int]) -> pd.DataFrame:
    """Rows of the parquet table at ``path`` for ``epochs`` that carry every weight statistic
    under the current definition (``weight_stats_definition`` equal to
    :data:`WEIGHT_STATS_DEFINITION`), one per epoch; none when the file is absent, lacks a
    column or was written under another definition (then the values are recomputed)."""
    columns = ["epoch", *WEIGHT_STAT_COLUMNS]
    table = rundir.read_table(path) if path.is_file() else pd.DataFrame()
    if not {*columns, DEFINITION} <= set(table.columns):
        return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
    current = table[DEFINITION] == WEIGHT_STATS_DEFINITION
    table = table.loc[current & table["epoch"].isin(epochs), columns].dropna()
    return table.drop_duplicates("epoch", keep="last")


def weight_table(run: Path) -> pd.DataFrame:
    """Epoch + the 14 weight statistics for every regular checkpoint of ``run``.

    Taken from ``analysis.parquet`` when it covers every regular checkpoint (``grokscope
    analyze`` writes the statistics there), else from the cache ``weight_stats.parquet`` in the
    run (one row per checkpoint: ``epoch`` + the statistic columns); checkpoints missing from
    the cache are computed from their weights and the cache is rewritten (atomically) with the
    run's regular checkpoints. ``analysis.parquet`` is only read, never written.
    """
    run = Path(run)
    cfg = rundir.read_config(run)
    epochs = [e for e in rundir.list_epochs(run) if e % cfg.train.checkpoint_every == 0]
    table = _stat_rows(run / "analysis.parquet", epochs)
    if not set(epochs) <= set(table["epoch"]):
        cache_path = run / WEIGHT_STATS_FILE
        table = _stat_rows(cache_path, epochs)
        missing = [e for e in epochs if e not in set(table["epoch"])]
        if missing:
            rows = []
            for epoch in missing:
                weights = rundir.load_weights(run, epoch)
                params = {k: v.double().numpy() for k, v in weights.items()}
                rows.append({"epoch": epoch, **weight_stats(params)})
            new = pd.DataFrame(rows, columns=["epoch", *WEIGHT_STAT_COLUMNS])
            table = pd.concat([table, new], ignore_index=True) if len(table) else new
            table = table.astype({"epoch": np.int64}).sort_values("epoch")
            cache = table.reset_index(drop=True).assign(**{DEFINITION: WEIGHT_STATS_DEFINITION})
            rundir.write_table(cache_path, cache)
    table = table.astype({"epoch": np.int64, **{c: np.float64 for c in WEIGHT_STAT_COLUMNS}})
    return table.sort_values("epoch").reset_index(drop=True)


def convergence_epoch(run: Path, threshold: float | None) -> int | None:
    """When ``run`` converged, as its kind defines it (:meth:`grokscope.kinds.base.Kind.
    convergence`: test accuracy >= threshold for algorithmic runs, t_gen for structural runs,
    the top level's transition for tree languages); ``threshold`` overrides the run's own."""
    loaded = load_run(run)
    return loaded.kind.convergence(loaded, threshold)


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
    min_dwell: int = 2,
    threads: int | None = None,
) -> dict:
    """Fit the training map of the runs under ``paths`` and write ``out/map.json`` and figures.

    Returns the map dict (``n_states``, ``bic``, ``transitions``, ``states`` with means,
    occupancy, ``detour``, raw and Holm-adjusted ``p_value`` / ``p_value_holm``, ... and
    ``runs``: id, convergence epoch, state path). ``min_dwell`` is the number of consecutive
    checkpoints in a state that make a visit (:class:`TrainingMap`). ``scaling`` is
    ``per_run`` (also spelt ``per-run``) or ``pooled``; ``threads`` CPU threads (None or 0: as
    they are, see :func:`~grokscope.orchestrate.threads.use_threads`). Options are checked
    before any run is read; they and fewer than 3 runs are refused (GrokscopeError): with fewer
    runs there would be nothing to hold out and nothing to compare.
    """
    check_map_options(max_states, restarts, covariance, scaling, min_dwell, threads)
    with use_threads(threads):
        return _build_map(
            paths, out, max_states, restarts, covariance, threshold, seed, figures,
            scaling.replace("-", "_"), min_dwell,
        )  # fmt: skip


def _build_map(
    paths: list[Path],
    out: Path,
    max_states: int,
    restarts: int,
    covariance: str,
    threshold: float | None,
    seed: int,
    figures: bool,
    scaling: str,
    min_dwell: int,
) -> dict:
    runs = collect_runs(paths)
    if len(runs) < MIN_RUNS:
        raise GrokscopeError(
            f"a training map needs at least {MIN_RUNS} runs (held-out model selection and the "
            f"detour tests compare runs); got {len(runs)}"
        )
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
        min_dwell=min_dwell,
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
        fig_dir = out / "figures"
        plot_training_map(tm, fig_dir / "training_map.png")
        plot_state_sequences(tm, None, fig_dir / "state_sequences.png")
        plot_bic(tm, fig_dir / "bic.png")
    return result
