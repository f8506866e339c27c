"""When a run first reaches a threshold: the one definition of t_mem, t_grok and their kin, and
the one rule for an event that must hold (:func:`first_sustained`).

t_mem is the first evaluated epoch with train accuracy >= ``train.mem_threshold``, t_grok the first
with test accuracy >= ``train.grok_threshold``; Liu et al. (2022) phase classes use "first epoch
strictly above 90 %". An event never reached is None: a censored time, never the budget. The
trainer tracks the events while it trains (:func:`reached`), the analysis, the training map, the
sweep statistics and the CLI read them back from a metrics table (:func:`event_epoch`); both use
the comparison defined here. This module sits at the bottom of the package (beside ``config``) so
that every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tables arrive as pandas frames; importing events stays light
    import pandas as pd


# evaluations in a row at or above the threshold before t_gen counts (structural grokking:
# generalization accuracy is noisy, one lucky evaluation must not set the event)
STRUCTURAL_SUSTAIN = 3


def reached(value: float, threshold: float, strict: bool = False) -> bool:
    """``value >= threshold`` (``value > threshold`` when ``strict``)."""
    return value > threshold if strict else value >= threshold


def first_epoch(
    epochs: Sequence[int], values: Sequence[float], threshold: float, strict: bool = False
) -> int | None:
    """First epoch whose value reaches ``threshold`` (see :func:`reached`), or None."""
    v = np.asarray(values, dtype=np.float64)
    hit = np.flatnonzero(v > threshold if strict else v >= threshold)
    return None if hit.size == 0 else int(np.asarray(epochs)[hit[0]])


def event_epoch(
    table: pd.DataFrame, column: str, threshold: float, strict: bool = False
) -> int | None:
    """First epoch of a metrics ``table`` (sorted by epoch) whose ``column`` reaches
    ``threshold``; None when the column is absent, the table empty or the event never reached."""
    if column not in table or table.empty:
        return None
    t = table.sort_values("epoch", kind="stable")
    return first_epoch(t["epoch"].to_numpy(), t[column].to_numpy(), threshold, strict)


def first_sustained(ok: Sequence[bool], sustain: int = 1) -> int | None:
    """Index of the first evaluation from which ``ok`` holds at ``sustain`` consecutive
    evaluations; None when it never does. The one sustained-crossing rule of every event (the
    trainer's, t_gen, the level transitions t*_k, the early-warning alarms): a crossing in the
    last ``sustain - 1`` evaluations of a table has not held yet, so it is censored (None), never
    taken on the evidence of fewer evaluations. ``sustain = 1`` is the first crossing. When the
    event is *dated* is the caller's: from the start of the window (t_gen, t*_k: when it began),
    or from its end (an alarm: when the evidence was complete)."""
    if sustain < 1:
        raise ValueError(f"sustain must be >= 1, got {sustain}")
    flags = np.asarray(ok, dtype=bool)
    run = 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run == sustain:
            return i - sustain + 1
    return None


def sustained_epoch(
    table: pd.DataFrame, column: str, threshold: float, sustain: int = 1
) -> int | None:
    """The epoch from which ``column`` of a metrics ``table`` stays >= ``threshold`` for
    ``sustain`` evaluations (:func:`first_sustained`); None when absent, empty or never."""
    if column not in table or table.empty:
        return None
    t = table.sort_values("epoch", kind="stable")
    i = first_sustained(t[column].to_numpy(dtype=np.float64) >= threshold, sustain)
    return None if i is None else int(t["epoch"].iloc[i])
