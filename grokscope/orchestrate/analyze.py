"""Analyse a run directory: the one loop over checkpoints, for every kind of study.

``analyze_run(run)`` reads the run (:func:`grokscope.orchestrate.load.load_run`), asks its kind
for an analysis (:meth:`grokscope.kinds.base.Kind.analysis`), puts each chosen checkpoint's
weights into one model and asks the analysis for that checkpoint's row, then writes (atomically)
``analysis.parquet`` (one row per analysed checkpoint), ``summary.json`` and (``figures``)
``figures/*.png``. What the rows, the summary and the figures hold is the kind's (the
algorithmic kind: docs/analysis.md; structural: docs/structural.md; tree languages:
docs/levels.md). This module is the only place in the analysis that touches files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from grokscope.config import Config
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.orchestrate.load import load_run
from grokscope.store import rundir
from grokscope.train.core import checkpoint_epochs

__all__ = ["analyze_run", "scheduled_epochs", "select_epochs"]


def select_epochs(epochs: list[int], every: int) -> list[int]:
    """Every ``every``-th checkpoint epoch, starting with the first, always ending with the last."""
    if every < 1:
        raise GrokscopeError(f"--every must be >= 1, got {every}")
    chosen = list(epochs[::every])
    if chosen[-1] != epochs[-1]:
        chosen.append(epochs[-1])
    return chosen


def scheduled_epochs(epochs: list[int], cfg: Config) -> list[int]:
    """The checkpoints of the run's schedule (:func:`checkpoint_epochs`) and its last one: an
    extra checkpoint written when a run was interrupted is left out, so an interrupted and
    resumed run is analysed on the same rows as an uninterrupted one."""
    planned = set(checkpoint_epochs(cfg.train.epochs, cfg.train.checkpoint_every))
    return [e for e in epochs if e in planned or e == epochs[-1]]


def analyze_run(
    run: Path,
    every: int = 1,
    figures: bool = True,
    progress_cb: Callable[[int, int], None] | None = None,
    **options,
) -> dict:
    """Analyse every ``every``-th checkpoint of ``run`` (the last one always) and write
    ``analysis.parquet``, ``summary.json`` and (``figures``) PNGs; returns the summary dict.

    ``options`` are the kind's (algorithmic: ``per_checkpoint_keys``, ``rule``,
    ``phase_params``, ``curvature_every``); one a kind does not take is refused in one line.
    Raises RunDirError (one line) for a missing run, a bad config or no checkpoints.
    """
    run = Path(run)
    loaded = load_run(run)
    if (options.get("curvature_every") or 0) < 0:
        raise GrokscopeError(f"--curvature-every must be >= 0, got {options['curvature_every']}")
    analysis = loaded.kind.analysis(loaded, {"every": every, **options})
    epochs = scheduled_epochs(loaded.epochs, loaded.config)
    if not epochs:
        raise RunDirError(f"{run} has no checkpoints (expected {run / 'checkpoints'}/epoch_*)")
    chosen = select_epochs(epochs, every)
    model = loaded.template()
    t0 = time.perf_counter()
    analysis.begin(model, lambda epoch: loaded.load_into(model, epoch), chosen)
    rows = []
    for i, epoch in enumerate(chosen):
        rows.append(analysis.row(epoch, loaded.load_into(model, epoch)))
        if progress_cb is not None:
            progress_cb(i + 1, len(chosen))
    table, summary = analysis.finish(rows, chosen)
    rundir.write_table(run / "analysis.parquet", table)
    if figures:
        summary["figures"] = analysis.figures(table, summary, run / "figures")
    summary["analysis_wall_s"] = round(time.perf_counter() - t0, 3)
    rundir.write_json(run / "summary.json", summary)
    return summary
