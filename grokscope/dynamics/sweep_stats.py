"""Across-run statistics of a sweep: censored grokking times and phase classes (tables only).

Grokking time is censored data: a run that has not reached the test-accuracy
threshold by the end of its training has not grokked *yet*, so its time is only known to exceed
the epochs it trained. Taking the budget as its time, or dropping it, biases the median. Per grid
cell we therefore estimate the survival function S(t) = P(T_grok > t) by Kaplan-Meier (Kaplan &
Meier 1958) with ``scipy.stats.ecdf`` on ``scipy.stats.CensoredData`` (a run censored at t is
still at risk at t), its pointwise band by the log-log ("exponential Greenwood") formula
(Kalbfleisch & Prentice 2002; ``confidence_interval(method="log-log")``).

How each run enters the estimator (:func:`km_entry`, the column ``km_entry`` of the runs table):

- ``grokked``: an event at t_grok;
- ``censored``: not grokked by ``epochs_done``, the epochs it trained (a run still training, or
  stopped at its budget), censored there: it might still grok later;
- ``diverged``: a diverged run can never grok. Censoring it where it diverged would assume that
  it could still grok like the runs still at risk (independent censoring), which pulls the
  median earlier. It is kept at risk to the end of its budget and censored there. This is the
  competing-risks treatment of Fine & Gray (1999): a run lost to the competing event stays in the
  risk set until its potential censoring time, known here (the budget: "censoring-complete
  data"). With one budget and no run stopped before it, the product then telescopes to
  S(t) = 1 - (runs grokked by t) / (all runs): 1 - S is exactly the empirical cumulative incidence
  of grokking (Aalen-Johansen; Putter, Fiocco & Geskus 2007), the share of runs that grokked by
  t, and Greenwood's variance is its binomial variance S (1 - S) / n.

The median is where S first reaches 0.5; where S = 0.5 exactly on [t_i, t_i+1) between two
grokking times it is the midpoint (t_i + t_i+1) / 2, the rule of R survival's
``quantile.survfit`` (Therneau), which makes it the ordinary sample median of uncensored data.
Where S stays at 0.5 to the end of the curve, R takes the midpoint with the last follow-up time;
that time is our budget (and a diverged run stays ungrokked beyond it), so the midpoint would move
with the budget: we give t_i, the first time S reaches 0.5. The median's interval is read off the
band by the same rule (Brookmeyer & Crowley 1982, as ``survfit``): lower end where the band's
lower edge reaches 0.5, upper end where its upper edge does, None (unbounded) if it never does.
The log-log band is undefined where S is 0 or 1 (scipy returns NaN, R's ``survfit`` NA); such a
point never counts as reaching 0.5, as in R. So with three seeds that all grokked the upper end is
unbounded: no interval of the data covers the median with 95 % (the range [x_(1), x_(3)] covers it
with probability 1 - 2 / 2^3 = 75 %).

Phase classes follow Liu, Kitouni, Nolte, Michaud, Tegmark & Williams (2022), "Towards
understanding grokking: an effective theory of representation learning": with t_train and t_val
the first evaluated epochs at which train and validation accuracy exceed 90 % within the budget,

- comprehension: both exceed 90 % and validation does not lag training by more than the limit;
- grokking: both exceed 90 % and validation lags training by more than the limit;
- memorization: training exceeds 90 %, validation never does;
- confusion: training never exceeds 90 %.

Liu et al. use a lag limit of 10^3 steps within a 10^5-step budget: an absolute time, tied to
their learning rates and budget. Scaling it with our budget (``lag_fraction`` x budget, the
earlier default, kept as an option) makes a run's class depend on how long we chose to train it.
The default here is a ratio: grokking when t_val > ``time_ratio`` x t_train (default 10), i.e. a
lag limit of (time_ratio - 1) x t_train. A ratio is free of the budget, of the time unit (epochs
or steps) and, to first order, of the overall time scale set by the learning rate, which slows
both events alike. Grokking is drawn and recognised on log-time axes (Power et al. 2022, Fig. 1;
Liu et al. 2022), where the lag is the distance log t_val - log t_train; the default asks for one
decade: validation reaches 90 % more than ten times later than training did. A run with
t_train = 0 that generalizes later than epoch 0 is grokking by this rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import CensoredData, ecdf

from grokscope.events import first_epoch

PHASES = ("comprehension", "grokking", "memorization", "confusion")
KM_ENTRIES = ("grokked", "censored", "diverged")
ACC_THRESHOLD = 0.9
TIME_RATIO = 10.0
LAG_FRACTION = 1e3 / 1e5
FINISHED = ("done", "diverged")
TOL = math.sqrt(np.finfo(float).eps)  # R quantile.survfit's tolerance for "S equals 0.5"


def lag_limit(
    t_train: int | None,
    budget: int,
    time_ratio: float = TIME_RATIO,
    lag_fraction: float | None = None,
) -> float | None:
    """Lag t_val - t_train above which a run is grokking: ``lag_fraction`` x ``budget`` when
    given (the budget-scaled rule), else (``time_ratio`` - 1) x t_train (None without t_train)."""
    if lag_fraction is not None:
        if not lag_fraction >= 0:
            raise ValueError(f"lag fraction must be >= 0, got {lag_fraction}")
        return lag_fraction * budget
    if not time_ratio >= 1:
        raise ValueError(f"time ratio must be >= 1, got {time_ratio}")
    return None if t_train is None else (time_ratio - 1.0) * t_train


def phase_class(t_train: int | None, t_val: int | None, limit: float | None) -> str:
    """Liu et al. (2022) phase from the epochs train / validation accuracy first exceed 90 % and
    the lag limit (see :func:`lag_limit`)."""
    if t_train is None:
        return "confusion"
    if t_val is None or limit is None:
        return "memorization"
    return "grokking" if t_val - t_train > limit else "comprehension"


def run_events(
    metrics: pd.DataFrame,
    budget: int,
    grok_threshold: float = 0.99,
    acc_threshold: float = ACC_THRESHOLD,
    time_ratio: float = TIME_RATIO,
    lag_fraction: float | None = None,
) -> dict:
    """Events of one run from its metrics table (epoch, train_acc, test_acc).

    Returns t_train90_epoch / t_val90_epoch (first epoch strictly above ``acc_threshold``, as
    Liu et al.), t_grok_epoch (first epoch with test_acc >= ``grok_threshold``, None if never),
    last_epoch (the last evaluated epoch), lag_epochs (t_val90 - t_train90, None unless both),
    lag_limit_epochs (:func:`lag_limit`) and the phase.
    """
    m = metrics.sort_values("epoch", kind="stable")
    epochs = m["epoch"].astype(int).to_numpy()
    t_train = first_epoch(epochs, m["train_acc"].to_numpy(), acc_threshold, strict=True)
    t_val = first_epoch(epochs, m["test_acc"].to_numpy(), acc_threshold, strict=True)
    limit = lag_limit(t_train, budget, time_ratio, lag_fraction)
    return {
        "t_train90_epoch": t_train,
        "t_val90_epoch": t_val,
        "t_grok_epoch": first_epoch(epochs, m["test_acc"].to_numpy(), grok_threshold),
        "last_epoch": int(epochs[-1]) if len(epochs) else 0,
        "lag_epochs": None if t_train is None or t_val is None else t_val - t_train,
        "lag_limit_epochs": limit,
        "phase": phase_class(t_train, t_val, limit),
    }


def km_entry(
    state: str, t_grok: float | None, epochs_done: float, budget: float | None
) -> tuple[str, float]:
    """(how the run enters the Kaplan-Meier estimate, its time): ``grokked`` at t_grok;
    ``diverged`` (never grokked, state diverged) censored at the budget; otherwise ``censored``
    at ``epochs_done``. See the module docstring for why diverged runs stay at risk."""
    if t_grok is not None and not pd.isna(t_grok):
        return "grokked", float(t_grok)
    if state == "diverged":
        if budget is None or pd.isna(budget):
            raise ValueError("a diverged run needs its epoch budget")
        return "diverged", float(budget)
    return "censored", float(epochs_done)


def km_curve(times: Sequence[float], events: Sequence[bool], conf: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier curve (scipy) at every distinct time: columns time, survival, lower, upper
    (pointwise log-log band; NaN where undefined, at S = 0 or 1)."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape or t.ndim != 1 or t.size == 0:
        raise ValueError("times and events must be non-empty and of the same length")
    sf = ecdf(CensoredData(uncensored=t[e], right=t[~e])).sf
    with warnings.catch_warnings():  # scipy warns where the band is undefined (S = 0 or 1)
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(conf, method="log-log")
    return pd.DataFrame(
        {
            "time": sf.quantiles,
            "survival": sf.probabilities,
            "lower": band.low.probabilities,
            "upper": band.high.probabilities,
        }
    )


def crossing_time(
    times: Sequence[float], values: Sequence[float], level: float = 0.5
) -> float | None:
    """Where a non-increasing step curve first reaches ``level`` (None if never; NaN points are
    skipped). If it equals ``level`` (within TOL) from t_i until it drops below at t_j, the
    midpoint (t_i + t_j) / 2; if it stays at ``level`` to its end, t_i (module docstring)."""
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    t, v = t[keep], v[keep]
    reach = np.flatnonzero(v <= level + TOL)
    if reach.size == 0:
        return None
    below = np.flatnonzero(v < level - TOL)
    first = t[reach[0]]
    return float(first) if below.size == 0 else float((first + t[below[0]]) / 2)


def km_median(
    times: Sequence[float], events: Sequence[bool], conf: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """(median, lower, upper) of the time to event from right-censored data: Kaplan-Meier median
    and its Brookmeyer-Crowley interval; None where the curve (or band edge) never reaches 0.5."""
    curve = km_curve(times, events, conf)
    median, lower, upper = (
        crossing_time(curve["time"], curve[c]) for c in ("survival", "lower", "upper")
    )
    return median, lower, upper


def majority_phase(phases: Sequence[str | None]) -> str | None:
    """The most frequent phase (ties go to the earlier entry of PHASES); None if none known."""
    counts = {p: sum(1 for x in phases if x == p) for p in PHASES}
    best = max(counts.values(), default=0)
    if best == 0:
        return None
    return next(p for p in PHASES if counts[p] == best)


def km_inputs(runs: pd.DataFrame) -> pd.DataFrame:
    """Columns km_entry and km_time_epoch (:func:`km_entry`) for a runs table with columns
    state, t_grok_epoch, epochs_done and epochs_budget."""
    rows = [
        km_entry(r.state, r.t_grok_epoch, r.epochs_done, r.epochs_budget)
        for r in runs[["state", "t_grok_epoch", "epochs_done", "epochs_budget"]].itertuples()
    ]
    return pd.DataFrame(rows, columns=["km_entry", "km_time_epoch"], index=runs.index)


def cell_summary(runs: pd.DataFrame, fields: Sequence[str], conf: float = 0.95) -> pd.DataFrame:
    """One row per grid cell from a per-run table.

    ``runs`` needs columns cell, state, t_grok_epoch (NaN/None if not grokked), epochs_done,
    epochs_budget, phase and the grid ``fields``. Returns the cell, its field values, n_runs,
    n_grokked, share_grokked, t_grok_median / t_grok_lo / t_grok_hi (Kaplan-Meier, runs entered
    as :func:`km_entry` says; NaN when not reached), the majority phase, the count of each phase,
    of diverged runs and of unfinished runs (state not done / diverged: censored at the epochs
    they trained, no phase).
    """
    out = []
    for cell, group in runs.groupby("cell", sort=True):
        km = km_inputs(group)
        grokked = (km["km_entry"] == "grokked").to_numpy()
        median, lo, hi = km_median(km["km_time_epoch"].to_numpy(), grokked, conf)
        row = {"cell": cell}
        row.update({f: group[f].iloc[0] for f in fields})
        row.update(
            {
                "n_runs": len(group),
                "n_grokked": int(grokked.sum()),
                "share_grokked": float(grokked.mean()),
                "t_grok_median": math.nan if median is None else median,
                "t_grok_lo": math.nan if lo is None else lo,
                "t_grok_hi": math.nan if hi is None else hi,
                "phase": majority_phase(group["phase"].tolist()),
            }
        )
        for p in PHASES:
            row[f"n_{p}"] = int((group["phase"] == p).sum())
        row["n_diverged"] = int((group["state"] == "diverged").sum())
        row["n_unfinished"] = int((~group["state"].isin(FINISHED)).sum())
        out.append(row)
    return pd.DataFrame(out)
