"""Structural grokking events of a sequence run: t_id, t_gen, their lag, and the flag (tables only).

Murty, Sharma, Andreas & Manning (ACL 2023) call it structural grokking when accuracy on the
structurally novel generalization set rises long after in-distribution accuracy has saturated.
From a run's metrics table (one row per evaluation, ``epoch`` = optimizer step for sequence runs):

- ``t_id``: the first evaluated step with in-distribution accuracy ``id_acc`` >= ``id_threshold``
  (the trainer's ``train.mem_threshold``, 0.99 by default): the in-distribution plateau;
- ``t_gen``: the first evaluated step from which generalization accuracy ``gen_acc`` stays >=
  ``gen_threshold`` for ``sustain`` evaluations in a row (3 by default; a crossing in the last
  two evaluations has not held yet and is censored: :func:`grokscope.events.first_sustained`,
  the one rule of every event, which the trainer applies too) (the trainer's
  ``train.grok_threshold``; 0.8 in the ``murty_*`` presets, since Murty et
  al.'s best question-formation runs end at 0.95 and 0.5 is the chance level of choosing between
  the two auxiliaries of a generalization sentence). Generalization accuracy of these runs swings
  by tens of points between evaluations (Murty et al. report bimodal seeds; a batch-8 run in
  docs/structural.md went .57, .09, .22 on consecutive evaluations), so a single evaluation
  above the threshold is not yet a switch to the hierarchical rule. ``t_gen_first_step`` is
  the first single crossing;
- ``lag`` = t_gen - t_id.

Each event is read at an evaluation, so it happened somewhere in (previous evaluation, that
evaluation]: ``t_id_interval`` and ``t_gen_interval``. The flag is decided only where that
grid cannot change it (:func:`_grid_safe_flag`): with t_id at the first to third evaluation,
as in every run of docs/structural.md, "t_gen > 2 t_id" read at the evaluations alone would
be decided by the grid, not by the dynamics.

The flag (``structural_grokking``) is the phase rule of the algorithmic tasks
(:mod:`grokscope.dynamics.sweep_stats`) with the in-distribution event in the place of training
accuracy: generalization counts as delayed when t_gen > ``ratio`` x t_id. A ratio is free of the
budget and of the time scale the learning rate sets. The default ratio is 2, lower than the
decade asked of algorithmic grokking, because in-distribution accuracy of a language model
saturates only after it has learned the whole output grammar (thousands of steps), so the same
absolute delay is a smaller ratio; a run whose generalization accuracy rises with its
in-distribution accuracy (ratio near 1) is not flagged, and tests check both cases on simulated
curves. When the budget ends before t_gen, the event is censored: ``lag`` is None, and
``lag_lower`` = (last evaluated step) - t_id is what is known (the lag exceeds it), and the flag
is None: not generalized yet, which a longer budget may or may not change (a structural
analogue of the memorization class, never counted as grokking).
``gen_dip`` is the lowest generalization accuracy after t_id: below chance it shows the model
preferring the linear rule first (Murty et al.'s question-formation runs fall to near 0 before
they rise).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from grokscope.events import STRUCTURAL_SUSTAIN, event_epoch, sustained_epoch

STRUCTURAL_RATIO = 2.0


def structural_events(
    metrics: pd.DataFrame,
    id_threshold: float = 0.99,
    gen_threshold: float = 0.8,
    ratio: float = STRUCTURAL_RATIO,
    sustain: int = STRUCTURAL_SUSTAIN,
) -> dict:
    """t_id, t_gen (sustained), lag (or its censored lower bound), the structural-grokking flag
    and the generalization dip of one run's metrics table (see the module docstring)."""
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    if sustain < 1:
        raise ValueError(f"sustain must be >= 1, got {sustain}")
    t = metrics.sort_values("epoch", kind="stable")
    t_id = event_epoch(t, "id_acc", id_threshold)
    t_gen = sustained_epoch(t, "gen_acc", gen_threshold, sustain)
    last = int(t["epoch"].iloc[-1]) if len(t) else 0
    out: dict = {
        "t_id_step": t_id,
        "t_gen_step": t_gen,
        "t_gen_first_step": event_epoch(t, "gen_acc", gen_threshold),
        "sustain": sustain,
        "lag_steps": None,
        "lag_lower_steps": None,
        "censored": t_gen is None,
        "structural_grokking": None,
        "gen_dip": None,
        "final_id_acc": float(t["id_acc"].iloc[-1]) if len(t) else math.nan,
        "final_gen_acc": float(t["gen_acc"].iloc[-1]) if len(t) else math.nan,
        "ratio": ratio,
    }
    if t_id is None:
        return out
    after = t.loc[t["epoch"] >= t_id, "gen_acc"]
    out["gen_dip"] = float(after.min()) if len(after) else None
    steps = t["epoch"].to_numpy()
    id_lo = _previous(steps, t_id)
    out["t_id_interval"] = [id_lo, t_id]
    if t_gen is not None:
        out["lag_steps"] = t_gen - t_id
        gen_lo = _previous(steps, t_gen)
        out["t_gen_interval"] = [gen_lo, t_gen]
        out["structural_grokking"] = _grid_safe_flag(id_lo, t_id, gen_lo, t_gen, ratio)
    else:
        out["lag_lower_steps"] = last - t_id
    return out


def _previous(steps: np.ndarray, t: int) -> int:
    """The evaluated step before ``t`` (0 for the first): an event read at ``t`` happened in
    (previous, t]."""
    before = steps[steps < t]
    return int(before.max()) if len(before) else 0


def _grid_safe_flag(id_lo: int, id_hi: int, gen_lo: int, gen_hi: int, ratio: float) -> bool | None:
    """The flag "T_gen > ratio T_id" decided only where the evaluation grid cannot change it:
    each event lies somewhere in its interval (previous evaluation, evaluation]; True when even
    the earliest possible T_gen exceeds ratio times the latest possible T_id, False when even
    the latest T_gen does not exceed ratio times the earliest T_id, None (undecided) between."""
    if gen_lo >= ratio * id_hi:
        return True
    if gen_hi <= ratio * id_lo:
        return False
    return None
