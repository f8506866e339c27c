"""How much data does a level need? The training-set size at which half the runs reach it.

Cagnetta & Wyart (2024) predict for the Random Hierarchy Model that next-token learning
resolves one level after another, each level needing more data than the last (the sample
complexity grows as m^L, m synonymous rules per symbol; Cagnetta et al., PRX 2024). A sweep over
training-set sizes P with a few seeds each records, per run and level, whether the run reached
the level (its coefficient c_k held at 1/2: :mod:`grokscope.dynamics.levels`). Here, per level:

- **P_1/2**, the size at which a run reaches the level with probability 1/2, from a logistic
  fit of reached against log P (maximum likelihood, no penalty). When the sizes separate the
  runs perfectly (every run below some size fails, every run above succeeds), the likelihood has
  no maximum and any threshold between the two sizes fits: P_1/2 is then their geometric mean
  and its interval is the bracket (to the profile grid's resolution), said by ``separated``.
- **its interval**: the profile-likelihood interval of the threshold (the logistic model written
  as slope x (log P - log P_1/2); every log P_1/2 whose profiled likelihood ratio stays under
  the chi-square quantile), the interval of bioassay's ED50. A percentile bootstrap over seeds
  was tried first and covered a planted threshold in only about 80 % of simulated sweeps of the
  design (4 runs a size); the profile interval covers it in about 93 %.
- **no size dependence**: when a permutation test of the correlation between log P and
  reaching (2,000 permutations of which runs reached the level) does not reject at 5 %, P_1/2 is
  not reported (``None``): reaching the level does not depend on P over the grid, and a
  threshold read from a flat curve would be noise. Two tests were tried first and read
  thresholds from flat simulated sweeps too often at 4 runs a size: a bootstrap interval of the
  slope (18 % instead of 5 %; resampling within sizes is too narrow) and the likelihood-ratio
  test (8 %; its chi-square is only asymptotic). The permutation test's level is exact.

Pure functions; ``tests/test_sample_complexity.py`` checks them on simulated sweeps with a known
threshold (coverage), a perfectly separated sweep, and sweeps where size does not matter. The
ratio P_(k+1) / P_k beside the predicted m is not written yet: its interval needs the two
levels' joint likelihood, not two separate intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

PROFILE_GRID = 400  # log-threshold grid points (and slope grid points) of the profile


def _separation(log_p: np.ndarray, reached: np.ndarray) -> tuple[float, float] | None:
    """(largest log size with no success, smallest log size with no failure) when every run at
    or below the first fails and every run at or above the second succeeds; None otherwise."""
    fails, wins = log_p[~reached], log_p[reached]
    if len(fails) == 0 or len(wins) == 0:
        return None
    if fails.max() < wins.min():
        return float(fails.max()), float(wins.min())
    return None


def _nll(beta: np.ndarray, log_p: np.ndarray, y: np.ndarray) -> float:
    z = beta[0] + beta[1] * log_p
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def size_dependence_p(
    sizes: Sequence[float], reached: Sequence[bool], seed: int = 0, permutations: int = 2000
) -> float:
    """p-value of the permutation test of |corr(log P, reached)| (reached shuffled across runs
    ``permutations`` times; (1 + as extreme) / (1 + permutations)); 1 when every run or none
    reached."""
    log_p = np.log(np.asarray(sizes, dtype=float))
    y = np.asarray(reached, dtype=float)
    if y.all() or not y.any():
        return 1.0
    x = log_p - log_p.mean()
    observed = abs(float(x @ (y - y.mean())))
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(y) for _ in range(permutations)])
    extreme = int((np.abs((perms - y.mean()) @ x) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + permutations)


def _logistic(log_p: np.ndarray, reached: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of the maximum-likelihood logistic fit on centred log P."""
    y = reached.astype(float)

    def nll(beta: np.ndarray) -> float:
        return _nll(beta, log_p, y)

    def grad(beta: np.ndarray) -> np.ndarray:
        r = 1.0 / (1.0 + np.exp(-(beta[0] + beta[1] * log_p))) - y
        return np.array([r.sum(), (r * log_p).sum()])

    fit = optimize.minimize(nll, np.zeros(2), jac=grad, method="BFGS")
    return float(fit.x[0]), float(fit.x[1])


def half_point(sizes: Sequence[float], reached: Sequence[bool]) -> dict:
    """P_1/2 of one set of runs: {"p_half", "slope", "separated", "bracket"}; p_half None when
    every run reached the level or none did (nothing to locate)."""
    log_p = np.log(np.asarray(sizes, dtype=float))
    hit = np.asarray(reached, dtype=bool)
    if hit.all() or not hit.any():
        return {"p_half": None, "slope": 0.0, "separated": False, "bracket": None}
    sep = _separation(log_p, hit)
    if sep is not None:
        lo, hi = sep
        return {"p_half": math.exp((lo + hi) / 2), "slope": math.inf, "separated": True,
                "bracket": (math.exp(lo), math.exp(hi))}  # fmt: skip
    centre = log_p.mean()
    b0, b1 = _logistic(log_p - centre, hit)
    # a threshold far outside the sizes sampled (a nearly flat fit) locates nothing
    far = 3 * (log_p.max() - log_p.min())
    p_half = None
    if b1 != 0 and abs(b0 / b1) <= far:
        p_half = math.exp(centre - b0 / b1)
    return {"p_half": p_half, "slope": b1, "separated": False, "bracket": None}


def profile_interval(
    sizes: Sequence[float], reached: Sequence[bool], level: float = 0.95
) -> tuple[float, float]:
    """(low, high) of P_1/2: the log thresholds, on a grid one unit of log P beyond the sizes
    sampled, whose likelihood maximised over the slope (a grid of +-1e-3 to 1e3, which holds
    separated data's near-infinite slopes) is within the chi-square quantile of the best."""
    x = np.log(np.asarray(sizes, dtype=float))
    y = np.asarray(reached, dtype=float)
    thresholds = np.linspace(x.min() - 1.0, x.max() + 1.0, PROFILE_GRID)
    slopes = np.logspace(-3, 3, PROFILE_GRID // 2)
    slopes = np.concatenate([-slopes[::-1], slopes])
    z = slopes[None, :, None] * (x[None, None, :] - thresholds[:, None, None])
    profile = (np.logaddexp(0.0, z) - y * z).sum(-1).min(1)
    inside = thresholds[2 * (profile - profile.min()) <= stats.chi2.ppf(level, 1)]
    return float(math.exp(inside.min())), float(math.exp(inside.max()))


def level_threshold(
    sizes: Sequence[float], reached: Sequence[bool], seed: int = 0, level: float = 0.95
) -> dict:
    """P_1/2 of a level with its profile-likelihood interval (module docstring): {"p_half", "low",
    "high", "separated", "bracket", "p_size", "n_runs"}; p_half None when reaching does not
    depend on size over the grid (``p_size``, the permutation test's p-value, >= 1 - ``level``)
    or every run (or none) reached the level."""
    s = np.asarray(sizes, dtype=float)
    hit = np.asarray(reached, dtype=bool)
    point = half_point(s, hit)
    p_size = size_dependence_p(s, hit, seed)
    out = {"p_half": point["p_half"], "low": None, "high": None, "separated": point["separated"],
           "bracket": point["bracket"], "p_size": p_size, "n_runs": int(len(s))}  # fmt: skip
    if p_size >= 1 - level:
        out["p_half"] = None  # a flat curve: no threshold to read
    if out["p_half"] is None:
        return out
    out["low"], out["high"] = profile_interval(s, hit, level)
    return out
