"""Latent-state training maps: a Gaussian HMM over per-checkpoint statistics of many runs.

After Hu, Chen, Saphra & Cho, "Latent State Models of Training Dynamics" (TMLR 2023). Each
training run is a sequence of feature vectors (one per checkpoint, e.g. the weight statistics
of :mod:`grokscope.measures.weights`). Features are z-scored per run (or pooled over runs), a
Gaussian HMM is fitted to all runs jointly with the number of states chosen by BIC on held-out
runs, and the decoded
(Viterbi) state paths are summarised as a graph of phase transitions. A state that only some
runs visit, and whose visitors converge later, is a *detour* (the paper's term).

This module reads tables (numpy arrays or a pandas frame) only; it never touches a model.

Decisions not fixed by the paper, and documented here:

* Constant features. A feature with zero spread within one run is set to z = 0 for that run
  (with a warning); a feature constant in every run carries no information and is dropped
  (with a warning). NaN or infinite features raise ValueError.
* One run. Held-out model selection needs at least two runs; with a single run (or
  ``heldout_fraction=0``) BIC is computed on the training data itself, with a warning in the
  single-run case.
* Visits. A run *visits* a state when its Viterbi path stays there for at least ``min_dwell``
  consecutive checkpoints (default 2), so a single decoded checkpoint, often a transient between
  two states, is not a visit. ``obligatory``, ``visited_runs`` and the detour test use these
  visits; occupancy, time shares and transitions count every decoded checkpoint.
* Censored runs. A run whose convergence epoch is None (or NaN) never converged within its
  budget: it converged later than every run that did, by an unknown amount. Both association
  tests are rank tests, so such runs are ranked latest, tied with each other (convergence time
  +infinity), rather than dropped: they are exactly the runs a detour would explain. Hu et al.'s
  released code likewise keeps them (at the end of training). They are counted per state in
  ``n_censored_visitors`` and left out of the mean convergence epochs, which need a number.
* Multiple testing. A map tests every optional state at once, so the p-values of each family
  (the Mann-Whitney detour tests, the Spearman time-share tests) are adjusted across the states
  tested with Holm's step-down method (Holm 1979), which bounds the chance of any false detour
  by ``alpha`` under any dependence between the tests. Both raw and adjusted p-values are
  reported; a detour needs the adjusted one below ``alpha``.
* State labels. After fitting, states are renumbered by the mean normalised time (t / (T - 1))
  of the checkpoints decoded into them, so state 0 is typically where runs start and the last
  label where they end; states never decoded come last. Labels are therefore stable across
  refits that find the same states.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from hmmlearn.hmm import GaussianHMM
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from grokscope.errors import GrokscopeError

_COVARIANCE_TYPES = ("diag", "full")


class TrainingMapWarning(UserWarning):
    """A data or model-selection problem that TrainingMap worked around."""


@dataclass(frozen=True)
class Transition:
    """A phase transition seen in the decoded paths: source -> target (source != target)."""

    source: int
    target: int
    probability: float  # the fitted model's transition probability
    count: int  # occurrences in all decoded paths


@dataclass(frozen=True)
class StateSummary:
    """Per-state description of a fitted training map (Hu et al., TMLR 2023, Sec. 4)."""

    id: int
    means: dict[str, float]  # raw (unstandardised) feature means of checkpoints in the state
    occupancy: float  # share of all checkpoints decoded into the state
    visited_runs: list[int]  # runs that stay in the state for at least min_dwell checkpoints
    obligatory: bool  # every run visits the state
    detour: bool  # optional, and visitors converge later (Holm-adjusted p < alpha)
    p_value: float | None  # Mann-Whitney U, two-sided, visitors vs. others (raw)
    p_value_holm: float | None  # p_value adjusted across the states tested (Holm)
    later_for_visitors: bool | None  # direction of the Mann-Whitney effect
    rank_biserial: float | None  # Mann-Whitney effect size in [-1, 1], > 0: visitors later
    time_corr: float | None  # Spearman rho: share of time in state vs. convergence epoch
    time_p_value: float | None  # raw
    time_p_value_holm: float | None  # adjusted across the states tested (Holm)
    mean_convergence_epoch_visitors: float | None  # over visitors that converged
    mean_convergence_epoch_others: float | None  # over other runs that converged
    n_censored_visitors: int  # visitors that never converged (ranked latest in the tests)


def n_free_parameters(n_states: int, n_features: int, covariance_type: str) -> int:
    """Free parameters of a Gaussian HMM, the k of BIC = -2 log L + k ln T.

    Start probabilities n - 1, transition matrix n (n - 1), means n d, covariances n d (diag)
    or n d (d + 1) / 2 (full).
    """
    n, d = n_states, n_features
    if covariance_type == "diag":
        n_cov = n * d
    elif covariance_type == "full":
        n_cov = n * d * (d + 1) // 2
    else:
        raise ValueError(f"covariance_type must be one of {_COVARIANCE_TYPES}")
    return (n - 1) + n * (n - 1) + n * d + n_cov


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's (1979) step-down adjusted p-values, in the input order.

    With the m available p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where it is below alpha controls the
    family-wise error rate at alpha under any dependence between the tests (Holm, "A simple
    sequentially rejective multiple test procedure", Scand. J. Statist. 1979). None marks a
    state without a test: it stays None and does not count in m. Ties keep their input order,
    which does not change the adjusted values.
    """
    index = [i for i, p in enumerate(p_values) if p is not None]
    raw = np.array([p for p in p_values if p is not None], dtype=np.float64)
    if np.any(np.isnan(raw)) or np.any((raw < 0.0) | (raw > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(raw)
    order = np.argsort(raw, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * raw[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    out: list[float | None] = [None] * len(p_values)
    for i, value in zip(index, adjusted, strict=True):
        out[i] = float(value)
    return out


def dwell_visits(paths: Sequence[np.ndarray], n_states: int, min_dwell: int = 2) -> np.ndarray:
    """(runs x states) booleans: run i visits state s when its decoded path stays in s for at
    least ``min_dwell`` consecutive checkpoints.

    A lone Viterbi checkpoint is often a transient between two states rather than a phase the
    run went through (Hu et al., TMLR 2023, count visits from the decoded paths); requiring a
    minimum dwell keeps such blips from making a run a "visitor". ``min_dwell=1`` counts every
    checkpoint, as a plain occupancy count would.
    """
    if min_dwell < 1:
        raise ValueError(f"min_dwell must be >= 1, got {min_dwell}")
    visited = np.zeros((len(paths), n_states), dtype=bool)
    for i, path in enumerate(paths):
        path = np.asarray(path)
        if path.size == 0:
            continue
        starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
        lengths = np.diff(np.r_[starts, path.size])
        for state, length in zip(path[starts], lengths, strict=True):
            if length >= min_dwell:
                visited[i, int(state)] = True
    return visited


def convergence_ranks(convergence: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Mid-ranks of convergence epochs with never-converged runs (None or NaN) ranked latest.

    A run that never converged within its budget converged later than every run that did, by
    an unknown amount: as a convergence time of +infinity it ties with the other such runs at
    the top rank. Rank tests (Mann-Whitney, Spearman) then use every run instead of dropping
    the censored ones, as Hu et al.'s released code also keeps them (at the end of training).
    """
    conv = np.array([np.nan if c is None else float(c) for c in convergence], dtype=np.float64)
    return stats.rankdata(np.where(np.isnan(conv), np.inf, conv))


@dataclass(frozen=True)
class AssociationTests:
    """Per-state association of a state with convergence time, one entry per state."""

    p_value: list[float | None]  # raw two-sided p-value (None: no test possible)
    p_value_holm: list[float | None]  # Holm-adjusted across the states with a test
    effect: list[float | None]  # in [-1, 1], > 0: later convergence goes with the state
    significant: list[bool]  # adjusted p < alpha (and, for detours, effect > 0)


EXACT_SPLITS = 5_000


def _mw_method(a: np.ndarray, b: np.ndarray):
    """Exact permutation p-values for small samples (ties allowed), asymptotic otherwise (and
    for a group of one run, which scipy's permutation test does not take)."""
    if min(len(a), len(b)) >= 2 and math.comb(len(a) + len(b), len(a)) <= EXACT_SPLITS:
        return stats.PermutationMethod(n_resamples=np.inf)
    return "asymptotic"


def _per_run_by_state(values, convergence, name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a (runs x states) array and the runs' convergence ranks; ValueError when
    the two do not describe the same runs."""
    arr = np.asarray(values, dtype=dtype)
    ranks = convergence_ranks(convergence)
    if arr.ndim != 2 or arr.shape[0] != len(ranks):
        raise ValueError(f"{name} has shape {arr.shape}; expected ({len(ranks)}, n_states)")
    return arr, ranks


def detour_tests(
    visited: np.ndarray, convergence: Sequence[float | None] | np.ndarray, alpha: float = 0.05
) -> AssociationTests:
    """Detour tests of a training map: per state, do its visitors converge later?

    ``visited`` is (runs x states) booleans (see :func:`dwell_visits`), ``convergence`` one
    epoch per run (None or NaN: never converged, ranked latest, see :func:`convergence_ranks`).
    Each optional state (visited by some runs, not all) gets a two-sided Mann-Whitney U test of
    the visitors' convergence ranks against the other runs' (scipy.stats.mannwhitneyu): exact,
    by enumerating every split of the runs (ties included, which never-converged runs create),
    while there are at most ``EXACT_SPLITS`` splits; beyond that the normal approximation with
    tie correction, which at those sizes is accurate (the normal approximation overstates
    significance for a handful of runs: 3 vs 3 gives 0.064 where the exact p is 0.100). The
    p-values are Holm-adjusted across the states tested (:func:`holm_adjust`); a state is a
    detour (Hu, Chen, Saphra & Cho, TMLR 2023) when the adjusted p-value is below ``alpha`` and
    the visitors converge later. ``effect`` is the rank-biserial correlation 2 U / (n_visitors
    n_others) - 1 (Kerby 2014), U counting visitor-other pairs where the visitor converged later
    (ties count 1/2): positive when visitors converge later.
    """
    visited, ranks = _per_run_by_state(visited, convergence, "visited", bool)
    p_raw: list[float | None] = []
    effect: list[float | None] = []
    for s in range(visited.shape[1]):
        vis, oth = ranks[visited[:, s]], ranks[~visited[:, s]]
        if len(vis) == 0 or len(oth) == 0:
            p_raw.append(None)
            effect.append(None)
            continue
        test = stats.mannwhitneyu(vis, oth, alternative="two-sided", method=_mw_method(vis, oth))
        p_raw.append(float(np.clip(test.pvalue, 0.0, 1.0)))
        effect.append(float(2.0 * test.statistic / (len(vis) * len(oth)) - 1.0))
    p_holm = holm_adjust(p_raw)
    significant = [
        p is not None and e is not None and p < alpha and e > 0
        for p, e in zip(p_holm, effect, strict=True)
    ]
    return AssociationTests(p_raw, p_holm, effect, significant)


def time_share_tests(
    time_share: np.ndarray, convergence: Sequence[float | None] | np.ndarray, alpha: float = 0.05
) -> AssociationTests:
    """Spearman correlation, per state, of the share of checkpoints spent in it with the
    convergence epoch (never-converged runs ranked latest, see :func:`convergence_ranks`).

    scipy.stats.spearmanr (t approximation of the p-value); a state needs at least 3 runs and
    some spread in both variables. The p-values are Holm-adjusted across the states tested
    (:func:`holm_adjust`), a family separate from the detour tests; ``significant`` is adjusted
    p < alpha, whatever the sign of rho.
    """
    share, ranks = _per_run_by_state(time_share, convergence, "time_share", np.float64)
    rho: list[float | None] = []
    p_raw: list[float | None] = []
    for s in range(share.shape[1]):
        if len(ranks) < 3 or np.ptp(share[:, s]) == 0 or np.ptp(ranks) == 0:
            rho.append(None)
            p_raw.append(None)
            continue
        res = stats.spearmanr(share[:, s], ranks)
        r, p = _optional_float(res.statistic), _optional_float(res.pvalue)
        rho.append(r)
        p_raw.append(None if r is None or p is None else float(np.clip(p, 0.0, 1.0)))
    p_holm = holm_adjust(p_raw)
    significant = [p is not None and p < alpha for p in p_holm]
    return AssociationTests(p_raw, p_holm, rho, significant)


SCALINGS = ("per_run", "pooled")


def standardise_runs(
    sequences: Sequence[np.ndarray], feature_names: Sequence[str], scaling: str = "per_run"
) -> tuple[list[np.ndarray], list[int]]:
    """Z-score the runs' features: over time within each run (``per_run``, as in Hu et al.,
    TMLR 2023) or over every checkpoint of every run together (``pooled``).

    Per-run z-scores compare runs by the shape of their trajectories; pooled ones keep where
    each run actually is, so a state is the same region of weight space in every run (per-run
    scaling can split a state between runs that took a detour and runs that did not).

    Returns the standardised runs restricted to the kept features and the indices of those
    features. A feature constant within a run gets z = 0 there (per run); a feature constant in
    every run is dropped. Both cases warn (TrainingMapWarning).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    n_features = len(feature_names)
    constant = np.zeros((len(sequences), n_features), dtype=bool)
    if scaling == "pooled":
        pooled = np.concatenate(sequences)
        centre, spread = pooled.mean(axis=0), pooled.std(axis=0)
    z_runs = []
    for i, run in enumerate(sequences):
        mean, std = (centre, spread) if scaling == "pooled" else (run.mean(axis=0), run.std(axis=0))
        # Treat spread at rounding level as zero (a constant stored in float64 may not give
        # an exact 0.0 standard deviation).
        flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        constant[i] = flat
        z = (run - mean) / np.where(flat, 1.0, std)
        z[:, flat] = 0.0
        z_runs.append(z)

    kept = [j for j in range(n_features) if not constant[:, j].all()]
    dropped = [feature_names[j] for j in range(n_features) if constant[:, j].all()]
    if dropped:
        warnings.warn(
            f"features constant in every run carry no information and are dropped: {dropped}",
            TrainingMapWarning,
            stacklevel=2,
        )
    partial = [
        (int(i), feature_names[j]) for i, j in zip(*np.nonzero(constant), strict=True) if j in kept
    ]
    if partial:
        shown = ", ".join(f"run {i}: {name!r}" for i, name in partial[:5])
        more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
        warnings.warn(
            f"features constant within a run were set to z = 0 there ({shown}{more})",
            TrainingMapWarning,
            stacklevel=2,
        )
    if not kept:
        raise ValueError("every feature is constant in every run; nothing to model")
    return [z[:, kept] for z in z_runs], kept


def runs_from_table(
    table: pd.DataFrame,
    feature_names: Sequence[str],
    run_column: str = "run",
    epoch_column: str = "epoch",
) -> tuple[list[np.ndarray], list[np.ndarray], list[Any]]:
    """Split a long table (one row per run and checkpoint) into TrainingMap inputs.

    Returns (sequences, epochs, run_ids): per run, its feature matrix and epochs sorted by
    epoch, in the order of the sorted run ids.
    """
    sequences, epochs, run_ids = [], [], []
    for run_id, group in table.groupby(run_column, sort=True):
        group = group.sort_values(epoch_column)
        sequences.append(group[list(feature_names)].to_numpy(dtype=np.float64))
        epochs.append(group[epoch_column].to_numpy(dtype=np.float64))
        run_ids.append(run_id)
    return sequences, epochs, run_ids


@contextmanager
def _quiet_hmmlearn() -> Iterator[None]:
    """Silence hmmlearn's per-fit log messages (convergence notes, emptied states) while
    fitting many restarts; TrainingMap counts those events in its fitted attributes."""
    logger = logging.getLogger("hmmlearn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _optional_float(value: float) -> float | None:
    """A Python float, or None for NaN/inf (keeps results JSON-serialisable)."""
    value = float(value)
    return value if math.isfinite(value) else None


class TrainingMap(BaseEstimator):
    """Gaussian-HMM training map of many runs (Hu, Chen, Saphra & Cho, TMLR 2023).

    Fit with per-run feature sequences; the number of states is chosen by BIC on held-out
    runs, then the chosen model is refitted on all runs.

    Parameters: ``n_states_range`` candidate numbers of states; ``n_restarts`` EM runs per
    candidate (best training log-likelihood kept); ``covariance_type`` "diag" (the paper's
    choice) or "full"; ``heldout_fraction`` share of runs held out for BIC (0: in-sample
    BIC); ``alpha`` family-wise significance level of the detour tests (Holm-adjusted across
    states) and of the time-share tests; ``n_iter`` EM iteration cap; ``tol`` EM
    stopping threshold on the log-likelihood gain *per time point* (scale-free, unlike
    hmmlearn's absolute ``tol``); ``random_state`` seeds the split and every restart;
    ``scaling`` "per_run" (the paper's z-scores) or "pooled" (see :func:`standardise_runs`);
    ``min_dwell`` consecutive checkpoints in a state that make a visit (see
    :func:`dwell_visits`).

    Fitted attributes: ``n_states_``, ``bic_`` and ``heldout_loglik_`` ({n: value}),
    ``model_`` (hmmlearn GaussianHMM on z-scored features), ``paths_`` (Viterbi states per
    run), ``transitions_`` (list of Transition), ``state_means_`` (n_states x n_features,
    raw units, columns ``feature_names_in_``), ``occupancy_``, ``visited_`` and
    ``time_share_`` (runs x states; ``visited_`` after the minimum dwell), ``detour_tests_``
    and ``time_tests_`` (AssociationTests), ``states_`` (list of StateSummary), ``detours_`` (state
    ids), ``feature_names_`` (modelled features), ``n_censored_``, ``heldout_runs_``,
    ``selection_on_heldout_``, and fit diagnostics ``n_fits_``, ``n_unconverged_fits_``
    (stopped by ``n_iter``), ``n_failed_restarts_`` (degenerate, discarded).
    """

    def __init__(
        self,
        n_states_range: Sequence[int] = range(1, 9),
        n_restarts: int = 5,
        covariance_type: str = "diag",
        heldout_fraction: float = 0.25,
        alpha: float = 0.05,
        n_iter: int = 100,
        tol: float = 1e-4,
        random_state: int | None = 0,
        scaling: str = "per_run",
        min_dwell: int = 2,
    ) -> None:
        self.n_states_range = n_states_range
        self.n_restarts = n_restarts
        self.covariance_type = covariance_type
        self.heldout_fraction = heldout_fraction
        self.alpha = alpha
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        self.scaling = scaling
        self.min_dwell = min_dwell

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        sequences: list[np.ndarray],
        feature_names: list[str],
        convergence_epochs: list[float | None] | None = None,
        epochs: list[np.ndarray] | None = None,
    ) -> TrainingMap:
        """Fit the map to runs of shape (T_i, n_features); returns self.

        ``convergence_epochs`` (one per run, None = never converged) drives the detour
        analysis; ``epochs`` (one array of length T_i per run, default 0..T_i-1) labels the
        checkpoints for plotting.
        """
        self._check_params()
        runs = self._validate_runs(sequences, feature_names)
        self.feature_names_in_ = list(feature_names)
        self.n_runs_ = len(runs)
        self.lengths_ = np.array([len(r) for r in runs])
        self.epochs_ = self._validate_epochs(epochs, self.lengths_)
        self.convergence_epochs_ = self._validate_convergence(convergence_epochs, len(runs))

        z_runs, kept = standardise_runs(runs, self.feature_names_in_, self.scaling)
        self.feature_names_ = [self.feature_names_in_[j] for j in kept]

        rng = np.random.default_rng(self.random_state)
        self.n_fits_ = self.n_unconverged_fits_ = self.n_failed_restarts_ = 0
        self._select_n_states(z_runs, rng)

        X_all = np.concatenate(z_runs)
        model, _ = self._fit_best(X_all, self.lengths_, self.n_states_, rng)
        if model is None:
            raise RuntimeError(f"every restart of the {self.n_states_}-state refit failed")
        _, path = model.decode(X_all, self.lengths_)
        self.model_, path = self._relabel(model, path)
        self.paths_ = np.split(path, np.cumsum(self.lengths_)[:-1])
        self._summarise(np.concatenate(runs), path)
        return self

    def _check_params(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}")
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {_COVARIANCE_TYPES}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError("heldout_fraction must be in [0, 1)")
        if self.n_restarts < 1:
            raise ValueError("n_restarts must be >= 1")
        if self.min_dwell < 1:
            raise ValueError(f"min_dwell must be >= 1, got {self.min_dwell}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if len(self.n_states_range) == 0 or min(self.n_states_range) < 1:
            raise ValueError("n_states_range must be a non-empty range of positive integers")

    @staticmethod
    def _validate_runs(sequences: list[np.ndarray], feature_names: list[str]) -> list[np.ndarray]:
        if len(sequences) == 0:
            raise ValueError("need at least one run")
        runs = []
        for i, seq in enumerate(sequences):
            run = np.asarray(seq, dtype=np.float64)
            if run.ndim != 2 or run.shape[1] != len(feature_names):
                raise ValueError(
                    f"run {i} has shape {run.shape}; expected (T, {len(feature_names)}) "
                    "to match feature_names"
                )
            if run.shape[0] < 2:
                raise ValueError(f"run {i} has {run.shape[0]} time points; need at least 2")
            bad = ~np.isfinite(run)
            if bad.any():
                j = int(np.nonzero(bad.any(axis=0))[0][0])
                raise ValueError(
                    f"run {i}, feature {feature_names[j]!r} contains NaN or infinite values"
                )
            runs.append(run)
        return runs

    @staticmethod
    def _validate_epochs(epochs: list[np.ndarray] | None, lengths: np.ndarray) -> list[np.ndarray]:
        if epochs is None:
            return [np.arange(n, dtype=np.float64) for n in lengths]
        if len(epochs) != len(lengths):
            raise ValueError(f"got {len(epochs)} epoch arrays for {len(lengths)} runs")
        out = []
        for i, (ep, n) in enumerate(zip(epochs, lengths, strict=True)):
            ep = np.asarray(ep, dtype=np.float64)
            if ep.shape != (n,):
                raise ValueError(f"run {i}: epochs has shape {ep.shape}, expected ({n},)")
            out.append(ep)
        return out

    @staticmethod
    def _validate_convergence(conv: list[float | None] | None, n_runs: int) -> np.ndarray:
        if conv is None:
            return np.full(n_runs, np.nan)
        if len(conv) != n_runs:
            raise ValueError(f"got {len(conv)} convergence epochs for {n_runs} runs")
        return np.array([np.nan if c is None else float(c) for c in conv])

    def _fit_best(
        self, X: np.ndarray, lengths: np.ndarray, n_states: int, rng: np.random.Generator
    ) -> tuple[GaussianHMM | None, float]:
        """Best of n_restarts EM fits (by log-likelihood on X), or (None, -inf) if all fail.

        Each restart seeds the means with a single k-means++ / Lloyd run under its own seed
        (hmmlearn's default runs k-means ten times per fit, which dominated the run time;
        the restarts already supply the diversity). EM stops when the log-likelihood gain
        per time point falls below ``tol``. Restarts that end degenerate (hmmlearn rejects
        a state with no outgoing transitions) are discarded and counted. BLAS and OpenMP run
        single-threaded during the fits: k-means and hmmlearn make many small calls for which
        threads only add overhead (both ran ~10x slower with 2 threads on a busy 2-core box).
        """
        best, best_ll = None, -np.inf
        if n_states > len(X):
            return best, best_ll
        for seed in rng.integers(0, 2**31 - 1, size=self.n_restarts):
            model = GaussianHMM(
                n_components=n_states,
                covariance_type=self.covariance_type,
                n_iter=self.n_iter,
                tol=self.tol * len(X),
                random_state=int(seed),
                init_params="stc",
            )
            try:
                with (
                    warnings.catch_warnings(),
                    _quiet_hmmlearn(),
                    threadpool_limits(limits=1),
                ):
                    warnings.simplefilter("ignore", RuntimeWarning)
                    model.means_ = (
                        KMeans(n_clusters=n_states, n_init=1, random_state=int(seed))
                        .fit(X)
                        .cluster_centers_
                    )
                    model.fit(X, lengths)
                    ll = model.score(X, lengths)
            except (ValueError, np.linalg.LinAlgError):
                self.n_failed_restarts_ += 1
                continue
            self.n_fits_ += 1
            history = model.monitor_.history  # hmmlearn's `converged` is also True at n_iter
            gain = history[-1] - history[-2] if len(history) >= 2 else np.inf
            self.n_unconverged_fits_ += int(gain >= model.monitor_.tol)
            if np.isfinite(ll) and ll > best_ll:
                best, best_ll = model, float(ll)
        return best, best_ll

    def _select_n_states(self, z_runs: list[np.ndarray], rng: np.random.Generator) -> None:
        """Choose n_states_ by BIC = -2 log L(held-out) + k ln T(held-out)."""
        n_runs = len(z_runs)
        n_heldout = min(n_runs - 1, max(1, round(self.heldout_fraction * n_runs)))
        if self.heldout_fraction == 0 or n_runs < 2:
            if n_runs < 2:
                warnings.warn(
                    "a single run leaves none to hold out; choosing n_states by BIC on the "
                    "training data",
                    TrainingMapWarning,
                    stacklevel=3,
                )
            n_heldout = 0
        order = rng.permutation(n_runs)
        heldout = np.sort(order[:n_heldout])
        fit = np.sort(order[n_heldout:])
        self.heldout_runs_, self.fit_runs_ = heldout, fit
        self.selection_on_heldout_ = n_heldout > 0
        eval_runs = heldout if n_heldout > 0 else fit

        X_fit = np.concatenate([z_runs[i] for i in fit])
        len_fit = self.lengths_[fit]
        X_eval = np.concatenate([z_runs[i] for i in eval_runs])
        len_eval = self.lengths_[eval_runs]

        self.bic_: dict[int, float] = {}
        self.heldout_loglik_: dict[int, float] = {}
        for n in self.n_states_range:
            model, _ = self._fit_best(X_fit, len_fit, int(n), rng)
            if model is None:
                warnings.warn(
                    f"every restart with {n} states failed; skipping n = {n}",
                    TrainingMapWarning,
                    stacklevel=3,
                )
                self.bic_[int(n)] = math.inf
                self.heldout_loglik_[int(n)] = -math.inf
                continue
            self.heldout_loglik_[int(n)] = float(model.score(X_eval, len_eval))
            # hmmlearn's own BIC, -2 log L + k ln T, on the held-out runs (k: the model's free
            # parameters, n_free_parameters; equal to the count hmmlearn uses, tested)
            self.bic_[int(n)] = float(model.bic(X_eval, len_eval))
        if all(math.isinf(b) for b in self.bic_.values()):
            raise RuntimeError("model selection failed for every number of states")
        self.n_states_ = min(self.bic_, key=self.bic_.__getitem__)

    def _relabel(self, model: GaussianHMM, path: np.ndarray) -> tuple[GaussianHMM, np.ndarray]:
        """Renumber states by mean normalised time of their checkpoints (see module doc)."""
        rel_time = np.concatenate([np.linspace(0.0, 1.0, n) for n in self.lengths_])
        n = model.n_components
        centre = np.array(
            [rel_time[path == s].mean() if np.any(path == s) else np.inf for s in range(n)]
        )
        order = np.argsort(centre, kind="stable")  # order[new] = old
        new_of_old = np.empty(n, dtype=int)
        new_of_old[order] = np.arange(n)
        covars = model.covars_  # full (n, d, d) matrices whatever the covariance type
        if self.covariance_type == "diag":
            covars = np.array([np.diag(c) for c in covars])
        model.startprob_ = model.startprob_[order]
        model.transmat_ = model.transmat_[np.ix_(order, order)]
        model.means_ = model.means_[order]
        model.covars_ = covars[order]
        return model, new_of_old[path]

    # ---------------------------------------------------------------- summaries

    def _summarise(self, raw: np.ndarray, path: np.ndarray) -> None:
        n = self.n_states_
        counts = np.bincount(path, minlength=n)
        self.occupancy_ = counts / counts.sum()
        self.state_means_ = np.full((n, raw.shape[1]), np.nan)
        for s in range(n):
            if counts[s]:
                self.state_means_[s] = raw[path == s].mean(axis=0)

        self.visited_ = dwell_visits(self.paths_, n, self.min_dwell)
        self.time_share_ = np.zeros((self.n_runs_, n))
        pair_counts: dict[tuple[int, int], int] = {}
        for i, p in enumerate(self.paths_):
            self.time_share_[i] = np.bincount(p, minlength=n) / len(p)
            for a, b in zip(p[:-1], p[1:], strict=True):
                if a != b:
                    pair_counts[(int(a), int(b))] = pair_counts.get((int(a), int(b)), 0) + 1
        self.transitions_ = [
            Transition(a, b, float(self.model_.transmat_[a, b]), c)
            for (a, b), c in sorted(pair_counts.items())
        ]
        self.detour_tests_ = detour_tests(self.visited_, self.convergence_epochs_, self.alpha)
        self.time_tests_ = time_share_tests(self.time_share_, self.convergence_epochs_, self.alpha)
        self.states_ = [self._state_summary(s) for s in range(n)]
        self.detours_ = [s.id for s in self.states_ if s.detour]
        self.n_censored_ = int(np.isnan(self.convergence_epochs_).sum())

    def _state_summary(self, s: int) -> StateSummary:
        conv = self.convergence_epochs_
        observed = np.isfinite(conv)
        visits = self.visited_[:, s]
        vis_conv, oth_conv = conv[visits & observed], conv[~visits & observed]
        mw, sp = self.detour_tests_, self.time_tests_
        effect = mw.effect[s]
        return StateSummary(
            id=s,
            means={
                name: _optional_float(v)
                for name, v in zip(self.feature_names_in_, self.state_means_[s], strict=True)
            },
            occupancy=float(self.occupancy_[s]),
            visited_runs=[int(i) for i in np.nonzero(visits)[0]],
            obligatory=bool(visits.all()),
            detour=mw.significant[s],
            p_value=mw.p_value[s],
            p_value_holm=mw.p_value_holm[s],
            later_for_visitors=None if effect is None else effect > 0,
            rank_biserial=effect,
            time_corr=sp.effect[s],
            time_p_value=sp.p_value[s],
            time_p_value_holm=sp.p_value_holm[s],
            mean_convergence_epoch_visitors=(float(vis_conv.mean()) if len(vis_conv) else None),
            mean_convergence_epoch_others=float(oth_conv.mean()) if len(oth_conv) else None,
            n_censored_visitors=int((visits & ~observed).sum()),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the fitted map (NaN/inf become None)."""
        check_is_fitted(self, "model_")
        return {
            "n_states": int(self.n_states_),
            "scaling": self.scaling,
            "bic": {str(n): _optional_float(b) for n, b in self.bic_.items()},
            "selection_on_heldout": bool(self.selection_on_heldout_),
            "transitions": [
                {"from": t.source, "to": t.target, "probability": t.probability, "count": t.count}
                for t in self.transitions_
            ],
            "states": [asdict(s) for s in self.states_],
            "feature_names": list(self.feature_names_in_),
            "modelled_features": list(self.feature_names_),
            "n_runs": int(self.n_runs_),
            "n_censored": int(self.n_censored_),
            "min_dwell": int(self.min_dwell),
            "alpha": float(self.alpha),
            "tests": {
                "detour": "two-sided Mann-Whitney U, visitors vs. other runs, Holm-adjusted "
                "across the states tested; never-converged runs ranked latest",
                "time_share": "Spearman rho, share of checkpoints in the state vs. convergence "
                "epoch, Holm-adjusted across the states tested; never-converged runs ranked "
                "latest",
                "n_detour_tests": sum(p is not None for p in self.detour_tests_.p_value),
                "n_time_share_tests": sum(p is not None for p in self.time_tests_.p_value),
            },
        }


def check_map_options(
    max_states: int,
    restarts: int,
    covariance: str,
    scaling: str,
    min_dwell: int,
    threads: int | None = None,
) -> None:
    """Refuse options :func:`build_map` cannot use, in one line each (GrokscopeError)."""
    if covariance not in ("diag", "full"):
        raise GrokscopeError(f"--covariance must be diag or full, got {covariance!r}")
    if max_states < 1 or restarts < 1:
        raise GrokscopeError("--max-states and --restarts must be >= 1")
    if scaling.replace("-", "_") not in SCALINGS:
        raise GrokscopeError(f"--scaling must be per-run or pooled, got {scaling!r}")
    if min_dwell < 1:
        raise GrokscopeError(f"--min-dwell must be >= 1, got {min_dwell}")
    if threads is not None and threads < 0:
        raise GrokscopeError(f"--threads must be >= 0, got {threads}")
