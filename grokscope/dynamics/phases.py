"""Events in the measure curves: t_mem, t_grok and the three phases of Nanda et al. (2023).

Nanda, Chan, Lieberum, Smith & Steinhardt (ICLR 2023), section 5.2, split grokking on
(a + b) mod 113 into *memorization* (0 - 1.4k epochs: train and excluded loss fall together,
test and restricted loss stay high), *circuit formation* (1.4k - 9.4k: excluded loss rises,
restricted loss falls, test loss stays high) and *cleanup* (9.4k - 14k: test loss falls
sharply, weights shrink). They drew the boundaries by eye; :func:`find_phases` draws them from
the curves with a rule that works for any task, and answers None instead of guessing. Cleanup
ends, in the paper's words, when test loss, the Gini sparsity of W_E and W_L and the weight norm
have all levelled off; that is the default rule here (:func:`level_off_row`).

Pure functions over a pandas table with one row per checkpoint (``epoch`` ascending,
``train_loss``, ``test_loss``; optional ``excluded_loss``, ``restricted_loss``,
``weight_norm_sq``, ``gini_embed``, ``gini_unembed``). No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from grokscope.events import event_epoch  # noqa: F401

PHASE_KEYS = ("memorization_end", "circuit_formation_end", "cleanup_end")
CLEANUP_RULES = ("level_off", "test_loss_fall")
# the curves whose levelling off ends cleanup (Nanda et al. 2023): name -> taken as log10
LEVEL_OFF_CURVES = {
    "test_loss": True,
    "gini_embed": False,
    "gini_unembed": False,
    "weight_norm_sq": True,
}


@dataclass(frozen=True)
class PhaseParams:
    """Knobs of :func:`find_phases`.

    ``smooth_window``: rows in the centred running median applied to every log10 curve
    (odd; 1 = none) — it removes isolated spikes without moving edges.
    ``slope_halfwidth``: the rate of a curve at a row is the least-squares slope over this many
    rows on either side (2: a five-row fit).
    ``fast_fraction``: a row of a fall is *fast* when its rate (decades per epoch) is at least
    this share of the steepest rate of that fall.
    ``min_drop_decades``: a loss must fall this many decades (below its start for the train
    loss, below its peak for the test loss) before there is a fall to speak of.
    ``min_rise_decades``: the excluded loss must rise this much after its minimum for that
    minimum to mark the end of memorization.
    ``cleanup_rule``: ``"level_off"`` (default, the paper's description: cleanup ends when the
    test loss, the Gini of W_E and of W_L and the weight norm have all levelled off, see
    :func:`level_off_row`) or ``"test_loss_fall"`` (cleanup ends where the test loss stops
    falling fast: the last row of the fast part of its fall).
    ``level_fraction``: a curve has levelled off from the row on which its rate stays at or
    below this share of its steepest rate during cleanup for the rest of the run.
    ``level_window``: rows in the forward least-squares fit that gives that rate (9: the slope
    noise is 2.4 times below that of a 5-row fit, and a forward window does not delay a kink).
    """

    smooth_window: int = 3
    slope_halfwidth: int = 2
    fast_fraction: float = 0.3
    min_drop_decades: float = 1.0
    min_rise_decades: float = 0.3
    cleanup_rule: str = "level_off"
    level_fraction: float = 0.1
    level_window: int = 9


def smoothed_log10(values: np.ndarray, window: int) -> np.ndarray:
    """log10 of a positive curve (floored at 1e-300), then a centred running median."""
    h = np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-300))
    if window <= 1:
        return h
    return pd.Series(h).rolling(window, center=True, min_periods=1).median().to_numpy()


def fall_rates(epochs: np.ndarray, h: np.ndarray, halfwidth: int) -> np.ndarray:
    """Rate of fall of a log curve at every row, in decades per epoch (positive = falling):
    minus the least-squares slope of h against epoch over rows i - halfwidth .. i + halfwidth
    (truncated at the ends). A local fit, not a difference of neighbours, so that noise of a
    few hundredths of a decade per checkpoint does not split a fall in two."""
    t = np.asarray(epochs, dtype=np.float64)
    n = len(h)
    rates = np.zeros(n)
    for i in range(n):
        lo, hi = max(0, i - halfwidth), min(n, i + halfwidth + 1)
        x = t[lo:hi] - t[lo:hi].mean()
        denom = float(np.sum(x * x))
        rates[i] = -float(np.sum(x * (h[lo:hi] - h[lo:hi].mean()))) / denom if denom > 0 else 0.0
    return rates


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over ``window`` rows (odd; 1 = none), as in :func:`smoothed_log10`
    but on the values themselves (for curves that are not losses, such as a Gini coefficient)."""
    x = np.asarray(values, dtype=np.float64)
    if window <= 1:
        return x
    return pd.Series(x).rolling(window, center=True, min_periods=1).median().to_numpy()


