"""Level-by-level learning of a tree language: when the model's predictor leaves level k - 1 for
level k, on training and test sequences.

The observable of level k is the model's loss on the token positions whose prediction needs
level k (:mod:`grokscope.tasks.tree_language`), read against two exact references on the same
positions: the ceiling, the loss of the level-(k - 1) predictor (what a model that has not
learned level k can do at best), and the floor, the loss of the level-k predictor. The level's
progress is

    f_k(t) = (ceil_k - loss_k(t)) / (ceil_k - floor_k),

0 at the ceiling, 1 at the floor, above 1 when the model beats the level-k predictor on these
sequences (possible only on sequences it has memorized). The transition time t*_k is the first
evaluation from which f_k >= 1/2 holds for ``sustain`` evaluations in a row: the model is then
closer to level k's predictor than to level k - 1's. A single evaluation over the line does not
count (evaluation sets are finite and the curves are noisy); a level never reached by the end of
the budget is censored (None), never the budget. The rise of a transition is the time between
f_k first holding 0.1 and 0.9 (sustained likewise); rise / t*_k small means sudden, near 1
gradual. The train/test gap of level k is t*_k(test) - t*_k(train): positive when the level is
first fitted on the training sequences and only later generalizes (memorize, then generalize).
Levels whose ceiling and floor differ by less than ``min_gap`` nats carry no measurable signal
and are reported as such (``measurable`` False).

Cagnetta & Wyart (2024) predict that the levels are resolved one after another, each needing
more data (steps in the learning curve); Garnier-Brun et al. (ICML 2025) observe transformers
taking in correlations of increasing level during training. ``in_order`` tests the ordering on
one run: True when the transition times increase strictly with the level (a censored level
counts as later than the budget, so a reached level above a censored one breaks the order),
False otherwise, None when no level was reached.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

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


def first_sustained(times: np.ndarray, ok: np.ndarray, sustain: int = SUSTAIN) -> int | None:
    """The first time from which ``ok`` holds at ``sustain`` consecutive evaluations (or at every
    remaining one, when fewer remain at the end of the run); None if never."""
    n = len(ok)
    for i in range(n):
        window = ok[i : i + sustain]
        if len(window) and window.all() and (len(window) == sustain or i + len(window) == n):
            return int(times[i])
    return None


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
            t_half = first_sustained(times, f >= 0.5, sustain) if measurable else None
            t10 = first_sustained(times, f >= 0.1, sustain) if measurable else None
            t90 = first_sustained(times, f >= 0.9, sustain) if measurable else None
            rise = t90 - t10 if t10 is not None and t90 is not None else None
            entry[split] = {
                "measurable": measurable,
                "t_star": t_half,
                "t10": t10,
                "t90": t90,
                "rise": rise,
                "rise_ratio": rise / t_half if rise is not None and t_half else None,
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
    level, a censored level being later than every reached one; None when none was reached."""
    if all(t is None for t in t_stars):
        return None
    big = [math.inf if t is None else t for t in t_stars]
    pairs = zip(big[:-1], big[1:], strict=True)
    return all(a < b or (math.isinf(a) and math.isinf(b)) for a, b in pairs)


def _last_finite(f: np.ndarray) -> float | None:
    ok = f[np.isfinite(f)]
    return float(ok[-1]) if len(ok) else None
