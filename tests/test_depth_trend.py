"""The inverted-U statistics of the depth experiment (grokscope.dynamics.depth_trend) on
simulated experiments with a known answer: exact on noise-free data, nominal coverage with no
effect at all, power against a planted inverted U of the size the design names."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.dynamics.depth_trend import (
    ends_minus_middle,
    mean_interval,
    quadratic_term,
    share_interval,
)

DEPTHS = np.repeat([2, 4, 6, 8], 8)  # the design: 4 depths x 8 seeds
SD = 0.29  # the seed spread seen at 4 layers (docs/structural.md)


def test_noise_free_data_give_the_exact_answer():
    means = {2: 0.3, 4: 0.7, 6: 0.6, 8: 0.2}
    y = np.array([means[d] for d in DEPTHS])
    c = ends_minus_middle(DEPTHS, y)
    assert c["contrast"] == pytest.approx((0.3 + 0.2) - (0.7 + 0.6)) and c["se"] == 0
    # a parabola is fitted exactly, whatever the centring
    y = 0.1 + 0.05 * DEPTHS - 0.02 * DEPTHS**2
    q = quadratic_term(DEPTHS, y)
    assert q["b2"] == pytest.approx(-0.02, abs=1e-12) and q["se"] < 1e-12


def _simulate(bump: float, rng: np.random.Generator, sd: float | np.ndarray = SD) -> np.ndarray:
    """One experiment: the middle depths raised by ``bump`` over a base of 0.4."""
    base = np.where((DEPTHS == 4) | (DEPTHS == 6), 0.4 + bump, 0.4)
    return base + rng.normal(0, 1, len(DEPTHS)) * sd


def test_with_no_effect_the_intervals_miss_zero_at_the_nominal_rate():
    """2,000 simulated experiments with no depth effect, unequal variances per depth (bimodal
    seeds at some depths spread more): each 95 % interval excludes 0 in 5 % of them (a binomial
    count, 3.9-6.1 % with 99 % probability at n = 2,000)."""
    rng = np.random.default_rng(0)
    sd = np.select([DEPTHS == 2, DEPTHS == 4, DEPTHS == 6], [0.1, 0.35, 0.25], 0.15)
    miss_c = miss_q = 0
    trials = 2000
    for _ in range(trials):
        y = _simulate(0.0, rng, sd)
        c = ends_minus_middle(DEPTHS, y)
        miss_c += not (c["low"] <= 0 <= c["high"])
        q = quadratic_term(DEPTHS, _simulate(0.0, rng))  # its equal-variance assumption holds
        miss_q += not (q["low"] <= 0 <= q["high"])
    assert 0.039 <= miss_c / trials <= 0.061, miss_c / trials
    assert 0.039 <= miss_q / trials <= 0.061, miss_q / trials


def test_a_planted_inverted_u_of_the_designed_size_is_found_most_of_the_time():
    """The design: middle depths 0.28 above the ends gives the contrast 80 % power at 8 seeds."""
    rng = np.random.default_rng(1)
    found = sum(ends_minus_middle(DEPTHS, _simulate(0.28, rng))["high"] < 0 for _ in range(1000))
    assert 0.72 <= found / 1000 <= 0.88, found / 1000
    # and the sign: an upright U is never called an inverted one
    assert all(ends_minus_middle(DEPTHS, _simulate(-0.3, rng))["high"] > -0.05 for _ in range(50))


def test_per_depth_intervals():
    mean, lo, hi = mean_interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and lo < 0.4 < hi
    assert np.isnan(mean_interval([0.5])[1])
    share, lo, hi = share_interval(0, 8)
    assert share == 0 and lo == 0 and hi == pytest.approx(0.369, abs=1e-3)  # exact CP bound
    with pytest.raises(ValueError, match="fewer than two runs"):
        ends_minus_middle([2, 2, 4, 6, 6], [0.1, 0.2, 0.3, 0.4, 0.5])


def test_the_sweep_summary_tests_the_runs_it_has():
    """The structural sweep summary's depth test reads the finished runs' last-5k values, and
    says why it cannot test while a depth lacks two finished runs."""
    import pandas as pd

    from grokscope.kinds.structural import trend_text
    from grokscope.kinds.structural.sweep_summary import depth_trend

    rng = np.random.default_rng(2)
    y = _simulate(0.3, rng)
    runs = pd.DataFrame({"model.n_layers": DEPTHS, "state": "done", "gen_acc_last5k": y})
    runs.loc[0, "state"] = "interrupted"  # not finished: left out
    got = depth_trend(runs)
    want = ends_minus_middle(DEPTHS[1:], y[1:])
    assert got["contrast"] == pytest.approx(want)
    assert "ends - middle" in trend_text(got) and "quadratic term" in trend_text(got)
    runs.loc[runs["model.n_layers"] == 8, "state"] = "running"
    assert "8 layers: 0" in depth_trend(runs) and "not tested" in trend_text(depth_trend(runs))