def forward_rates(epochs: np.ndarray, h: np.ndarray, width: int) -> np.ndarray:
    """Least-squares slope of h against epoch over rows i .. i + width - 1, at every row i (units
    of h per epoch; NaN where fewer than ``width`` rows remain). A window that looks forward only
    sees what happens *after* row i, so at a sharp kink from a steep to a flat stretch the first
    flat row is already slow: the kink is located without the lag of a centred window."""
    t = np.asarray(epochs, dtype=np.float64)
    n = len(h)
    rates = np.full(n, np.nan)
    for i in range(n - width + 1):
        x = t[i : i + width] - t[i : i + width].mean()
        denom = float(np.sum(x * x))
        seg = h[i : i + width]
        rates[i] = float(np.sum(x * (seg - seg.mean()))) / denom if denom > 0 else 0.0
    return rates


def level_off_row(
    epochs: np.ndarray,
    h: np.ndarray,
    start: int,
    params: PhaseParams,
    scale_start: int | None = None,
) -> int | None:
    """The row from which the curve ``h`` has levelled off, searching from row ``start`` on.

    Definition: let r(i) = |:func:`forward_rates` of h at row i| over ``level_window`` rows
    and r_max its largest value over the rows >= ``scale_start`` (default ``start``; find_phases
    passes the test loss's peak, so that a change made during circuit formation sets the scale
    too, while the dense first epochs, whose per-epoch rates are huge, do not). The curve has
    levelled off at
    the first row i >= ``start`` such that r(j) <= ``level_fraction`` * r_max for every row
    j >= i that has a full window — its rate stays below the threshold for the rest of the run.
    None when the last full-window row is still above the threshold (the curve is still
    changing when the data stop) or no full window starts at or after ``start``.

    Why ``level_fraction`` = 0.1: relative to the curve's own steepest rate it needs no units
    (decades of loss, Gini points) and no time scale (the same rule serves a 2k- and a 40k-epoch
    run). For the two textbook shapes of a transition it marks the usual settling band of a step
    response: a logistic step c(t) has rate c(1 - c) / tau, at most 1 / (4 tau), so it falls to
    10 % of its peak when c(1 - c) = 0.025, i.e. 97.4 % of the change done; an exponential
    approach 1 - exp(-t / tau) falls to 10 % of its initial rate with 90 % of the change done.
    So "levelled off" = within the 2.6-10 % band of its final value, measured from local slopes
    that do not depend on where the run happens to stop. A smaller fraction makes the rule wait
    for slower drifts and is more easily held up by checkpoint noise.

    Noise: with ``level_window`` = 9 rows the slope's noise is sigma / (7.7 x row spacing) for a
    jitter of sigma per checkpoint. On Nanda-like curves (test loss falling 6 decades over 40
    checkpoints, Gini rising 0.65 over 100; tests/test_phases.py) with a jitter of 0.02 decades
    on the losses and 0.001 on the Gini, cleanup_end lands within 300 epochs of the planted
    value in 199 of 200 simulated runs (0.025 decades: 189 of 200). The jitter of a real test
    loss after grokking is smaller (about 0.005 decades between evaluations on the quick preset;
    a Gini moves by about 1e-4). A single spike is removed by the running median. The last
    ``level_window`` - 1 rows have no full window: a curve must be seen level for that long
    before it counts as level.
    """
    all_rates = np.abs(forward_rates(epochs, h, params.level_window))
    scale = all_rates[start if scale_start is None else min(start, scale_start) :]
    rates = all_rates[start:]
    full = np.flatnonzero(~np.isnan(rates))
    if full.size == 0:
        return None
    r_max = float(np.nanmax(scale))
    above = full[rates[full] > params.level_fraction * r_max]
    if above.size == 0:
        return start
    if above[-1] == full[-1]:
        return None
    return start + int(above[-1]) + 1


