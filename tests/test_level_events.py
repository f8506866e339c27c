"""Level transition events on simulated per-level curves with known transition times."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokscope.dynamics.levels import (
    first_sustained_time,
    in_order,
    level_events,
    level_progress,
    positional_progress,
    progress_measure,
)

STEPS = np.arange(0, 10_000, 100)


def curves(centres: dict[int, dict[str, float | None]], width: float = 150.0, seed: int = 0):
    """Metrics with per-level losses moving from ceiling 2.0 to floor 1.0 along a logistic
    centred at ``centres[k][split]`` (None: never moves), plus small noise."""
    rng = np.random.default_rng(seed)
    data = {"step": STEPS}
    for k, by_split in centres.items():
        for split, c in by_split.items():
            f = np.zeros(len(STEPS)) if c is None else 1 / (1 + np.exp(-(STEPS - c) / width))
            data[f"loss_l{k}_{split}"] = 2.0 - f + rng.normal(0, 0.01, len(STEPS))
            data[f"ceil_l{k}_{split}"] = np.full(len(STEPS), 2.0)
            data[f"floor_l{k}_{split}"] = np.full(len(STEPS), 1.0)
    return pd.DataFrame(data)


def test_planted_transitions_are_found_in_order_with_their_gaps():
    m = curves(
        {
            1: {"train": 800, "test": 1000},
            2: {"train": 2000, "test": 4000},
            3: {"train": 5000, "test": 7000},
        }
    )
    ev = level_events(m, 3)
    for k, (tr, te) in {1: (800, 1000), 2: (2000, 4000), 3: (5000, 7000)}.items():
        lev = ev["levels"][str(k)]
        assert abs(lev["test"]["t_star"] - te) <= 100
        assert abs(lev["train"]["t_star"] - tr) <= 100
        assert abs(lev["gap"] - (te - tr)) <= 200
        # logistic of width 150: 10 % -> 90 % takes 2 * 150 * ln 9 = 659 steps
        assert abs(lev["test"]["rise"] - 659) <= 200
    assert ev["in_order"] is True


def test_no_effect_gives_no_transition_and_no_verdict():
    m = curves({1: {"test": None}, 2: {"test": None}, 3: {"test": None}})
    ev = level_events(m, 3)
    assert all(ev["levels"][str(k)]["test"]["t_star"] is None for k in (1, 2, 3))
    assert ev["in_order"] is None


def test_a_single_spike_is_not_a_transition():
    m = curves({1: {"test": None}})
    m.loc[40, "loss_l1_test"] = 1.0  # one evaluation at the floor
    assert level_events(m, 1)["levels"]["1"]["test"]["t_star"] is None


def test_out_of_order_and_censored_levels_break_the_order():
    m = curves({1: {"test": 3000}, 2: {"test": 1000}, 3: {"test": 6000}})
    assert level_events(m, 3)["in_order"] is False
    m = curves({1: {"test": 1000}, 2: {"test": None}, 3: {"test": 6000}})
    assert level_events(m, 3)["in_order"] is False
    m = curves({1: {"test": 1000}, 2: {"test": 3000}, 3: {"test": None}})
    assert level_events(m, 3)["in_order"] is True


def test_a_level_without_signal_is_not_measurable():
    m = curves({1: {"test": 1000}})
    m["floor_l1_test"] = 2.0
    ev = level_events(m, 1)["levels"]["1"]["test"]
    assert ev["measurable"] is False and ev["t_star"] is None
    assert np.isnan(level_progress(m, 1)).all()


def test_sustain_rule_and_order_helper():
    t = np.arange(6)
    assert first_sustained_time(t, np.array([0, 1, 0, 1, 1, 1], bool), 3) == 3
    late = np.array([0, 0, 0, 0, 1, 1], bool)
    assert first_sustained_time(t, late, 3) is None  # too late to tell
    assert first_sustained_time(t, np.array([0, 0, 0, 1, 1, 1], bool), 3) == 3
    assert first_sustained_time(t, np.zeros(6, bool), 3) is None
    assert in_order([100, 200, None]) is True
    assert in_order([100, 100]) is None  # simultaneous within the evaluation interval
    assert in_order([200, 100, None]) is False
    assert in_order([None, 100]) is False
    # one level reached orders nothing: undecided, not "in order" (a run that reached only
    # level 1 is no evidence that the levels come in order)
    assert in_order([200, None, None]) is None
    assert in_order([200]) is None
    assert in_order([None, None, None]) is None  # no effect: nothing reached


def test_events_read_the_level_coefficient_when_the_run_recorded_it():
    # positional progress says level 2 crossed at 1000 (carried by level 3, say); the
    # coefficient, which is level-specific, puts level 2 at 5000: the events follow the
    # coefficient, and say so
    m = curves({1: {"test": 500}, 2: {"test": 1000}, 3: {"test": 8000}})
    for k, c in {1: 500, 2: 5000, 3: 8000}.items():
        m[f"coef_l{k}_test"] = 1 / (1 + np.exp(-(STEPS - c) / 150))
    ev = level_events(m, 3)
    assert ev["measure"] == "coefficient"
    assert abs(ev["levels"]["2"]["test"]["t_star"] - 5000) <= 100
    assert ev["levels"]["2"]["test"]["final_positional"] == pytest.approx(1.0, abs=0.05)
    assert ev["in_order"] is True
    # a coefficient that leads the level below it breaks the order, whatever f_k says
    m["coef_l2_test"] = 1 / (1 + np.exp(-(STEPS - 300) / 150))
    assert level_events(m, 3)["in_order"] is False


def test_runs_without_coefficients_fall_back_to_the_positional_progress():
    m = curves({1: {"test": 1000}})
    assert progress_measure(m) == "positional"
    np.testing.assert_array_equal(level_progress(m, 1), positional_progress(m, 1))


def test_coefficients_count_only_where_the_fit_explains_half_the_likelihood():
    """An untrained model's coefficients are fitted to noise (R^2 about 0.2): a level whose
    coefficient sits above 1/2 from step 0 while the fit is poor is not reached there, only once
    the fit holds; the reported final coefficient is the fitted value either way."""
    n = 20
    steps = np.arange(n) * 100
    fit = np.where(steps < 800, 0.2, 0.9)
    c2 = np.where(steps < 800, 0.6, np.where(steps < 1200, 0.2, 0.8))
    m = pd.DataFrame(
        {
            "step": steps,
            "coef_l1_test": np.linspace(0, 1, n),
            "coef_l2_test": c2,
            "coef_fit_test": fit,
        }
    )
    ev = level_events(m, 2)
    assert ev["levels"]["2"]["test"]["t_star"] == 1200
    assert ev["levels"]["2"]["test"]["measurable"] is True
    assert ev["levels"]["2"]["test"]["final_progress"] == pytest.approx(0.8)
    # without the fit column (older runs) every evaluation counts
    old = level_events(m.drop(columns=["coef_fit_test"]), 2)
    assert old["levels"]["2"]["test"]["t_star"] == 0
    np.testing.assert_array_equal(np.isnan(level_progress(m, 2)), fit < 0.5)
