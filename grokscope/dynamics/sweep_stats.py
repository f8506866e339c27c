"""Across-run statistics of a sweep: censored grokking times and phase classes (tables only).

Grokking time is censored data (see ARCHITECTURE.md): a run that has not reached the test-accuracy
threshold by the end of its training has not grokked *yet*, so its time is only known to exceed
the epochs it trained. Taking the budget as its time, or dropping it, biases the median downward.
Per grid cell we therefore use the Kaplan-Meier estimator (Kaplan & Meier 1958) of the survival
function S(t) = P(T_grok > t):

    S(t) = prod over event times t_j <= t of (1 - d_j / n_j)

with n_j runs still at risk (not yet grokked and not yet censored) just before t_j and d_j runs
grokking at t_j; a run censored at t counts as at risk at t. Its variance is Greenwood's
Var S(t) = S(t)^2 sum_j d_j / (n_j (n_j - d_j)). The pointwise confidence band uses the log-log
transform (Kalbfleisch & Prentice): with s = sqrt(sum_j d_j / (n_j (n_j - d_j))) / |log S(t)|,
band = [S^exp(z s), S^exp(-z s)]. The median is the first time with S(t) <= 0.5 (None when the
curve never gets there: fewer than half the seeds grokked); its interval is read off the band as
R's ``survfit`` does (after Brookmeyer & Crowley 1982): lower end = first time the band's lower
edge is <= 0.5, upper end = first time its upper edge is <= 0.5 (None: unbounded).

Phase classes follow Liu, Kitouni, Nolte, Michaud, Tegmark & Williams (2022), "Towards
understanding grokking: an effective theory of representation learning": with t_train and t_val
the first evaluated epochs at which train and validation accuracy exceed 90 % within the budget,

- comprehension: both exceed 90 % and validation lags training by at most the lag;
- grokking: both exceed 90 % and validation lags training by more than the lag;
- memorization: training exceeds 90 %, validation never does;
- confusion: training never exceeds 90 %.

Liu et al. use a lag of 10^3 steps within a 10^5-step budget. Our budgets are far smaller, so the
lag is scaled with the budget: lag = ``lag_fraction`` (default 10^3 / 10^5 = 0.01) x budget,
in epochs (full-batch epochs are steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

PHASES = ("comprehension", "grokking", "memorization", "confusion")
ACC_THRESHOLD = 0.9
LAG_FRACTION = 1e3 / 1e5
FINISHED = ("done", "diverged")


def first_epoch_above(
    epochs: Sequence[int], values: Sequence[float], threshold: float
) -> int | None:
    """First epoch whose value is strictly above ``threshold`` (Liu et al.'s "> 90 %"), or None."""
    for epoch, value in zip(epochs, values, strict=True):
        if value > threshold:
            return int(epoch)
    return None


def first_epoch_at_least(
    epochs: Sequence[int], values: Sequence[float], threshold: float
) -> int | None:
    """First epoch whose value is >= ``threshold`` (the t_grok convention of the trainer)."""
    for epoch, value in zip(epochs, values, strict=True):
        if value >= threshold:
            return int(epoch)
    return None


def phase_class(t_train: int | None, t_val: int | None, lag: float) -> str:
    """Liu et al. (2022) phase from the epochs train / validation accuracy first exceed 90 %."""
    if t_train is None:
        return "confusion"
    if t_val is None:
        return "memorization"
    return "grokking" if t_val - t_train > lag else "comprehension"


def run_events(
    metrics: pd.DataFrame,
    budget: int,
    grok_threshold: float = 0.99,
    acc_threshold: float = ACC_THRESHOLD,
    lag_fraction: float = LAG_FRACTION,
) -> dict:
    """Events of one run from its metrics table (epoch, train_acc, test_acc).

    Returns t_train90_epoch / t_val90_epoch (first epoch above ``acc_threshold``), t_grok_epoch
    (first epoch with test_acc >= ``grok_threshold``, None if never), last_epoch (the last
    evaluated epoch, the censoring time of a run that did not grok), lag_epochs and the phase.
    """
    m = metrics.sort_values("epoch")
    epochs = m["epoch"].astype(int).tolist()
    t_train = first_epoch_above(epochs, m["train_acc"].tolist(), acc_threshold)
    t_val = first_epoch_above(epochs, m["test_acc"].tolist(), acc_threshold)
    lag = lag_fraction * budget
    return {
        "t_train90_epoch": t_train,
        "t_val90_epoch": t_val,
        "t_grok_epoch": first_epoch_at_least(epochs, m["test_acc"].tolist(), grok_threshold),
        "last_epoch": epochs[-1] if epochs else 0,
        "lag_epochs": lag,
        "phase": phase_class(t_train, t_val, lag),
    }


def km_curve(times: Sequence[float], events: Sequence[bool], conf: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier curve at the distinct event times: columns time, at_risk, events, survival,
    greenwood (the sum d / (n (n - d))), variance (Greenwood), lower and upper (log-log band)."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape:
        raise ValueError("times and events must have the same length")
    z = float(norm.ppf(0.5 + conf / 2))
    rows = []
    s, gw = 1.0, 0.0
    for tj in np.unique(t[e]):
        n = int(np.sum(t >= tj))
        d = int(np.sum((t == tj) & e))
        s *= 1.0 - d / n
        gw = gw + d / (n * (n - d)) if n > d else math.inf
        if s <= 0.0:
            lo = hi = 0.0
            var = 0.0
        else:
            var = s * s * gw
            se = math.sqrt(gw) / abs(math.log(s))
            lo, hi = s ** math.exp(z * se), s ** math.exp(-z * se)
        rows.append((float(tj), n, d, s, gw, var, lo, hi))
    return pd.DataFrame(
        rows,
        columns=[
            "time",
            "at_risk",
            "events",
            "survival",
            "greenwood",
            "variance",
            "lower",
            "upper",
        ],
    )


def km_median(
    times: Sequence[float], events: Sequence[bool], conf: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """(median, lower, upper) of the time to event from right-censored data; None where the
    Kaplan-Meier curve (or the band edge) never reaches 0.5."""
    curve = km_curve(times, events, conf)

    def first(column: str) -> float | None:
        hit = curve.loc[curve[column] <= 0.5, "time"]
        return float(hit.iloc[0]) if len(hit) else None

    return first("survival"), first("lower"), first("upper")


def majority_phase(phases: Sequence[str | None]) -> str | None:
    """The most frequent phase (ties go to the earlier entry of PHASES); None if none known."""
    counts = {p: sum(1 for x in phases if x == p) for p in PHASES}
    best = max(counts.values(), default=0)
    if best == 0:
        return None
    return next(p for p in PHASES if counts[p] == best)


def cell_summary(runs: pd.DataFrame, fields: Sequence[str], conf: float = 0.95) -> pd.DataFrame:
    """One row per grid cell from a per-run table.

    ``runs`` needs columns cell, state, t_grok_epoch (NaN/None if not grokked), epochs_done (the
    censoring time), phase, and the grid ``fields``. Returns the cell, its field values, n_runs,
    n_grokked, share_grokked, t_grok_median / t_grok_lo / t_grok_hi (Kaplan-Meier, censored
    runs included; NaN when not reached), the majority phase and the count of each phase, of
    diverged runs and of unfinished runs (state not done / diverged; they enter the Kaplan-Meier
    estimate as censored at the epochs they trained, but get no phase).
    """
    out = []
    for cell, group in runs.groupby("cell", sort=True):
        grokked = group["t_grok_epoch"].notna().to_numpy()
        times = np.where(grokked, group["t_grok_epoch"].fillna(0), group["epochs_done"])
        median, lo, hi = km_median(times.astype(float), grokked, conf)
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