def fast_fall(epochs: np.ndarray, h: np.ndarray, start: int, params: PhaseParams) -> dict | None:
    """The fast part of the first big fall of the log curve ``h`` after row ``start``.

    1. anchor: the first row after ``start`` at least ``min_drop_decades`` below ``h[start]``;
       none -> no fall -> None.
    2. stretch: the maximal run of rows (from ``start`` on) falling at a positive rate
       (:func:`fall_rates`) through the anchor.
    3. fast part: the run of rows whose rate is >= ``fast_fraction`` x (the steepest rate in
       the stretch) through the steepest row.

    Returns row indices {'start', 'end', 'steepest'} (first fast row, last fast row, steepest
    row) and 'rate' (decades per epoch); 'end' is None when the fast part reaches the last row
    (still falling fast when the data stop).
    """
    n = len(h)
    below = np.nonzero(h[start + 1 :] <= h[start] - params.min_drop_decades)[0]
    if below.size == 0:
        return None
    anchor = start + 1 + int(below[0])
    rates = fall_rates(epochs, h, params.slope_halfwidth)
    lo = anchor
    while lo > start and rates[lo - 1] > 0:
        lo -= 1
    hi = anchor
    while hi + 1 < n and rates[hi + 1] > 0:
        hi += 1
    steepest = lo + int(np.argmax(rates[lo : hi + 1]))
    r_max = float(rates[steepest])
    cut = params.fast_fraction * r_max
    a = steepest
    while a > start and rates[a - 1] >= cut:
        a -= 1
    b = steepest
    while b + 1 < n and rates[b + 1] >= cut:
        b += 1
    return {"start": a, "end": None if b >= n - 1 else b, "steepest": steepest, "rate": r_max}


def _first_fall_epoch(t: np.ndarray, h: np.ndarray, i0: int, decades: float) -> int | None:
    """First epoch at or after row i0 where h is ``decades`` below h[i0]."""
    hit = np.nonzero(h[i0:] <= h[i0] - decades)[0]
    return None if hit.size == 0 else int(t[i0 + hit[0]])


