"""Level-by-level learning of a tree language: when the model's predictor leaves level k - 1 for
level k, on training and test sequences.

The observable of level k is the model's loss on the token positions whose prediction needs
level k (:mod:`grokscope.tasks.tree_language`), read against two exact references on the same
positions: the ceiling, the loss of the level-(k - 1) predictor (what a model that has not
learned level k can do at best), and the floor, the loss of the level-k predictor. The level's
progress is

    f_k(t) = (ceil_k - loss_k(t)) / (ceil_k - floor_k),

0 at the ceiling, 1 at the floor. The floor is not the optimum: at the positions that need level
k, the predictors of higher levels see more of the past than q_k does, so a model that has also
learned higher levels goes above 1 on fresh sequences (the exact full predictor reaches 1.3-1.5
at levels 1 and 2 of small grammars); on training sequences a model that memorizes goes above
1 too. The transition time t*_k is the first evaluation from which f_k >= 1/2 holds for
``sustain`` evaluations in a row: the model then gets at least half of level k's gain over
level k - 1 at these positions. A single evaluation over the line does not count (evaluation
sets are finite and the curves are noisy), nor does a crossing in the last ``sustain - 1``
evaluations (too few to tell; censored); a level never reached by the end of the budget is
censored (None), never the budget. The rise of a transition is the time between f_k first
holding 0.1 and 0.9 (sustained likewise); ``rise_ratio`` = rise / t90 lies in [0, 1]: near 0
sudden (the whole gain arrives late and at once), near 1 gradual (it builds from the start).
The train/test gap of level k is t*_k(test) - t*_k(train): positive when the level is
first fitted on the training sequences and only later generalizes (memorize, then generalize).
Levels whose ceiling and floor differ by less than ``min_gap`` nats carry no measurable signal
and are reported as such (``measurable`` False).

Cagnetta & Wyart (2024) predict that the levels are resolved one after another, each needing
more data (steps in the learning curve); Garnier-Brun et al. (ICML 2025) observe transformers
taking in correlations of increasing level during training. ``in_order`` tests the ordering on
one run: True when two or more levels are reached and the transition times increase strictly
with the level (a censored level counts as later than every reached one; two censored levels
are not compared), False when a higher level is reached strictly before a lower one (a reached
level above a censored one breaks the order), None when undecided: fewer than two levels
reached with nothing out of order (one level reached orders nothing, so it is not evidence of
an order), or two levels crossing at the same evaluation (simultaneous within the evaluation
interval, which times cannot order).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from grokscope.events import first_sustained

SUSTAIN = 3
MIN_GAP = 1e-3


def level_progress(metrics: pd.DataFrame, level: int, split: str = "test") -> np.ndarray:
    """f_k over the evaluations (module docstring); NaN where the level has no signal."""
    loss = metrics[f"loss_l{level}_{split}"].to_numpy(float)
    ceil = metrics[f"ceil_l{level}_{split}"].to_numpy(float)
    floor = metrics[f"floor_l{level}_{split}"].to_numpy(float)
    gap = ceil - floor
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > MIN_GAP, (ceil - loss) / gap, np.nan)


def first_sustained_time(
    times: np.ndarray, ok: np.ndarray, sustain: int = SUSTAIN
) -> int | None:
    """The first time from which ``ok`` holds at ``sustain`` consecutive evaluations
    (:func:`grokscope.events.first_sustained`, the one rule; censored: None)."""
    i = first_sustained(ok, sustain)
    return None if i is None else int(times[i])


def level_events(
    metrics: pd.DataFrame,
    levels: int,
    time_col: str = "step",
    sustain: int = SUSTAIN,
) -> dict:
    """Transition times per level and split, rises, train/test gaps and the ordering verdict
    (module docstring). ``metrics`` needs the per-level columns of a tree-language run."""
    times = metrics[time_col].to_numpy()
    out: dict = {"levels": {}, "sustain": sustain, "time_unit": time_col}
    reached = {}
    for k in range(1, levels + 1):
        entry: dict = {}
        for split in ("train", "test"):
            if f"loss_l{k}_{split}" not in metrics:
                continue
            f = level_progress(metrics, k, split)
            measurable = bool(np.isfinite(f).any())
            t_half = first_sustained_time(times, f >= 0.5, sustain) if measurable else None
            t10 = first_sustained_time(times, f >= 0.1, sustain) if measurable else None
            t90 = first_sustained_time(times, f >= 0.9, sustain) if measurable else None
            rise = t90 - t10 if t10 is not None and t90 is not None else None
            entry[split] = {
                "measurable": measurable,
                "t_star": t_half,
                "t10": t10,
                "t90": t90,
                "rise": rise,
                "rise_ratio": rise / t90 if rise is not None and t90 else None,
                "final_progress": _last_finite(f),
                "max_progress": float(np.nanmax(f)) if measurable else None,
            }
        tr, te = entry.get("train", {}).get("t_star"), entry.get("test", {}).get("t_star")
        entry["gap"] = te - tr if tr is not None and te is not None else None
        out["levels"][str(k)] = entry
        if entry.get("test", {}).get("measurable"):
            reached[k] = te
    out["in_order"] = in_order([reached[k] for k in sorted(reached)])
    return out


def in_order(t_stars: list[int | None]) -> bool | None:
    """Whether transition times (level 1 first; None = censored) increase strictly with the
    level (module docstring): True (two or more reached, in order), False (a higher level
    strictly first) or None (fewer than two reached and none out of order, or a tie)."""
    if all(t is None for t in t_stars):
        return None
    big = [math.inf if t is None else t for t in t_stars]
    both = zip(big[:-1], big[1:], strict=True)
    pairs = [(a, b) for a, b in both if not (math.isinf(a) and math.isinf(b))]
    if any(a > b for a, b in pairs):
        return False
    if any(a == b for a, b in pairs) or sum(t is not None for t in t_stars) < 2:
        return None
    return True


def _last_finite(f: np.ndarray) -> float | None:
    ok = f[np.isfinite(f)]
    return float(ok[-1]) if len(ok) else None
