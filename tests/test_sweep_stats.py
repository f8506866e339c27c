"""Across-run statistics on synthetic tables: Kaplan-Meier medians of censored grokking times
(known by hand), Greenwood variance, the log-log band, and Liu et al. (2022) phase classes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokscope.dynamics.sweep_stats import (
    cell_summary,
    first_epoch_above,
    km_curve,
    km_median,
    majority_phase,
    phase_class,
    run_events,
)

Z = 1.959963984540054


def test_km_without_censoring_is_the_empirical_curve():
    curve = km_curve([10, 20, 30, 40, 50], [True] * 5)
    np.testing.assert_allclose(curve["survival"], [0.8, 0.6, 0.4, 0.2, 0.0])
    assert list(curve["at_risk"]) == [5, 4, 3, 2, 1]
    # Greenwood at t = 30: S^2 * (1/(5*4) + 1/(4*3) + 1/(3*2)) = 0.16 * 0.3
    assert curve["variance"].iloc[2] == pytest.approx(0.048)
    # log-log band at t = 30 by hand: s = sqrt(0.3) / |ln 0.4|
    s = math.sqrt(0.3) / abs(math.log(0.4))
    assert curve["lower"].iloc[2] == pytest.approx(0.4 ** math.exp(Z * s))
    assert curve["upper"].iloc[2] == pytest.approx(0.4 ** math.exp(-Z * s))
    assert curve["lower"].iloc[2] < 0.4 < curve["upper"].iloc[2]
    median, lo, hi = km_median([10, 20, 30, 40, 50], [True] * 5)
    assert median == 30
    # lower edge at t = 10: 0.8^exp(Z * sqrt(0.05) / |ln 0.8|) = 0.20 <= 0.5; upper edge first
    # reaches 0.5 at t = 50 (S = 0 there; at t = 40 it is 0.58)
    assert lo == 10 and hi == 50


def test_km_median_with_censoring_by_hand():
    # events at 5 and 15, censored at 10 and 20: S(5) = 3/4; at 15 two are at risk: S = 3/8
    curve = km_curve([5, 10, 15, 20], [True, False, True, False])
    np.testing.assert_allclose(curve["survival"], [0.75, 0.375])
    assert list(curve["at_risk"]) == [4, 2]
    assert km_median([5, 10, 15, 20], [True, False, True, False])[0] == 15
    # ignoring the censored runs would give the median of {5, 15} = 5..15; counting them as
    # events at their censoring time would give 10: both differ from the censored answer


def test_median_is_not_the_budget_when_most_runs_never_grok():
    # two of five grokked; three were still going at the budget (1000): the median is unknown
    times, events = [100, 200, 1000, 1000, 1000], [True, True, False, False, False]
    median, lo, hi = km_median(times, events)
    assert median is None and hi is None
    assert lo == 100  # the band's lower edge does reach 0.5
    # censoring tied with an event: the censored run is still at risk at that time
    curve = km_curve([10, 10, 20], [True, False, True])
    np.testing.assert_allclose(curve["survival"], [2 / 3, 0.0])


def test_km_all_censored_and_ties():
    assert km_median([50, 60], [False, False]) == (None, None, None)
    curve = km_curve([7, 7, 7, 9], [True, True, True, True])
    np.testing.assert_allclose(curve["survival"], [0.25, 0.0])
    assert km_median([7, 7, 7, 9], [True] * 4)[0] == 7


def test_phase_classes_of_liu_et_al():
    assert phase_class(None, None, 30) == "confusion"
    assert phase_class(None, 100, 30) == "confusion"  # train never above 90 %
    assert phase_class(100, None, 30) == "memorization"
    assert phase_class(100, 130, 30) == "comprehension"  # lag exactly the threshold
    assert phase_class(100, 131, 30) == "grokking"
    assert phase_class(100, 50, 30) == "comprehension"  # validation first


def test_run_events_thresholds_are_strict_and_lag_scales_with_budget():
    m = pd.DataFrame(
        {
            "epoch": [0, 10, 20, 30, 40, 50],
            "train_acc": [0.0, 0.9, 0.95, 1.0, 1.0, 1.0],
            "test_acc": [0.0, 0.1, 0.2, 0.5, 0.91, 0.995],
        }
    )
    ev = run_events(m, budget=1000)
    assert ev["t_train90_epoch"] == 20  # 0.9 is not above 90 %
    assert ev["t_val90_epoch"] == 40
    assert ev["t_grok_epoch"] == 50
    assert ev["lag_epochs"] == 10.0
    assert ev["phase"] == "grokking"  # lag 20 > 10
    assert run_events(m, budget=3000)["phase"] == "comprehension"  # lag 20 <= 30
    m2 = m.assign(test_acc=0.3)
    assert run_events(m2, budget=1000)["phase"] == "memorization"
    assert run_events(m2, budget=1000)["t_grok_epoch"] is None
    assert run_events(m2.assign(train_acc=0.5), budget=1000)["phase"] == "confusion"
    assert first_epoch_above([1, 2], [0.9, 0.9], 0.9) is None


def test_majority_phase_ties_follow_the_phase_order():
    assert majority_phase(["grokking", "memorization", "memorization"]) == "memorization"
    assert majority_phase(["memorization", "grokking"]) == "grokking"
    assert majority_phase([None, None]) is None


def test_cell_summary_counts_and_censored_medians():
    runs = pd.DataFrame(
        {
            "cell": ["a"] * 4 + ["b"] * 3,
            "train_fraction": [0.3] * 4 + [0.1] * 3,
            "state": ["done", "done", "done", "diverged", "done", "done", "failed"],
            "t_grok_epoch": [5, None, 15, None, None, 400, None],
            "epochs_done": [5, 10, 15, 20, 1000, 400, 300],
            "phase": [
                "grokking",
                "memorization",
                "grokking",
                "confusion",
                "memorization",
                "grokking",
                None,
            ],
        }
    )
    s = cell_summary(runs, ["train_fraction"]).set_index("cell")
    assert s.loc["a", "n_runs"] == 4 and s.loc["a", "n_grokked"] == 2
    assert s.loc["a", "share_grokked"] == 0.5
    assert s.loc["a", "t_grok_median"] == 15  # the censored-by-hand example above
    assert s.loc["a", "phase"] == "grokking"
    assert s.loc["a", "n_grokking"] == 2 and s.loc["a", "n_diverged"] == 1
    assert s.loc["b", "train_fraction"] == 0.1
    # one of three grokked, yet the median is known: the failed run left the risk set at 300,
    # so at 400 two runs are at risk and S drops to 1/2
    assert s.loc["b", "t_grok_median"] == 400 and math.isnan(s.loc["b", "t_grok_hi"])
    assert s.loc["b", "n_unfinished"] == 1
    assert s.loc["b", "phase"] == "grokking"  # tie 1:1 goes to the earlier class
