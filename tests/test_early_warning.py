"""Alarm rules on simulated signals with a known change point, and on signals with no effect."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.dynamics.early_warning import (
    AlarmRule,
    SignalRun,
    alarm_time,
    cross_validate,
    evaluate_rule,
)

TIMES = np.arange(0, 3000, 50)


def step_run(rng, jump: int | None, t_grok: int | None, t_mem: int = 100, up: bool = True):
    """Signal 1 (+2 % noise) that jumps to 3 at ``jump`` (or falls to 1/3)."""
    v = 1 + rng.normal(0, 0.02, len(TIMES))
    if jump is not None:
        v[TIMES >= jump] *= 3.0 if up else 1 / 3
    return SignalRun(TIMES, v, t_mem, t_grok)


def test_a_planted_change_point_gives_its_lead_and_no_false_alarm():
    rng = np.random.default_rng(0)
    grok = [step_run(rng, 1000 + 50 * i, 1600 + 50 * i) for i in range(6)]  # lead 600
    ctrl = [step_run(rng, None, None) for _ in range(6)]
    calib, test = grok[::2] + ctrl[::2], grok[1::2] + ctrl[1::2]
    rule = AlarmRule("s", "up").fit(calib)
    assert 1.2 < rule.c_ < 3.0 and rule.j_ == 1.0
    ev = evaluate_rule(rule, test)
    # the jump is seen at its first checkpoint; with 2 checkpoints to confirm, the alarm
    # comes one 50-epoch interval later: lead 600 - 50
    assert ev["leads"] == [550, 550, 550]
    assert ev["hit"]["rate"] == 1.0 and ev["false_alarm"]["rate"] == 0.0
    # three held-out controls without an alarm still allow a false-alarm rate up to 71 %
    assert ev["false_alarm"]["hi"] == pytest.approx(1 - 0.025 ** (1 / 3), abs=1e-6)


def test_a_falling_signal_and_the_published_ildr_rule():
    rng = np.random.default_rng(1)
    run = step_run(rng, 800, 1500, up=False)
    assert alarm_time(run, "down", 2.5) == 850
    assert alarm_time(run, "up", 2.5) is None
    run_up = step_run(rng, 800, 1500)
    assert alarm_time(run_up, "up", 2.5) == 850  # 2.5x the baseline, confirmed once
    assert alarm_time(run_up, "up", 2.5, sustain=1) == 800
    never = SignalRun(TIMES, run_up.values, None, None)
    assert alarm_time(never, "up", 2.5) is None  # no memorization, no baseline, no alarm


def test_a_signal_with_no_effect_scores_near_chance_held_out():
    """The jump happens at a uniform time in [0, 2000) whether or not the run groks; grokking
    runs grok at 1000 and controls are watched over the same 1000 steps: the alarm is as likely
    in controls as before grokking, so held-out J is near 0."""
    rng = np.random.default_rng(2)
    runs = []
    for i in range(120):
        run = step_run(rng, int(rng.integers(0, 40)) * 50, 1000 if i % 2 == 0 else None)
        if run.t_grok is None:  # watch controls only as long as grokking runs before T_grok
            keep = run.times < 1000
            run = SignalRun(run.times[keep], run.values[keep], run.t_mem, None)
        runs.append(run)
    folds = [list(range(k, 120, 5)) for k in range(5)]
    out = cross_validate(AlarmRule("noise", "up"), runs, folds)
    assert len(out) == 5
    j = np.mean([o["j"] for o in out])
    assert abs(j) < 0.2, j


def test_fitting_needs_a_grokking_run():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="at least one run that groks"):
        AlarmRule("s", "up").fit([step_run(rng, None, None)])
    with pytest.raises(ValueError, match="direction"):
        AlarmRule("s", "sideways")
    with pytest.raises(ValueError, match="sustain"):
        alarm_time(step_run(rng, 800, 1500), "up", 2.0, sustain=0)


def test_unwarnable_runs_and_silent_controls_are_left_out():
    rng = np.random.default_rng(4)
    grok = [step_run(rng, 1000, 1600) for _ in range(2)]
    never_memorized = SignalRun(TIMES, step_run(rng, None, None).values, None, None)
    instant = step_run(rng, None, 100, t_mem=100)  # groks at memorization: nothing to warn
    rule = AlarmRule("s", "up").fit(grok + [step_run(rng, None, None)])
    ev = evaluate_rule(rule, grok + [never_memorized, instant])
    assert ev["hit"]["n"] == 2 and ev["false_alarm"]["n"] == 0
    assert ev["j"] is None  # no held-out control: undecided


def test_onset_is_the_test_loss_leaving_its_plateau():
    """A planted fall: the test loss sits at 2 after memorization and falls two decades at
    epoch 1,000; the onset is the first evaluation held 0.5 decade below the peak. No fall, no
    onset; a fall that has not held 3 evaluations by the end is censored."""
    from grokscope.dynamics.early_warning import onset_time

    t = np.arange(0, 2000, 50)
    loss = np.where(t < 1000, 2.0, 0.02)
    loss[t < 100] = 1.0  # before memorization
    assert onset_time(t, loss, 100) == 1000
    assert onset_time(t, np.full(len(t), 2.0), 100) is None
    late = np.where(t < 1900, 2.0, 0.02)
    assert onset_time(t, late, 100) is None
    assert onset_time(t, loss, None) is None


def test_ties_take_the_middle_threshold_not_the_largest():
    """A signal that separates at every c of a range: J is tied over it, and the chosen c is the
    middle of the tied values, so leads are neither the shortest nor the longest possible."""
    from grokscope.dynamics.early_warning import DEFAULT_GRID, AlarmRule, SignalRun

    t = np.arange(0, 3000, 50)
    grok = [SignalRun(t, np.where(t < 1000, 1.0, 100.0), 100, 2000, f"g{i}") for i in range(4)]
    ctrl = [SignalRun(t, np.ones(len(t)), 100, None, f"c{i}") for i in range(4)]
    rule = AlarmRule("s", "up").fit(grok + ctrl)
    tied = [c for c in sorted(DEFAULT_GRID) if c <= 100.0]
    assert rule.j_ == 1.0 and rule.c_ == tied[(len(tied) - 1) // 2]


def test_like_for_like_keeps_every_grokking_run_and_only_controls_trained_alike():
    from grokscope.dynamics.early_warning import SignalRun, like_for_like

    t = np.arange(0, 100, 10)
    v = np.ones(len(t))
    runs = [
        SignalRun(t, v, 10, 50, "g-a", settings="a"),
        SignalRun(t, v, 10, 60, "g-b", settings="b"),
        SignalRun(t, v, 10, None, "c-a", settings="a"),
        SignalRun(t, v, 10, None, "c-z", settings="z"),  # another regime: left out
    ]
    assert [r.name for r in like_for_like(runs)] == ["g-a", "g-b", "c-a"]
    assert like_for_like(runs[2:]) == []  # no grokking run: no control is like-for-like


def test_stratified_folds_partition_the_runs_with_both_classes_in_every_fold():
    from grokscope.dynamics.early_warning import SignalRun, stratified_folds

    t = np.arange(0, 100, 10)
    v = np.ones(len(t))
    grok = [SignalRun(t, v, 10, 50, f"g{i}") for i in range(5)]
    ctrl = [SignalRun(t, v, 10, None, f"c{i}") for i in range(7)]
    never = [SignalRun(t, v, None, None, "n")]  # never memorized: in no fold
    runs = grok + never + ctrl
    folds = stratified_folds(runs, 3)
    held = sorted(i for f in folds for i in f)
    assert held == sorted(set(range(len(runs))) - {5})
    for f in folds:
        assert any(runs[i].t_grok is not None for i in f)
        assert any(runs[i].t_grok is None for i in f)
    assert stratified_folds(grok[:1], 2) == [[0]]