def find_phases(table: pd.DataFrame, params: PhaseParams | None = None) -> dict:
    """Memorization / circuit formation / cleanup boundaries (epochs, or None = not found).

    Algorithm. Every curve is taken as log10, smoothed by a running median over
    ``smooth_window`` rows; its *rate* at a row is minus the local least-squares slope over
    2 * ``slope_halfwidth`` + 1 rows, in decades per epoch (:func:`fall_rates`). A *fall* of a
    curve after a row is found by :func:`fast_fall`: the first point ``min_drop_decades``
    below that row anchors it, and its *fast part* is the run of rows around the steepest one
    falling at >= ``fast_fraction`` of the steepest rate.

    * **circuit_formation_end** = the first row of the fast part of the test loss's fall after
      its peak — "test loss starts to fall fast". None when the test loss never falls
      ``min_drop_decades`` below its peak (no grokking).
    * **cleanup_end**, ``cleanup_rule="level_off"`` (default, following Nanda et al.'s
      description: cleanup is over when test loss, Gini sparsity and weight norm level off) =
      the latest of the rows at which
      each of log10 test loss, ``gini_embed``, ``gini_unembed`` and log10 ``weight_norm_sq``
      (each smoothed by the running median) has levelled off after circuit_formation_end
      (:func:`level_off_row`: its rate stays at or below ``level_fraction`` of its steepest
      rate during cleanup for the rest of the run). Curves the table lacks (no Gini outside
      modular tasks) are left out and a note says so. None when one of them is still changing
      at the last checkpoints, or when there is no test-loss fall.
      ``cleanup_rule="test_loss_fall"``: the last row of the fast part of the test loss's fall
      — after it the test loss falls at less than ``fast_fraction`` of its steepest rate. None
      when it is still falling fast at the last row, or when there is no test-loss fall.
    * **memorization_end** = with an ``excluded_loss`` column: the epoch of the minimum of the
      excluded loss (up to circuit_formation_end when that exists), provided the excluded loss
      later rises by ``min_rise_decades`` — "excluded loss stops tracking the train loss".
      Otherwise (other tasks, or no such rise): the last row of the fast part of the train
      loss's fall below its first value — "train loss has fallen". None when the train loss
      never falls ``min_drop_decades`` or is still falling fast at the last row.
    * The boundaries are made ordered: if the test loss starts falling fast before
      memorization has ended (no delayed generalization), circuit_formation_end is set to
      memorization_end and a note says so.

    Also returns ``details`` (the epochs and rates the rule used, which rule found
    memorization_end, and the circuit-formation diagnostics of the paper: how many decades the
    excluded loss rose and the restricted and test losses fell between memorization_end and
    circuit_formation_end (raw values at those two rows), the epochs at which the smoothed
    restricted and test losses first fell 10x below their values at memorization_end, and the
    epoch after circuit_formation_end at which the weight norm stops falling fast), both
    cleanup ends (``cleanup_test_loss_fall_epoch``, and ``cleanup_level_off_epochs`` per curve)
    ``test_min_epoch`` and ``test_late_rise_decades`` (how far the test loss climbs after its
    minimum; the level-off rule reads its running minimum, :func:`_level_off_epochs`) and
    ``notes``. Raises ValueError for an unknown ``cleanup_rule``.
    """
    params = params or PhaseParams()
    if params.cleanup_rule not in CLEANUP_RULES:
        raise ValueError(
            f"cleanup_rule must be one of {', '.join(CLEANUP_RULES)}, got {params.cleanup_rule!r}"
        )
    df = table.sort_values("epoch").reset_index(drop=True)
    out: dict = {k: None for k in PHASE_KEYS}
    out["details"], out["notes"] = {}, []
    details, notes = out["details"], out["notes"]
    if len(df) < 3:
        notes.append(f"only {len(df)} analysed checkpoints: too few to find phases")
        return out
    t = df["epoch"].to_numpy(dtype=np.int64)
    w = params.smooth_window

    def curve(col: str) -> np.ndarray | None:
        if col not in df or df[col].isna().any():
            return None
        return smoothed_log10(df[col].to_numpy(dtype=np.float64), w)

    h_train, h_test = curve("train_loss"), curve("test_loss")
    h_ex, h_re = curve("excluded_loss"), curve("restricted_loss")
    raw = {
        col: smoothed_log10(df[col].to_numpy(dtype=np.float64), 1)
        for col in ("excluded_loss", "restricted_loss", "test_loss")
        if col in df
    }

    # Test loss: the first big fall after its peak.
    circuit, cleanup = None, None
    if h_test is not None:
        peak = int(np.argmax(h_test))
        details["test_peak_epoch"] = int(t[peak])
        fall = fast_fall(t, h_test, peak, params)
        if fall is None:
            notes.append(
                f"test loss never falls {params.min_drop_decades} decades below its peak: "
                "no end of circuit formation or of cleanup"
            )
        else:
            circuit = int(t[fall["start"]])
            cleanup = None if fall["end"] is None else int(t[fall["end"]])
            details["test_steepest_epoch"] = int(t[fall["steepest"]])
            details["test_max_fall_rate"] = fall["rate"]
            if cleanup is None and params.cleanup_rule == "test_loss_fall":
                notes.append(
                    "test loss is still falling fast at the last checkpoint: no end of cleanup yet"
                )

    # Memorization: excluded-loss minimum, else the train loss's fast fall.
    memo = None
    if h_ex is not None:
        upto = np.nonzero(t <= circuit)[0][-1] if circuit is not None else len(t) - 1
        i_min = int(np.argmin(h_ex[: upto + 1]))
        # the running median flattens a V-shaped minimum over two rows: take the raw minimum
        # among the smoothed minimum and its neighbours
        near = np.arange(max(i_min - 1, 0), min(i_min + 2, upto + 1))
        i_min = int(near[np.argmin(raw["excluded_loss"][near])])
        details["excluded_min_epoch"] = int(t[i_min])
        if np.max(h_ex[i_min:]) - h_ex[i_min] >= params.min_rise_decades:
            memo = int(t[i_min])
            details["memorization_rule"] = "excluded_min"
    if memo is None and h_train is not None:
        fall = fast_fall(t, h_train, 0, params)
        if fall is not None and fall["end"] is not None:
            memo = int(t[fall["end"]])
            details["memorization_rule"] = "train_fall"
        else:
            notes.append("train loss has no completed fast fall: no end of memorization")
    if memo is not None and circuit is not None and circuit < memo:
        notes.append(
            "test loss starts falling fast before memorization ends (no delayed "
            "generalization): the end of circuit formation is set to the end of memorization"
        )
        circuit = memo
        if cleanup is not None and cleanup < circuit:
            cleanup = circuit
    if circuit is not None:
        details["cleanup_test_loss_fall_epoch"] = cleanup
        i_c, i_peak = int(np.nonzero(t == circuit)[0][0]), int(np.argmax(h_test))
        level = _level_off_epochs(df, t, i_c, i_peak, params)
        details["cleanup_level_off_epochs"] = level
        _late_rise(t, h_test, i_c, details, notes)
        if params.cleanup_rule == "level_off":
            cleanup = _level_off_cleanup(level, notes)
    details["cleanup_rule"] = params.cleanup_rule
    out.update(memorization_end=memo, circuit_formation_end=circuit, cleanup_end=cleanup)

    # Diagnostics of the paper's picture of circuit formation.
    if memo is not None and circuit is not None:
        i_m, i_c = int(np.nonzero(t == memo)[0][0]), int(np.nonzero(t == circuit)[0][0])
        if h_ex is not None:
            ex = raw["excluded_loss"]
            details["excluded_rise_decades"] = float(ex[i_c] - ex[i_m])
        if h_re is not None:
            re = raw["restricted_loss"]
            details["restricted_fall_decades"] = float(re[i_m] - re[i_c])
            details["restricted_10x_epoch"] = _first_fall_epoch(t, h_re, i_m, 1.0)
        if h_test is not None:
            te = raw["test_loss"]
            details["test_fall_decades"] = float(te[i_m] - te[i_c])
            details["test_10x_epoch"] = _first_fall_epoch(t, h_test, i_m, 1.0)
    if circuit is not None and "weight_norm_sq" in df:
        h_w = smoothed_log10(df["weight_norm_sq"].to_numpy(dtype=np.float64), w)
        i_c = int(np.nonzero(t == circuit)[0][0])
        rates = fall_rates(t, h_w, params.slope_halfwidth)[i_c:]
        if rates.size and rates.max() > 0:
            k = int(np.argmax(rates))
            slow = np.nonzero(rates[k:] < params.fast_fraction * rates[k])[0]
            details["weight_norm_plateau_epoch"] = (
                int(t[i_c + k + slow[0] - 1]) if slow.size else None
            )
    return out


