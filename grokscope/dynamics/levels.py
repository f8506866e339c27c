"""Level-by-level learning of a tree language: when the model's predictor leaves level k - 1 for
level k, on training and test sequences.

**The progress of level k** is its level coefficient c_k
(:func:`grokscope.measures.levels.level_coefficients`, ours): the least-squares weight of level
k's evidence log q_k - log q_{k-1} in the model's log-likelihood over every observed token, 0
for a model that has not taken in level k, 1 for one that carries all of it. It is specific to
level k (a model equal to the exact predictor q_j scores exactly 1 up to j and 0 above), and it
does not order the levels by construction (a model could carry level 2's evidence without level
1's and would score (0, 1)), so an order read from it is a finding. The coefficients are read
only at evaluations where the fit explains at least ``MIN_FIT`` = 1/2 of the model's
log-likelihood around q_0 (uncentred R^2, ``coef_fit``): an untrained model lies far from the
span of the references (R^2 about 0.2), and its coefficients, fitted to noise, can sit above
1/2 for a higher level from step 0 (seen on document runs). On the 13 tree-language runs of
docs/levels.md the rule changes no transition time.

Runs recorded before the coefficient existed have only the **positional progress** (also ours)

    f_k(t) = (ceil_k - loss_k(t)) / (ceil_k - floor_k)

on the token positions whose prediction needs level k, between the loss of q_{k-1} there (the
ceiling) and that of q_k (the floor). It is not specific to level k: the higher levels also
inform these positions, so a model that has learned them goes above 1 (the exact full
predictor reaches 1.3-1.5 at levels 1 and 2 of small grammars), and a level's crossing can be
carried by the level above. Their events are read on f_k and say so (``measure``).

The transition time t*_k is the first evaluation from which the progress is >= 1/2 at
``sustain`` evaluations in a row (:func:`grokscope.events.first_sustained`, the one rule): a
single evaluation over the line does not count (evaluation sets are finite and the curves are
noisy), nor does a crossing in the last ``sustain - 1`` evaluations (too few to tell;
censored); a level never reached by the end of the budget is censored (None), never the
budget. The rise of a transition is the time between the progress first holding 0.1 and 0.9
(sustained likewise); ``rise_ratio`` = rise / t90 lies in [0, 1]: near 0 sudden (the whole gain
arrives late and at once), near 1 gradual (it builds from the start). The train/test gap of
level k is t*_k(test) - t*_k(train): positive when the level is first fitted on the training
sequences and only later generalizes (memorize, then generalize). A level without signal (its
coefficient undefined; for f_k, ceiling and floor within ``MIN_GAP`` nats) is reported as such
(``measurable`` False).

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
MIN_FIT = 0.5


def progress_measure(metrics: pd.DataFrame) -> str:
    """``"coefficient"`` when the run recorded level coefficients, else ``"positional"``."""
    return "coefficient" if any(c.startswith("coef_l") for c in metrics.columns) else "positional"


def level_progress(
    metrics: pd.DataFrame, level: int, split: str = "test", fitted_only: bool = True
) -> np.ndarray:
    """The progress of level k over the evaluations: its coefficient c_k where the run recorded
    it, else the positional progress f_k (module docstring); NaN where the level has no signal,
    and, for c_k with ``fitted_only``, where the fit explains less than ``MIN_FIT`` of the
    model's log-likelihood (module docstring)."""
    if progress_measure(metrics) == "coefficient":
        col = f"coef_l{level}_{split}"
        if col not in metrics:
            return np.full(len(metrics), np.nan)
        c = metrics[col].to_numpy(float)
        fit = metrics.get(f"coef_fit_{split}")
        if fitted_only and fit is not None:
            c = np.where(fit.to_numpy(float) >= MIN_FIT, c, np.nan)
        return c
    return positional_progress(metrics, level, split)


def positional_progress(metrics: pd.DataFrame, level: int, split: str = "test") -> np.ndarray:
    """f_k over the evaluations (module docstring; not level-specific); NaN where the level
    has no signal."""
    loss = metrics[f"loss_l{level}_{split}"].to_numpy(float)
    ceil = metrics[f"ceil_l{level}_{split}"].to_numpy(float)
    floor = metrics[f"floor_l{level}_{split}"].to_numpy(float)
    gap = ceil - floor
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > MIN_GAP, (ceil - loss) / gap, np.nan)


def first_sustained_time(times: np.ndarray, ok: np.ndarray, sustain: int = SUSTAIN) -> int | None:
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
    measure = progress_measure(metrics)
    out: dict = {"levels": {}, "sustain": sustain, "time_unit": time_col, "measure": measure}
    reached = {}
    for k in range(1, levels + 1):
        entry: dict = {}
        for split in ("train", "test"):
            if f"coef_l{k}_{split}" not in metrics and f"loss_l{k}_{split}" not in metrics:
                continue
            f = level_progress(metrics, k, split)
            raw = level_progress(metrics, k, split, fitted_only=False)
            measurable = bool(np.isfinite(raw).any())
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
                "final_progress": _last_finite(raw),
                "max_progress": float(np.nanmax(raw)) if measurable else None,
                "final_positional": (
                    _last_finite(positional_progress(metrics, k, split))
                    if f"loss_l{k}_{split}" in metrics
                    else None
                ),
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
