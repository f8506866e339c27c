"""Delay laws on runs simulated from a known law, and on delays with no relation to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokscope.dynamics.delay_laws import DelayLaw


def simulated(n=40, noise=0.05, seed=0, effect=True):
    """Runs whose delay is the first passage of |theta|^2 from norm_mem to V* = 50 under decay
    at rate 2 kappa lr wd with kappa = 0.8 (times log-normal noise), or, without effect, a delay
    drawn independently of every feature."""
    rng = np.random.default_rng(seed)
    lr = rng.choice([1e-3, 2e-3, 3e-3], n)
    wd = rng.choice([0.3, 1.0, 3.0], n)
    norm_mem = rng.uniform(200, 2000, n)
    d = np.log(norm_mem / 50.0) / (2 * 0.8 * lr * wd)
    if not effect:
        d = rng.permutation(d)
    d = d * np.exp(rng.normal(0, noise, n))
    t_mem = rng.uniform(100, 500, n)
    norm_grok = norm_mem * np.exp(-2 * 0.8 * lr * wd * d)
    return pd.DataFrame(
        {"t_mem": t_mem, "t_grok": t_mem + d, "lr": lr, "wd": wd, "norm_mem": norm_mem,
         "norm_grok": norm_grok}
    )  # fmt: skip


def test_first_passage_recovers_the_planted_law():
    law = DelayLaw("first_passage").fit(simulated())
    assert law.kappa_ == pytest.approx(0.8, rel=0.05)
    assert law.v_star_ == pytest.approx(50.0, rel=0.3)
    assert law.r2_ > 0.97 and law.mape_loo_ < 0.1
    assert law.rel_err_lo_ < 0 < law.rel_err_hi_


def test_norm_ratio_is_exact_when_decay_alone_sets_the_delay():
    law = DelayLaw("norm_ratio").fit(simulated(noise=0.0))
    assert law.coef_[0] == pytest.approx(1 / (2 * 0.8), rel=1e-9)
    assert law.r2_ == pytest.approx(1.0, abs=1e-12)


def test_no_effect_gives_no_fit_and_a_large_held_out_error():
    table = simulated(effect=False, seed=3)
    fp = DelayLaw("first_passage").fit(table)
    inv = DelayLaw("inverse_rate").fit(table)
    assert inv.r2_ < 0.2
    assert fp.mape_loo_ > 0.4 and inv.mape_loo_ > 0.4


def test_prediction_interval_covers_held_out_runs():
    train, test = simulated(n=60, noise=0.15, seed=4), simulated(n=200, noise=0.15, seed=5)
    law = DelayLaw("first_passage").fit(train)
    pred = law.predict(test)
    true = (test["t_grok"] - test["t_mem"]).to_numpy()
    inside = [
        lo <= t <= hi for p, t in zip(pred, true, strict=True) for lo, hi in [law.interval(p)]
    ]
    assert 0.75 <= np.mean(inside) <= 0.99  # a 90 % interval from leave-one-out errors


def test_interval_stays_ordered_when_held_out_errors_pass_minus_100_percent():
    law = DelayLaw("first_passage").fit(simulated())
    law.rel_err_lo_, law.rel_err_hi_ = -1.2, 0.4
    lo, hi = law.interval(1000.0)
    assert lo == pytest.approx(1000 / 1.4) and hi == float("inf")
    law.rel_err_lo_ = -1.0
    assert law.interval(1000.0)[1] == float("inf")


def test_bad_input_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="unknown delay law"):
        DelayLaw("magic")
    with pytest.raises(ValueError, match="at least 8"):
        DelayLaw("inverse_rate").fit(simulated(n=7))
    bad = simulated()
    bad.loc[3, "norm_mem"] = float("nan")
    with pytest.raises(ValueError, match="needs every run's"):
        DelayLaw("first_passage").fit(bad)
    with pytest.raises(ValueError, match="norm_grok"):
        DelayLaw("norm_ratio").fit(simulated().drop(columns="norm_grok"))
    law = DelayLaw("first_passage").fit(simulated())
    law.save(tmp_path / "law.json")
    again = DelayLaw.load(tmp_path / "law.json")
    np.testing.assert_allclose(again.predict(simulated(seed=9)), law.predict(simulated(seed=9)))