def _level_off_epochs(
    df: pd.DataFrame, t: np.ndarray, start: int, scale_start: int, params: PhaseParams
) -> dict[str, int | None]:
    """Per curve of ``LEVEL_OFF_CURVES`` present in ``df`` (without nulls): the epoch at which it
    levels off after row ``start`` (:func:`level_off_row`, its rate scale taken from row
    ``scale_start`` on), or None when it is still changing.

    The test loss is read through its running minimum from row ``start`` on: cleanup is the
    end of its fall, and a later rise is another event, not a fall still under way. A
    nanda2023 run on an AMD EPYC machine reached test loss 1.5e-5 at 14k epochs and climbed
    back to 2e-3 by 20-25k while the training loss sat at 1e-7; read raw, the level-off rule
    waited for the climb and put the cleanup end at 21.2k (paper: about 14k). The climb is
    reported, not hidden (``test_late_rise_decades`` in :func:`find_phases`' details)."""
    epochs: dict[str, int | None] = {}
    for col, log in LEVEL_OFF_CURVES.items():
        if col not in df or df[col].isna().any():
            continue
        values = df[col].to_numpy(dtype=np.float64)
        h = (
            smoothed_log10(values, params.smooth_window)
            if log
            else running_median(values, params.smooth_window)
        )
        if col == "test_loss":
            h = h.copy()
            h[start:] = np.minimum.accumulate(h[start:])
        row = level_off_row(t, h, start, params, scale_start)
        epochs[col] = None if row is None else int(t[row])
    return epochs


