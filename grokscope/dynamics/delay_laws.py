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
absolute percentage error of D (``mape_loo_``), never the fit's own residuals.

The prediction interval is the jackknife+ of Barber, Candès, Ramdas & Tibshirani (2021, Ann.
Statist.), on the log of the delay (delays are positive and their errors multiplicative): with
mu_-i the law fitted without run i and R_i = |log D_i - log mu_-i(x_i)| its held-out score, the
interval for a new run x is [ the floor(alpha (n + 1))-th smallest of log mu_-i(x) - R_i,
the ceil((1 - alpha) (n + 1))-th smallest of log mu_-i(x) + R_i ], exponentiated, with
alpha = 1 - ``coverage`` (0.9 by default). These finite-sample ranks guarantee coverage of at
least 1 - 2 alpha for exchangeable runs whatever the law's error distribution (their Theorem 1),
and in practice close to 1 - alpha (simulated in tests/test_delay_laws.py, 400 fits each: 0.95
with 9 runs, 0.90 with 20 and with 40, 0.91 with no relation between delay and features; the
earlier 5th-95th percentiles of the held-out errors covered about 0.74). A rank beyond the n
runs leaves that side open: a 90 % interval needs n >= 9 runs for a finite upper end. A
held-out prediction of zero or less gives that run an infinite score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneOut

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
    """A delay law (module docstring) as an estimator: ``fit(table)``, ``predict(table)``,
    ``interval(table)``. Fitted attributes: ``coef_``, ``intercept_``, ``r2_`` (in sample),
    ``mape_loo_`` (held out), ``n_``; the leave-one-out laws and scores of the jackknife+
    (``loo_coef_``, ``loo_intercept_``, ``loo_score_``); for ``first_passage`` also ``kappa_``
    and ``v_star_``."""

    kind: str = "first_passage"
    coverage: float = 0.9
    coef_: list[float] = field(default_factory=list, init=False)
    intercept_: float = field(default=0.0, init=False)
    r2_: float | None = field(default=None, init=False)
    mape_loo_: float | None = field(default=None, init=False)
    loo_coef_: list[list[float]] = field(default_factory=list, init=False)
    loo_intercept_: list[float] = field(default_factory=list, init=False)
    loo_score_: list[float] = field(default_factory=list, init=False)
    n_: int = field(default=0, init=False)
    kappa_: float | None = field(default=None, init=False)
    v_star_: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown delay law {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must lie in (0, 1), got {self.coverage}")

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
        held = np.empty(len(y))
        self.loo_coef_, self.loo_intercept_ = [], []
        for train, (i,) in LeaveOneOut().split(X):
            m = self._model().fit(X[train], y[train])
            self.loo_coef_.append([float(c) for c in m.coef_])
            self.loo_intercept_.append(float(m.intercept_))
            held[i] = float(X[i] @ m.coef_ + m.intercept_)
        self.mape_loo_ = float(np.mean(np.abs((held - y) / y)))
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(held > 0, np.abs(np.log(y) - np.log(held)), np.inf)
        self.loo_score_ = [float(s) for s in score]
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

    def interval(self, table: pd.DataFrame) -> np.ndarray:
        """(n, 2) jackknife+ interval (module docstring) of the delay of each run of ``table``:
        0 below and inf above where the finite-sample rank leaves a side open or a
        leave-one-out law predicts no positive delay."""
        if not self.loo_score_:
            raise ValueError("the delay law is not fitted")
        X = features(table, self.kind)
        mu = X @ np.asarray(self.loo_coef_).T + np.asarray(self.loo_intercept_)  # (rows, n)
        score = np.asarray(self.loo_score_)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_mu = np.where(mu > 0, np.log(np.where(mu > 0, mu, 1.0)), np.nan)
        low = np.where(np.isnan(log_mu), -np.inf, log_mu - score)
        high = np.where(np.isnan(log_mu), np.inf, log_mu + score)
        n, alpha = len(score), 1.0 - self.coverage
        k_lo, k_hi = math.floor(alpha * (n + 1)), math.ceil((1.0 - alpha) * (n + 1))
        lo = np.sort(low, axis=1)[:, k_lo - 1] if k_lo >= 1 else np.full(len(X), -np.inf)
        hi = np.sort(high, axis=1)[:, k_hi - 1] if k_hi <= n else np.full(len(X), np.inf)
        return np.stack([np.exp(lo), np.exp(np.maximum(hi, lo))], axis=1)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> DelayLaw:
        data = json.loads(Path(path).read_text())
        if "loo_score_" not in data:
            raise ValueError(
                "it was written before delay laws kept their leave-one-out fits (needed for the "
                "interval): fit it again with grokscope fit-delay"
            )
        law = cls(data.pop("kind"), data.pop("coverage", 0.9))
        for k, v in data.items():
            setattr(law, k, v)
        return law
