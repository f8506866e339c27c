"""Early-warning signals of grokking: a fixed alarm rule per signal, chosen on some runs and
tested on others, with its lead time and its false-alarm rate on runs that never grok.

A signal is one column of a run's per-checkpoint table (``analysis.parquet``: restricted loss,
Gini sparsity, circularity, ILDR, weight norm, curvature, LLC, ...) with the direction in which
it moves towards generalization. The rule (:class:`AlarmRule`): after memorization (t >= T_mem,
from the run's own metrics; a run that never memorizes never alarms), take the signal's value
at the first checkpoint at or after T_mem as its baseline and raise the alarm at the first
checkpoint from which the signal's ratio to the baseline (baseline / value for a falling
signal) is at least ``c`` at ``sustain`` consecutive checkpoints; the alarm is dated at the last
checkpoint of that window, when the evidence is complete (dating it at the window's start would
credit the rule with a lead it could not have had). The ratio is defined for positive signals:
non-positive values (an LLC estimate near 0) are left out. The ILDR rule published for modular
arithmetic (fire at 2.5x the baseline) is this rule with c = 2.5.

Choosing c (``fit``): on calibration runs, for every c of a grid, the hit rate (share of grokking
runs whose alarm comes strictly before T_grok) and the false-alarm rate (share of control runs,
which never grok, with any alarm); c maximises hit rate minus false-alarm rate (Youden's J), and
among tied c the middle one (the median of the tied grid values): the largest would give the
latest alarms and so the shortest leads, the smallest the longest; the middle favours neither.
Choosing on the runs it is then scored on would flatter the rule, so :func:`evaluate_rule`
scores a fitted rule on held-out runs only: lead times
T_grok - T_alarm of the held-out grokking runs that were warned (median and a bootstrap
percentile interval; runs not warned are misses, counted, never given a lead of 0), the lead to
the *onset* of generalization T_onset - T_alarm (:func:`onset_time`; T_grok, test accuracy >=
0.99, is its completion, so leads to it overstate how early a signal sees grokking coming) and
how many warned runs were warned before the onset, the hit rate
and the false-alarm rate on held-out controls, each with a Clopper-Pearson 95 % interval
(exact for small counts). A signal that carries no information gives J near 0 on held-out runs:
its hit rate is its false-alarm rate. J is undecided (None) without held-out controls.

Which runs count. A grokking run is warnable only if it memorized before it grokked (T_mem <
T_grok): others have no baseline and are left out, not counted as misses. A control is a run that
never grokked within its budget and memorized (one that never memorizes cannot alarm, and would
lower the false-alarm rate for nothing). Controls are watched to the end of their budget,
grokking runs until T_grok, so a longer control budget makes false alarms likelier: the rate is
conservative for the rule. A run that would grok after its budget counts as a control. By
default only like-for-like controls count (:func:`like_for_like`: the grokking runs'
hyperparameters, other seeds); controls from other regimes measure how well a signal tells the
regimes apart, not whether it sees grokking coming.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest, bootstrap

from grokscope.events import first_sustained

DEFAULT_GRID = tuple(float(c) for c in np.round(np.geomspace(1.05, 20.0, 40), 4))
# the onset of generalization: the test loss held this many decades below its peak after T_mem
ONSET_DECADES = 0.5
ONSET_SUSTAIN = 3


def onset_time(
    times: np.ndarray, test_loss: np.ndarray, t_mem: int | None, decades: float = ONSET_DECADES
) -> int | None:
    """When generalization begins: the first evaluation after the test loss's peak at or after
    T_mem from which the test loss stays at least ``decades`` (0.5) decades below that peak for
    :data:`ONSET_SUSTAIN` evaluations (:func:`grokscope.events.first_sustained`): the test loss
    leaving its memorization plateau. None without T_mem or when it never leaves it (a control).
    An event for scoring warnings against, read with hindsight (the peak is the whole run's)."""
    if t_mem is None:
        return None
    times, loss = np.asarray(times), np.asarray(test_loss, dtype=np.float64)
    after = (times >= t_mem) & np.isfinite(loss) & (loss > 0)
    if not after.any():
        return None
    idx = np.flatnonzero(after)
    peak = idx[np.argmax(loss[idx])]
    rest = idx[idx > peak]
    ok = np.log10(loss[rest]) <= np.log10(loss[peak]) - decades
    i = first_sustained(ok, ONSET_SUSTAIN)
    return None if i is None else int(times[rest[i]])


@dataclass
class SignalRun:
    """One run's signal over its checkpoints: ``times`` (increasing), ``values``, T_mem and T_grok
    (None: never; a control run has T_grok None)."""

    times: np.ndarray
    values: np.ndarray
    t_mem: int | None
    t_grok: int | None
    name: str = ""
    t_onset: int | None = None  # the onset of generalization (:func:`onset_time`)
    settings: str = ""  # the run's hyperparameters, seeds left out (:func:`like_for_like`)


def ratio_to_baseline(run: SignalRun, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, ratio) from the first checkpoint at or after T_mem on: value / baseline for a
    rising signal, baseline / value for a falling one; empty before memorization or when the
    baseline is not a positive number."""
    if run.t_mem is None:
        return np.zeros(0), np.zeros(0)
    keep = (run.times >= run.t_mem) & np.isfinite(run.values) & (run.values > 0)
    t, v = run.times[keep], run.values[keep].astype(float)
    if not len(v) or not v[0] > 0:
        return np.zeros(0), np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = v / v[0] if direction == "up" else v[0] / v
    return t, r


def alarm_time(run: SignalRun, direction: str, c: float, sustain: int = 2) -> int | None:
    """The checkpoint at which the ratio to baseline has been >= ``c`` at ``sustain``
    consecutive checkpoints for the first time (:func:`grokscope.events.first_sustained`, the
    one rule), dated at the window's last checkpoint, when the evidence is complete; None when
    never."""
    t, r = ratio_to_baseline(run, direction)
    i = first_sustained(r >= c, sustain)
    return None if i is None else int(t[i + sustain - 1])


def warnable(runs: list[SignalRun]) -> list[SignalRun]:
    """The grokking runs that memorized before grokking (module docstring)."""
    return [r for r in runs if r.t_grok is not None and r.t_mem is not None and r.t_mem < r.t_grok]


def controls(runs: list[SignalRun]) -> list[SignalRun]:
    """The runs that memorized and never grokked (module docstring)."""
    return [r for r in runs if r.t_grok is None and r.t_mem is not None]


CONTROL_CHOICES = ("like", "all")


def like_for_like(runs: list[SignalRun]) -> list[SignalRun]:
    """The runs with the controls restricted to those trained with the same hyperparameters as
    some grokking run (``settings`` equal; only the seeds differ).

    A control from another regime (weight decay 0, a tenth of the data) differs from a grokking
    run in more than whether it groks: a signal that tells the regimes apart (the weight norm
    falls only under weight decay) scores no false alarm there without seeing grokking coming.
    Like-for-like controls are runs that could have grokked and did not within their budget,
    e.g. seeds of a train fraction near the critical one, where some seeds grok and some do
    not: a false alarm there is a signal firing on a run that looked the same and did not
    grok. Grokking runs are all kept."""
    grokking = {r.settings for r in runs if r.t_grok is not None}
    return [r for r in runs if r.t_grok is not None or r.settings in grokking]


def _rates(runs: list[SignalRun], direction: str, c: float, sustain: int) -> tuple[float, float]:
    grok, ctrl = warnable(runs), controls(runs)
    hits = [
        a is not None and a < r.t_grok for r in grok for a in [alarm_time(r, direction, c, sustain)]
    ]
    alarms = [alarm_time(r, direction, c, sustain) is not None for r in ctrl]
    hit = float(np.mean(hits)) if hits else math.nan
    false = float(np.mean(alarms)) if alarms else 0.0
    return hit, false


@dataclass
class AlarmRule:
    """The alarm rule of one signal (module docstring). ``direction``: ``up`` or ``down``;
    ``grid``: the candidate ratios c; ``sustain``: consecutive checkpoints. Fitted attributes:
    ``c_``, ``hit_rate_``, ``false_alarm_rate_`` and ``j_`` on the calibration runs."""

    signal: str
    direction: str
    grid: tuple[float, ...] = DEFAULT_GRID
    sustain: int = 2
    c_: float | None = field(default=None, init=False)
    hit_rate_: float | None = field(default=None, init=False)
    false_alarm_rate_: float | None = field(default=None, init=False)
    j_: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', got {self.direction!r}")

    def fit(self, runs: list[SignalRun]) -> AlarmRule:
        """Choose c on calibration ``runs`` (at least one warnable grokking run)."""
        if not warnable(runs):
            raise ValueError("fitting an alarm rule needs at least one run that groks")
        scores = []
        for c in sorted(self.grid):
            hit, false = _rates(runs, self.direction, c, self.sustain)
            scores.append((hit - false, c, hit, false))
        top = max(s[0] for s in scores)
        tied = [s for s in scores if s[0] == top]
        self.j_, self.c_, self.hit_rate_, self.false_alarm_rate_ = tied[(len(tied) - 1) // 2]
        return self

    def predict(self, run: SignalRun) -> int | None:
        """The alarm time of ``run`` under the fitted c (None: no alarm)."""
        if self.c_ is None:
            raise ValueError("the rule is not fitted")
        return alarm_time(run, self.direction, self.c_, self.sustain)


def _proportion(k: int, n: int) -> dict:
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "lo": None, "hi": None}
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "lo": float(ci.low), "hi": float(ci.high)}


def evaluate_rule(
    rule: AlarmRule, runs: list[SignalRun], n_boot: int = 2000, seed: int = 0
) -> dict:
    """Score a fitted rule on held-out ``runs`` (module docstring): lead times of the warned
    grokking runs (median, bootstrap 95 % interval), hit rate and false-alarm rate with exact
    intervals, and J."""
    grok, ctrl = warnable(runs), controls(runs)
    leads, onset_leads, misses = [], [], 0
    for r in grok:
        a = rule.predict(r)
        if a is not None and a < r.t_grok:
            leads.append(r.t_grok - a)
            if r.t_onset is not None:
                onset_leads.append(r.t_onset - a)  # negative: warned after the onset
        else:
            misses += 1
    false = sum(rule.predict(r) is not None for r in ctrl)
    out = {
        "signal": rule.signal,
        "c": rule.c_,
        "leads": leads,
        "misses": misses,
        "hit": _proportion(len(leads), len(grok)),
        "false_alarm": _proportion(false, len(ctrl)),
        "lead_median": float(np.median(leads)) if leads else None,
        "lead_lo": None,
        "lead_hi": None,
        "onset_leads": onset_leads,
        "before_onset": sum(x > 0 for x in onset_leads),
        "onset_lead_median": float(np.median(onset_leads)) if onset_leads else None,
    }
    if len(leads) >= 2:
        ci = bootstrap(
            (np.asarray(leads, dtype=float),), np.median, n_resamples=n_boot, method="percentile",
            random_state=np.random.default_rng(seed),
        ).confidence_interval  # fmt: skip
        out["lead_lo"], out["lead_hi"] = float(ci.low), float(ci.high)
    hit, fa = out["hit"]["rate"], out["false_alarm"]["rate"]
    out["j"] = None if hit is None or fa is None else hit - fa
    return out


def stratified_folds(runs: list[SignalRun], n_folds: int) -> list[list[int]]:
    """Held-out index sets (into ``runs``) of ``n_folds`` folds over the warnable grokking runs
    and the controls, stratified so that each fold gets its share of both
    (``sklearn.model_selection.StratifiedKFold`` without shuffling: the folds depend on the
    runs' order only, so the ranking is reproducible). Runs that are neither are in no fold.
    With fewer runs of a class than folds some folds get none of it (scikit-learn warns; the
    warning is silenced, and a fold without a grokking run to fit on is skipped by
    :func:`cross_validate`); with fewer runs than folds every run is its own fold."""
    from sklearn.model_selection import StratifiedKFold

    grok_ids, ctrl_ids = {id(r) for r in warnable(runs)}, {id(r) for r in controls(runs)}
    idx = [i for i, r in enumerate(runs) if id(r) in grok_ids or id(r) in ctrl_ids]
    labels = np.array([id(runs[i]) in grok_ids for i in idx], dtype=int)
    if len(idx) < n_folds:
        return [[i] for i in idx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = StratifiedKFold(n_splits=n_folds).split(np.zeros(len(idx)), labels)
        return [[idx[j] for j in held] for _, held in splits]


def cross_validate(rule: AlarmRule, runs: list[SignalRun], folds: list[list[int]]) -> list[dict]:
    """Fit on all folds but one, score on that one, for every fold (indices into ``runs``); a
    fold whose calibration part has no grokking run is skipped."""
    out = []
    for held in folds:
        calib = [r for i, r in enumerate(runs) if i not in held]
        test = [runs[i] for i in held]
        if not warnable(calib):
            continue
        fitted = AlarmRule(rule.signal, rule.direction, rule.grid, rule.sustain).fit(calib)
        out.append(evaluate_rule(fitted, test))
    return out
