"""Is there an inverted U over depth? The statistics decided before the depth experiment ran
(docs/structural.md, "The depth experiment at the size that decides").

Murty, Sharma, Andreas & Manning (ACL 2023) report structural grokking as an inverted U over
depth: middle depths generalize, shallow and deep ones less. With one value per run (the mean
generalization accuracy of its last 5k steps) and a few seeds per depth, two tests, both with
their intervals:

- **The contrast** ends minus middle: (sum of the means at the shallowest and the deepest
  depth) - (sum of the means at the depths between), for four depths (m2 + m8) - (m4 + m6).
  Negative for an inverted U. Its standard error is sqrt(sum_k c_k^2 s_k^2 / n_k) with each
  depth's own variance (seeds spread differently at different depths: bimodal at some), and
  its interval uses Welch-Satterthwaite degrees of freedom, so unequal variances and unequal
  seed counts (a failed run) keep the nominal coverage.
- **The quadratic term** b2 of the least-squares fit y = b0 + b1 d + b2 d^2 over all runs,
  with the classical interval (t with n - 3 degrees of freedom; it assumes one variance).
  Negative for an inverted U. Reported beside the contrast because it is what a reader
  expects; where the two disagree, the contrast is the one whose assumptions hold.

Neither is a multiple-testing family: the contrast is the pre-registered test, the quadratic
term its companion. Per depth: the mean with a t-interval over seeds, and the share of runs
that grok structurally with a Clopper-Pearson interval (:func:`share_interval`). Pure
functions; ``tests/test_depth_trend.py`` checks them on data with a planted inverted U, with
no effect at all (the intervals miss 0 in about 5 % of simulated experiments), and
noise-free data (the exact answer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean over seeds; (mean, nan, nan) with one
    value."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def share_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """(share, low, high): k of n runs, with the exact Clopper-Pearson interval."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = stats.binomtest(k, n).proportion_ci(level, method="exact")
    return k / n, float(ci.low), float(ci.high)


def ends_minus_middle(
    depths: Sequence[float], values: Sequence[float], level: float = 0.95
) -> dict[str, float]:
    """The contrast (shallowest + deepest) - (the depths between) of the per-depth means, its
    Welch standard error, degrees of freedom, interval and two-sided p-value. Needs at least
    three depths and two runs at each."""
    d = np.asarray(depths, dtype=float)
    y = np.asarray(values, dtype=float)
    levels = np.unique(d)
    if len(levels) < 3:
        raise ValueError("the contrast needs at least three depths")
    weights = np.where((levels == levels[0]) | (levels == levels[-1]), 1.0, -1.0)
    means, terms, dfs = [], [], []
    for level_d in levels:
        group = y[d == level_d]
        if len(group) < 2:
            raise ValueError(f"depth {level_d:g} has fewer than two runs")
        means.append(group.mean())
        terms.append(group.var(ddof=1) / len(group))
        dfs.append(len(group) - 1)
    w2v = weights**2 * np.asarray(terms)
    estimate = float(weights @ np.asarray(means))
    se = float(math.sqrt(w2v.sum()))
    if se == 0:
        return {"contrast": estimate, "se": 0.0, "df": math.inf, "low": estimate,
                "high": estimate, "p": 0.0 if estimate else 1.0}  # fmt: skip
    df = float(w2v.sum() ** 2 / (w2v**2 / np.asarray(dfs)).sum())
    half = stats.t.ppf(0.5 + level / 2, df) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    return {"contrast": estimate, "se": se, "df": df, "low": estimate - half,
            "high": estimate + half, "p": p}  # fmt: skip


def quadratic_term(
    depths: Sequence[float], values: Sequence[float], level: float = 0.95
) -> dict[str, float]:
    """b2 of the least-squares fit values = b0 + b1 depth + b2 depth^2, its classical standard
    error, interval (t, n - 3 degrees of freedom) and two-sided p-value. Depth is centred
    first, which leaves b2 unchanged and keeps the fit well conditioned."""
    d = np.asarray(depths, dtype=float)
    y = np.asarray(values, dtype=float)
    if len(np.unique(d)) < 3 or len(y) < 4:
        raise ValueError("the quadratic fit needs at least three depths and four runs")
    x = d - d.mean()
    X = np.column_stack([np.ones_like(x), x, x**2])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    df = len(y) - 3
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.inv(X.T @ X)
    b2, se = float(coef[2]), float(math.sqrt(cov[2, 2]))
    if se == 0:
        return {"b2": b2, "se": 0.0, "df": df, "low": b2, "high": b2, "p": 0.0 if b2 else 1.0}
    half = stats.t.ppf(0.5 + level / 2, df) * se
    p = float(2 * stats.t.sf(abs(b2) / se, df))
    return {"b2": b2, "se": se, "df": df, "low": b2 - half, "high": b2 + half, "p": p}
