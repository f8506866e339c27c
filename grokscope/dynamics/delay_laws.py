"""Delay laws: how long after memorization a run groks, from quantities known at memorization.

Each row of the input table is one run that memorized and grokked: ``t_mem``, ``t_grok`` (epochs
or steps), ``lr``, ``wd`` (AdamW's learning rate and decoupled weight decay), ``norm_mem`` and
``norm_grok`` (squared weight norms |theta|^2 at T_mem and at T_grok). The delay is
D = T_grok - T_mem. Three laws, each linear in its features (fitted by least squares,
scikit-learn's ``LinearRegression``):

- ``norm_ratio``: D = a log(norm_mem / norm_grok) / (lr wd) + b. Under decoupled weight decay
  alone |theta|^2 shrinks by (1 - lr wd)^2 per step, so the time to shrink from norm_mem to
  norm_grok is log(norm_mem / norm_grok) / (2 lr wd) to first order: a = 1/2, b = 0 if decay alone
  set the delay. Published: R^2 > 0.97 over 293 runs. It needs norm_grok, known only after
  grokking: it explains delays, it cannot forecast them.
- ``first_passage``: D = (log norm_mem - log V*) / (2 kappa lr wd), the first passage of the norm
  to a fixed V* (the generalizing solution's norm): linear in log(norm_mem) / (lr wd) and
  1 / (lr wd) without intercept; kappa = 1 / (2 a), V* = exp(-b / a). Published: 17.7 % held-out
  error. Needs only quantities at memorization: the law ``grokscope predict`` uses.
- ``inverse_rate``: D = a / (lr wd) + b, the baseline a law must beat.

Held-out error is leave-one-out: each run predicted by the law fitted on the others; the mean
absolute percentage error of D (``mape_loo_``) and the prediction interval come from those
held-out relative errors (their 5th and 95th percentiles), never from the fit's own residuals.
The interval is nominally 90 %: from n held-out errors its coverage is uncertain by about
1 / sqrt(n), so a law needs :data:`MIN_RUNS` runs. A held-out error of -100 % or below (a
prediction of zero or less) leaves the interval open above.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneOut, cross_val_predict

KINDS = ("norm_ratio", "first_passage", "inverse_rate")
NEEDS = {
    "norm_ratio": ("t_mem", "t_grok", "lr", "wd", "norm_mem", "norm_grok"),
    "first_passage": ("t_mem", "t_grok", "lr", "wd", "norm_mem"),
    "inverse_rate": ("t_mem", "t_grok", "lr", "wd"),
}
MIN_RUNS = 8


def features(table: pd.DataFrame, kind: str) -> np.ndarray:
    """The law's features (n, k) from a runs table (module docstring)."""
    rate = table["lr"].to_numpy(float) * table["wd"].to_numpy(float)
    if kind == "norm_ratio":
        ratio = table["norm_mem"].to_numpy(float) / table["norm_grok"].to_numpy(float)
        return (np.log(ratio) / rate)[:, None]
    if kind == "first_passage":
        return np.stack([np.log(table["norm_mem"].to_numpy(float)) / rate, 1.0 / rate], axis=1)
    if kind == "inverse_rate":
        return (1.0 / rate)[:, None]
    raise ValueError(f"unknown delay law {kind!r}; choose one of {', '.join(KINDS)}")


def delays(table: pd.DataFrame) -> np.ndarray:
    return table["t_grok"].to_numpy(float) - table["t_mem"].to_numpy(float)


@dataclass
class DelayLaw:
    """A delay law (module docstring) as an estimator: ``fit(table)``, ``predict(table)``.
    Fitted attributes: ``coef_``, ``intercept_``, ``r2_`` (in sample), ``mape_loo_`` (held out),
    ``rel_err_lo_`` / ``rel_err_hi_`` (5th / 95th percentiles of the held-out relative errors),
    ``n_``; for ``first_passage`` also ``kappa_`` and ``v_star_``."""

    kind: str = "first_passage"
    coef_: list[float] = field(default_factory=list, init=False)
    intercept_: float = field(default=0.0, init=False)
    r2_: float | None = field(default=None, init=False)
    mape_loo_: float | None = field(default=None, init=False)
    rel_err_lo_: float | None = field(default=None, init=False)
    rel_err_hi_: float | None = field(default=None, init=False)
    n_: int = field(default=0, init=False)
    kappa_: float | None = field(default=None, init=False)
    v_star_: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown delay law {self.kind!r}; choose one of {', '.join(KINDS)}")

    def _model(self) -> LinearRegression:
        return LinearRegression(fit_intercept=self.kind != "first_passage")

    def fit(self, table: pd.DataFrame) -> DelayLaw:
        """Fit on runs that memorized and grokked (a missing column or value is refused)."""
        missing = [c for c in NEEDS[self.kind] if c not in table]
        if missing:
            raise ValueError(f"the {self.kind} law needs columns {', '.join(missing)}")
        if table[list(NEEDS[self.kind])].isna().any().any():
            raise ValueError(f"the {self.kind} law needs every run's {', '.join(NEEDS[self.kind])}")
        if len(table) < MIN_RUNS:
            raise ValueError(
                f"fitting a delay law needs at least {MIN_RUNS} grokked runs, got {len(table)}"
            )
        X, y = features(table, self.kind), delays(table)
        model = self._model().fit(X, y)
        self.coef_ = [float(c) for c in model.coef_]
        self.intercept_ = float(model.intercept_)
        self.r2_ = float(model.score(X, y))
        held = cross_val_predict(self._model(), X, y, cv=LeaveOneOut())
        rel = (held - y) / y
        self.mape_loo_ = float(np.mean(np.abs(rel)))
        self.rel_err_lo_, self.rel_err_hi_ = (float(q) for q in np.percentile(rel, [5, 95]))
        self.n_ = len(y)
        if self.kind == "first_passage" and self.coef_[0] > 0:
            a, b = self.coef_
            self.kappa_ = 1.0 / (2.0 * a)
            self.v_star_ = float(math.exp(-b / a))
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted delays D (n,)."""
        if not self.n_:
            raise ValueError("the delay law is not fitted")
        return features(table, self.kind) @ np.asarray(self.coef_) + self.intercept_

    def interval(self, delay: float) -> tuple[float, float]:
        """The delay's interval from the held-out relative errors: a prediction d with relative
        error e came from a true delay d / (1 + e); clamped at 0 below, and open (inf) above
        when the worst held-out error was -100 % or below."""
        lo = max(delay / (1.0 + self.rel_err_hi_), 0.0) if self.rel_err_hi_ > -1 else 0.0
        hi = delay / (1.0 + self.rel_err_lo_) if self.rel_err_lo_ > -1 else math.inf
        return (lo, max(hi, lo))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> DelayLaw:
        data = json.loads(Path(path).read_text())
        law = cls(data.pop("kind"))
        for k, v in data.items():
            setattr(law, k, v)
        return law
