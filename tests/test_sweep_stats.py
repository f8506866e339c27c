"""Across-run statistics on synthetic tables with known answers: Kaplan-Meier medians of censored
grokking times (by hand, and simulated), diverged runs, the midpoint rule, and Liu et al. (2022)
phase classes that do not depend on the budget."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grokscope.config import apply_overrides
from grokscope.dynamics.sweep_stats import (
    cell_summary,
    crossing_time,
    km_curve,
    km_entry,
    km_inputs,
    km_median,
    lag_limit,
    majority_phase,
    phase_class,
    run_events,
)
from grokscope.kinds.algorithmic.sweep_summary import summarize
from grokscope.store import rundir
from tests.conftest import run_cli, tiny_config

Z = 1.959963984540054


def _runs(states, t_grok, epochs_done, budget=1000, phase="grokking", cell="a"):
    n = len(states)
    return pd.DataFrame(
        {
            "cell": [cell] * n,
            "train_fraction": [0.3] * n,
            "state": states,
            "t_grok_epoch": pd.array(t_grok, dtype="Int64"),
            "epochs_done": epochs_done,
            "epochs_budget": [budget] * n,
            "phase": [phase] * n,
        }
    )


# --- Kaplan-Meier: hand-worked examples ---------------------------------------------------------


def test_km_without_censoring_by_hand():
    curve = km_curve([10, 20, 30, 40, 50], [True] * 5)
    np.testing.assert_allclose(curve["survival"], [0.8, 0.6, 0.4, 0.2, 0.0])
    # log-log band at t = 30 by hand: Greenwood sum 1/(5*4) + 1/(4*3) + 1/(3*2) = 0.3,
    # s = sqrt(0.3) / |ln 0.4|, band = [0.4^exp(z s), 0.4^exp(-z s)]
    s = math.sqrt(0.3) / abs(math.log(0.4))
    assert curve["lower"].iloc[2] == pytest.approx(0.4 ** math.exp(Z * s))
    assert curve["upper"].iloc[2] == pytest.approx(0.4 ** math.exp(-Z * s))
    # the log-log band is undefined at S = 0 (as in R's survfit)
    assert math.isnan(curve["lower"].iloc[4]) and math.isnan(curve["upper"].iloc[4])
    median, lo, hi = km_median([10, 20, 30, 40, 50], [True] * 5)
    assert median == 30
    # lower edge at t = 10: 0.8^exp(Z sqrt(0.05) / |ln 0.8|) = 0.20 <= 0.5; the upper edge is
    # 0.58 at t = 40 and undefined at 50: the interval is [10, unbounded)
    assert lo == 10 and hi is None


def test_km_median_with_censoring_by_hand():
    # events at 5 and 15, censored at 10 and 20: S(5) = 3/4; at 15 two are at risk: S = 3/8.
    # Dropping the censored runs would give a median of 10 (of {5, 15}); counting them as events
    # at their censoring time would give 10 + 15 / 2 = 12.5: both differ from the answer
    curve = km_curve([5, 10, 15, 20], [True, False, True, False])
    np.testing.assert_allclose(curve["survival"], [0.75, 0.75, 0.375, 0.375])
    assert km_median([5, 10, 15, 20], [True, False, True, False])[0] == 15
    # a censoring tied with an event: the censored run is still at risk at that time
    np.testing.assert_allclose(km_curve([10, 10, 20], [True, False, True])["survival"], [2 / 3, 0])


def test_median_is_not_the_budget_when_most_runs_never_grok():
    # two of five grokked; three were still going at the budget (1000): the median is unknown
    median, lo, hi = km_median([100, 200, 1000, 1000, 1000], [True, True, False, False, False])
    assert median is None and hi is None
    assert lo == 100  # the band's lower edge does reach 0.5
    assert km_median([50, 60], [False, False]) == (None, None, None)


def test_flat_half_gives_the_midpoint():
    # S = 0.5 exactly on [20, 30): the median is 25 (R quantile.survfit), not 20
    assert km_median([10, 20, 30, 40], [True] * 4)[0] == 25
    # with censoring: events at 10, 20, 30 of six runs (S = 3/6), one censored at 35, then
    # events at 50 and 60 (two at risk): S = 0.5 on [30, 50), median (30 + 50) / 2 = 40
    times, events = [10, 20, 30, 35, 50, 60], [True, True, True, False, True, True]
    np.testing.assert_allclose(
        km_curve(times, events)["survival"], [5 / 6, 4 / 6, 0.5, 0.5, 0.25, 0]
    )
    assert km_median(times, events)[0] == 40
    # a flat at 0.5 that lasts to the end of the curve gives its first time, not a midpoint with
    # the last follow-up (that would be the budget)
    assert km_median([100, 200, 1000, 1000], [True, True, False, False])[0] == 200
    # the same rule on any step curve (the band edges): NaN points are skipped
    assert crossing_time([1, 2, 3, 4], [0.9, 0.5, 0.5, 0.1]) == 3  # flat on [2, 4)
    assert crossing_time([1, 2, 3], [0.9, 0.6, np.nan]) is None
    assert crossing_time([1, 2, 3], [0.9, 0.4, 0.1]) == 2


def test_without_censoring_the_median_is_the_sample_median():
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 4, 5, 10, 11, 30):
        for _ in range(20):
            t = rng.integers(1, 50, size=n) * 10  # ties are common
            assert km_median(t, np.ones(n, bool))[0] == pytest.approx(np.median(t)), t


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        km_curve([1, 2], [True])
    with pytest.raises(ValueError, match="non-empty"):
        km_curve([], [])


# --- diverged runs -------------------------------------------------------------------------------


def test_four_run_example_diverged_runs_stay_at_risk_to_the_budget():
    runs = _runs(
        ["done", "done", "diverged", "diverged"], [100, 200, None, None], [100, 200, 10, 20]
    )
    s = cell_summary(runs, ["train_fraction"]).iloc[0]
    assert s["t_grok_median"] == 200 and s["t_grok_lo"] == 100 and math.isnan(s["t_grok_hi"])
    assert s["n_grokked"] == 2 and s["n_diverged"] == 2
    # censoring the diverged runs where they diverged (as if they might still grok) leaves two
    # runs at risk at 100: S = 0.5 on [100, 200), median 150 (100 by the first-time rule)
    assert km_median([100, 200, 10, 20], [True, True, False, False])[0] == 150
    assert km_entry("diverged", None, 10, 1000) == ("diverged", 1000.0)
    assert km_entry("diverged", 80, 90, 1000) == ("grokked", 80.0)  # grokked, then diverged
    assert km_entry("done", None, 1000, 1000) == ("censored", 1000.0)
    assert km_entry("running", pd.NA, 300, 1000) == ("censored", 300.0)  # may still grok
    with pytest.raises(ValueError, match="budget"):
        km_entry("diverged", None, 10, None)


def test_one_budget_gives_the_share_grokked_by_t():
    # no run stopped before the budget: 1 - S(t) is the share of all runs grokked by t (the
    # empirical cumulative incidence of grokking), diverged runs counted in the denominator
    grok = [50, 120, 300, None, None, None, None, None]
    states = ["done"] * 3 + ["diverged"] * 3 + ["done"] * 2
    runs = _runs(states, grok, [150, 220, 400, 5, 30, 70, 1000, 1000])
    km = km_inputs(runs)
    curve = km_curve(km["km_time_epoch"], km["km_entry"] == "grokked")
    for t, s in zip(curve["time"], curve["survival"], strict=True):
        share = sum(g is not None and g <= t for g in grok) / len(grok)
        assert 1 - s == pytest.approx(share)


def _simulated_cell(rng, n, rate, diverge, budget):
    """n runs: a share ``diverge`` diverges at a uniform time in the first 200 epochs (early, as
    a too-high learning rate does) and never groks;
    the others grok at an exponential time with ``rate`` unless it is past the budget. Times are
    rounded up to the evaluation grid (every 10 epochs), as the trainer records them."""
    t_grok = np.ceil(rng.exponential(1 / rate, size=n) / 10) * 10
    dies = rng.random(n) < diverge
    t_div = np.ceil(rng.uniform(0, 200, size=n) / 10) * 10
    grokked = ~dies & (t_grok <= budget)
    states = np.where(dies, "diverged", "done")
    done = np.where(dies, t_div, np.where(grokked, t_grok, budget))
    return _runs(
        list(states), [g if k else None for g, k in zip(t_grok, grokked, strict=True)], done, budget
    )


def test_simulated_diverged_runs_against_the_known_incidence_median():
    # 20 % diverge and never grok, the rest grok at Exp(1/1000): P(grokked by t) =
    # 0.8 (1 - exp(-t / 1000)) = 0.5 at t = 1000 ln(1.6 / 0.6) = 980.8. Censoring diverged runs
    # where they diverged instead estimates exp(-cumulated cause-specific hazard) = 0.5, at
    # t = 716.0 (numerical integration of 0.8 f(t) / (0.8 S(t) + 0.2 (1 - t / 200)_+)): too early.
    rng = np.random.default_rng(0)
    truth = 1000 * math.log(1.6 / 0.6)
    ours, naive = [], []
    for _ in range(200):
        runs = _simulated_cell(rng, 100, 1e-3, 0.2, 5000)
        ours.append(cell_summary(runs, ["train_fraction"]).iloc[0]["t_grok_median"])
        times = np.where(
            runs["t_grok_epoch"].notna(), runs["t_grok_epoch"].fillna(0), runs["epochs_done"]
        )
        naive.append(km_median(times.astype(float), runs["t_grok_epoch"].notna().to_numpy())[0])
    assert abs(np.mean(ours) / truth - 1) < 0.03
    assert abs(np.mean(naive) / 716.0 - 1) < 0.03
    # most runs (70 %) diverge: fewer than half can ever grok, the median is never reached
    for _ in range(50):
        runs = _simulated_cell(rng, 100, 1e-3, 0.7, 5000)
        assert math.isnan(cell_summary(runs, ["train_fraction"]).iloc[0]["t_grok_median"])


def test_simulated_random_censoring_median_and_coverage():
    # Exp(1/1000) grokking times, independent Uniform(0, 3000) censoring (runs still training),
    # nothing diverges: the KM median stays at the true 693.1 and the 95 % interval covers it.
    rng = np.random.default_rng(1)
    truth = 1000 * math.log(2)
    medians, covered = [], 0
    reps = 300
    for _ in range(reps):
        t = rng.exponential(1000, size=60)
        c = rng.uniform(0, 3000, size=60)
        median, lo, hi = km_median(np.minimum(t, c), t <= c)
        medians.append(median)
        covered += lo <= truth and (hi is None or truth <= hi)
    assert abs(np.mean(medians) / truth - 1) < 0.03
    assert 0.9 <= covered / reps <= 0.99  # nominal 0.95
    # no effect of censoring at all: censoring far beyond every time changes nothing
    t = rng.exponential(1000, size=41)
    assert km_median(t, np.ones(41, bool))[0] == pytest.approx(np.median(t))


# --- phase classes -------------------------------------------------------------------------------


def test_phase_classes_of_liu_et_al():
    assert phase_class(None, None, 30) == "confusion"
    assert phase_class(None, 100, 30) == "confusion"  # train never above 90 %
    assert phase_class(100, None, 30) == "memorization"
    assert phase_class(100, 130, 30) == "comprehension"  # lag exactly the limit
    assert phase_class(100, 131, 30) == "grokking"
    assert phase_class(100, 50, 30) == "comprehension"  # validation first


def test_ratio_rule_limits():
    assert lag_limit(20, budget=4000) == 180  # t_val > 10 t_train  <=>  lag > 9 t_train
    assert lag_limit(20, budget=4000, time_ratio=3) == 40
    assert lag_limit(None, budget=4000) is None
    assert lag_limit(20, budget=4000, lag_fraction=0.01) == 40
    assert phase_class(20, 200, lag_limit(20, 4000)) == "comprehension"  # ratio exactly 10
    assert phase_class(20, 210, lag_limit(20, 4000)) == "grokking"
    assert phase_class(0, 10, lag_limit(0, 4000)) == "grokking"
    with pytest.raises(ValueError, match="time ratio"):
        lag_limit(20, 4000, time_ratio=0.5)
    with pytest.raises(ValueError, match="lag fraction"):
        lag_limit(20, 4000, lag_fraction=-1)


METRICS = pd.DataFrame(
    {
        "epoch": [0, 10, 20, 30, 40, 50, 60],
        "train_acc": [0.0, 0.9, 0.95, 1.0, 1.0, 1.0, 1.0],
        "test_acc": [0.0, 0.1, 0.2, 0.5, 0.7, 0.91, 0.995],
    }
)


def test_the_same_run_gets_the_same_class_under_any_budget():
    for budget in (100, 1000, 40000):
        ev = run_events(METRICS, budget=budget)
        assert ev["t_train90_epoch"] == 20  # 0.9 is not above 90 %
        assert ev["t_val90_epoch"] == 50 and ev["t_grok_epoch"] == 60
        assert ev["lag_epochs"] == 30 and ev["lag_limit_epochs"] == 180
        assert ev["phase"] == "comprehension"  # 50 < 10 x 20
        assert run_events(METRICS, budget, time_ratio=2)["phase"] == "grokking"  # 50 > 2 x 20
    # the budget-scaled rule classes the same run by how long it was trained
    assert run_events(METRICS, budget=1000, lag_fraction=0.01)["phase"] == "grokking"  # 30 > 10
    assert run_events(METRICS, budget=4000, lag_fraction=0.01)["phase"] == "comprehension"
    m2 = METRICS.assign(test_acc=0.3)
    assert run_events(m2, budget=1000)["phase"] == "memorization"
    assert run_events(m2, budget=1000)["t_grok_epoch"] is None
    assert run_events(m2, budget=1000)["lag_epochs"] is None
    assert run_events(m2.assign(train_acc=0.5), budget=1000)["phase"] == "confusion"


def test_majority_phase_ties_follow_the_phase_order():
    assert majority_phase(["grokking", "memorization", "memorization"]) == "memorization"
    assert majority_phase(["memorization", "grokking"]) == "grokking"
    assert majority_phase([None, None]) is None


def test_cell_summary_counts_and_unfinished_runs():
    runs = pd.concat(
        [
            _runs(["done", "done", "done"], [5, None, 15], [5, 1000, 15], phase="grokking"),
            _runs(["done", "done", "failed"], [None, 400, None], [1000, 400, 300], cell="b"),
        ]
    )
    runs["phase"] = ["grokking", "memorization", "grokking", "memorization", "grokking", None]
    s = cell_summary(runs, ["train_fraction"]).set_index("cell")
    assert s.loc["a", "n_runs"] == 3 and s.loc["a", "n_grokked"] == 2
    assert s.loc["a", "t_grok_median"] == 15 and s.loc["a", "phase"] == "grokking"
    # one of three grokked, yet the median is known: the failed run left the risk set at 300
    # (it might still grok), so at 400 two runs are at risk and S drops to exactly 1/2, which
    # lasts to the end of the curve
    assert s.loc["b", "t_grok_median"] == 400 and math.isnan(s.loc["b", "t_grok_hi"])
    assert s.loc["b", "n_unfinished"] == 1 and s.loc["b", "n_diverged"] == 0
    assert s.loc["b", "phase"] == "grokking"  # tie 1:1 goes to the earlier class
    assert s.loc["b", "n_grokking"] == 1 and s.loc["b", "n_memorization"] == 1


# --- the sweep directory and the command line --------------------------------------------------


def _fake_sweep(root):
    """A two-cell sweep on disk: cell c0 as the four-run example (budget 1000)."""
    cells = [{"cell": "c0", "values": {"task.train_fraction": 0.3}}]
    runs = []
    rows = {
        "s0": ("done", [0.95, 0.95], [0.5, 0.995], 100),
        "s1": ("done", [0.95, 0.95], [0.5, 0.995], 200),
        "s2": ("diverged", [0.2, 0.2], [0.0, 0.0], 10),
        "s3": ("diverged", [0.2, 0.2], [0.0, 0.0], 20),
    }
    for seed, (name, (state, train, test, t)) in enumerate(rows.items()):
        run = root / "runs" / f"c0-{name}"
        run.mkdir(parents=True)
        rundir.write_config(run, apply_overrides(tiny_config(), ["train.epochs=1000"]))
        rundir.write_status(run, state=state, epochs_done=t)
        epochs = [t // 2, t]
        rundir.write_metrics(
            run,
            [
                {"epoch": e, "train_acc": a, "test_acc": b}
                for e, a, b in zip(epochs, train, test, strict=True)
            ],
        )
        runs.append({"run": f"c0-{name}", "cell": "c0", "seed": seed})
    spec = {"name": "fake", "grid": {"task.train_fraction": [0.3]}}
    rundir.write_json(root / "sweep.json", {"spec": spec, "cells": cells, "runs": runs})


def test_summary_tables_say_how_each_run_entered(tmp_path):
    _fake_sweep(tmp_path)
    runs, cells, figures = summarize(tmp_path, figures=False)
    assert figures == []
    r = runs.set_index("run")
    assert list(r["km_entry"]) == ["grokked", "grokked", "diverged", "diverged"]
    assert list(r["km_time_epoch"]) == [100, 200, 1000, 1000]
    c = cells.iloc[0]
    assert c["t_grok_median"] == 200 and math.isnan(c["t_grok_hi"])
    assert c["phase_rule"] == "t_val90 > 10 x t_train90"
    on_disk = rundir.read_table(tmp_path / "runs.parquet")
    assert list(on_disk["km_entry"]) == list(runs["km_entry"])
    assert summarize(tmp_path, lag_fraction=0.01, figures=False)[1].iloc[0]["phase_rule"] == (
        "lag > 0.01 x budget"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-ratio", "3", "--lag-fraction", "0.01"], "not both"),
        (["--time-ratio", "0.5"], "--time-ratio must be >= 1"),
        (["--lag-fraction", "-0.1"], "--lag-fraction must be >= 0"),
    ],
)
def test_cli_refuses_bad_phase_rules(tmp_path, monkeypatch, capsys, args, message):
    code, _, err = run_cli(monkeypatch, capsys, "sweep-summary", str(tmp_path), *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_prints_the_rule_and_the_cells(tmp_path, monkeypatch, capsys):
    _fake_sweep(tmp_path)
    code, out, _ = run_cli(monkeypatch, capsys, "sweep-summary", str(tmp_path), "--no-figures")
    assert code in (0, None)
    assert "t_val90 > 10 x t_train90" in out and "2/4" in out and "100..inf" in out