# a test-loss climb after its minimum of at least this many decades gets a note
LATE_RISE_DECADES = 0.5


def _late_rise(
    t: np.ndarray, h_test: np.ndarray, start: int, details: dict, notes: list[str]
) -> None:
    """How far the smoothed log10 test loss climbs after its minimum past row ``start``
    (``test_late_rise_decades``, ``test_min_epoch``), with a note from ``LATE_RISE_DECADES``."""
    i_min = start + int(np.argmin(h_test[start:]))
    rise = float(np.max(h_test[i_min:]) - h_test[i_min])
    details["test_min_epoch"] = int(t[i_min])
    details["test_late_rise_decades"] = rise
    if rise >= LATE_RISE_DECADES:
        notes.append(
            f"test loss climbs {rise:.1f} decades after its minimum at epoch {int(t[i_min])}: "
            "a late rise, not part of cleanup (the level-off rule reads the test loss's "
            "running minimum)"
        )


# the curves of the level-off rule in words, for notes a reader sees in the report and the CLI
CURVE_WORDS = {
    "test_loss": "the test loss",
    "gini_embed": "the Gini sparsity of the embedding",
    "gini_unembed": "the Gini sparsity of the unembedding",
    "weight_norm_sq": "the weight norm",
}


def _words(curves) -> str:
    words = [CURVE_WORDS.get(c, c) for c in curves]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def _level_off_cleanup(level: dict[str, int | None], notes: list[str]) -> int | None:
    """cleanup_end of the level-off rule: the latest level-off epoch, None if any curve is still
    changing; notes name the curves that were missing or still changing."""
    missing = [c for c in LEVEL_OFF_CURVES if c not in level]
    if missing:
        notes.append(
            f"the end of cleanup is read from {_words(level) or 'no curve'} only: "
            f"{_words(missing)} {'is' if len(missing) == 1 else 'are'} not measured for this run"
        )
    moving = [c for c, e in level.items() if e is None]
    if moving:
        notes.append(
            f"{_words(moving)} {'is' if len(moving) == 1 else 'are'} still changing at the last "
            "checkpoints (faster than the "
            "level-off threshold): no end of cleanup yet"
        )
        return None
    return max(level.values()) if level else None
