"""Planted-truth tests for grokscope.dynamics.hmm (Hu et al., TMLR 2023 training maps)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from grokscope.dynamics.hmm import (
    TrainingMap,
    TrainingMapWarning,
    convergence_ranks,
    detour_tests,
    dwell_visits,
    holm_adjust,
    n_free_parameters,
    runs_from_table,
    standardise_runs,
    time_share_tests,
)

FEATURES = ["f0", "f1", "f2", "f3"]
START, DETOUR, FINAL = 0, 1, 2
PLANTED_TRANSITIONS = {(START, DETOUR), (START, FINAL), (DETOUR, FINAL)}
# Raw-unit state means (noise sd 1). The detour sits at 0.7 of the way from START to FINAL,
# which is about where a non-detour run's per-run mean lies; so adding the detour to a run
# barely moves that run's z-score centre and the three states keep their places after the
# paper's per-run z-scoring (checked in test_planted_states_survive_per_run_zscore).
PLANTED_MEANS = 4.0 * np.array([[0, 0, 0, 0], [0.7, 0.7, 0.7, -0.7], [1, 1, 1, -1]], dtype=float)


def sample_planted_runs(
    n_runs: int = 24, seed: int = 0, means: np.ndarray = PLANTED_MEANS
) -> tuple[list[np.ndarray], list[np.ndarray], list[float], list[np.ndarray], np.ndarray]:
    """Runs from a 3-state left-to-right explicit-duration HMM: START -> (DETOUR) -> FINAL.

    A random half of the runs passes through DETOUR. Durations are drawn from narrow uniform
    ranges (rather than geometric ones) so that time shares, and hence per-run z-scores, are
    similar across runs. The convergence epoch is the epoch at which a run enters FINAL, so
    detour runs converge later. Run lengths differ.
    """
    rng = np.random.default_rng(seed)
    detour = np.zeros(n_runs, dtype=bool)
    detour[rng.permutation(n_runs)[: n_runs // 2]] = True
    sequences, states, convergence, epochs = [], [], [], []
    for i in range(n_runs):
        t_start = int(rng.integers(32, 38, endpoint=True))
        t_detour = int(rng.integers(32, 38, endpoint=True)) if detour[i] else 0
        length = int(rng.integers(110, 120, endpoint=True)) + t_detour
        s = np.full(length, FINAL)
        s[:t_start] = START
        s[t_start : t_start + t_detour] = DETOUR
        ep = 10.0 * np.arange(length)
        sequences.append(means[s] + rng.standard_normal((length, len(FEATURES))))
        states.append(s)
        convergence.append(float(ep[t_start + t_detour]))
        epochs.append(ep)
    return sequences, states, convergence, epochs, detour


def state_mapping(tm: TrainingMap, states: list[np.ndarray]) -> dict[int, int]:
    """Fitted state -> planted state by majority vote over time points."""
    fitted, planted = np.concatenate(tm.paths_), np.concatenate(states)
    return {
        int(k): int(np.bincount(planted[fitted == k], minlength=3).argmax())
        for k in np.unique(fitted)
    }


@pytest.fixture(scope="module")
def planted():
    return sample_planted_runs()


@pytest.fixture(scope="module")
def fitted(planted):
    sequences, _, convergence, epochs, _ = planted
    tm = TrainingMap(n_states_range=range(1, 6), n_restarts=3, n_iter=50, random_state=0)
    return tm.fit(sequences, FEATURES, convergence, epochs)


def test_planted_states_survive_per_run_zscore(planted) -> None:
    sequences, states, _, _, _ = planted
    z_runs, kept = standardise_runs(sequences, FEATURES)
    assert kept == [0, 1, 2, 3]
    # Per run and state, the z-scored centre; balls of radius `spread` around the states'
    # average centres must not overlap, so no state is split by run type.
    centres: dict[int, list[np.ndarray]] = {START: [], DETOUR: [], FINAL: []}
    for z, s in zip(z_runs, states, strict=True):
        for k in centres:
            if (s == k).any():
                centres[k].append(z[s == k].mean(axis=0))
    means = {k: np.mean(c, axis=0) for k, c in centres.items()}
    spread = max(np.linalg.norm(c - means[k]) for k in centres for c in centres[k])
    gap = min(np.linalg.norm(means[a] - means[b]) for a, b in [(0, 1), (0, 2), (1, 2)])
    assert spread < gap / 2


def test_planted_map_recovered(fitted, planted) -> None:
    _, states, _, _, _ = planted
    tm = fitted
    assert tm.n_states_ == 3
    assert tm.selection_on_heldout_
    assert tm.bic_[3] < min(tm.bic_[2], tm.bic_[4])
    mapping = state_mapping(tm, states)
    assert sorted(mapping.values()) == [START, DETOUR, FINAL]  # a bijection
    accuracy = np.mean(
        np.vectorize(mapping.get)(np.concatenate(tm.paths_)) == np.concatenate(states)
    )
    assert accuracy > 0.97

    decoded = {(mapping[t.source], mapping[t.target]) for t in tm.transitions_}
    assert decoded == PLANTED_TRANSITIONS  # all planted ones, none with probability 0
    for t in tm.transitions_:
        assert t.source != t.target and t.count > 0
        assert 0.0 < t.probability <= 1.0

    by_planted = {mapping[s.id]: s for s in tm.states_}
    assert by_planted[DETOUR].detour and not by_planted[DETOUR].obligatory
    assert by_planted[DETOUR].later_for_visitors
    assert not by_planted[START].detour and by_planted[START].obligatory
    assert not by_planted[FINAL].detour and by_planted[FINAL].obligatory
    assert tm.detours_ == [by_planted[DETOUR].id]
    assert by_planted[DETOUR].time_corr > 0.5
    for s in tm.states_:
        for p in (s.p_value, s.time_p_value):
            assert p is None or 0.0 <= p <= 1.0
    assert by_planted[DETOUR].p_value < 0.01


def test_state_means_in_original_units(fitted, planted) -> None:
    _, states, _, _, _ = planted
    mapping = state_mapping(fitted, states)
    for k, planted_state in mapping.items():
        np.testing.assert_allclose(fitted.state_means_[k], PLANTED_MEANS[planted_state], atol=0.3)
    assert fitted.occupancy_.sum() == pytest.approx(1.0)


def test_relabelled_model_decodes_to_paths(fitted, planted) -> None:
    sequences = planted[0]
    z_runs, _ = standardise_runs(sequences, FEATURES)
    path = fitted.model_.predict(np.concatenate(z_runs), fitted.lengths_)
    np.testing.assert_array_equal(path, np.concatenate(fitted.paths_))
    assert [len(p) for p in fitted.paths_] == [len(s) for s in sequences]
    assert len(set(fitted.lengths_)) > 1  # the planted runs have unequal lengths
    # States are numbered by when they are occupied: runs start in state 0.
    assert int(np.argmax(fitted.model_.startprob_)) == 0


def test_to_dict_is_json_serialisable(fitted) -> None:
    d = json.loads(json.dumps(fitted.to_dict(), allow_nan=False))
    assert d["n_states"] == 3
    assert set(d["bic"]) == {"1", "2", "3", "4", "5"}
    assert {"from", "to", "probability", "count"} <= set(d["transitions"][0])
    state = d["states"][0]
    for key in (
        "id",
        "means",
        "occupancy",
        "visited_runs",
        "obligatory",
        "detour",
        "p_value",
        "p_value_holm",
        "rank_biserial",
        "time_corr",
        "time_p_value",
        "time_p_value_holm",
        "mean_convergence_epoch_visitors",
    ):
        assert key in state
    assert set(state["means"]) == set(FEATURES)
    assert d["feature_names"] == FEATURES
    assert d["min_dwell"] == 2 and d["alpha"] == 0.05
    # one optional state (the detour) is tested; all three states have a time-share test
    assert d["tests"]["n_detour_tests"] == 1 and d["tests"]["n_time_share_tests"] == 3


def test_censored_runs_are_ranked_latest(planted) -> None:
    sequences, _, convergence, epochs, detour = planted
    censored = [i for i in range(len(sequences)) if detour[i]][:3]
    conv = [None if i in censored else c for i, c in enumerate(convergence)]
    tm = TrainingMap(n_states_range=[3], n_restarts=3, n_iter=50).fit(
        sequences, FEATURES, conv, epochs
    )
    assert tm.n_censored_ == 3
    detour_state = next(s for s in tm.states_ if not s.obligatory)
    assert detour_state.n_censored_visitors == 3
    visitors = [convergence[i] for i in detour_state.visited_runs if i not in censored]
    assert detour_state.mean_convergence_epoch_visitors == pytest.approx(np.mean(visitors))
    assert detour_state.detour
    # the censored visitors are in the test, at the top rank: the same U as with their
    # convergence epochs replaced by a number later than every other run's
    later = [1e9 if i in censored else c for i, c in enumerate(convergence)]
    visited = np.isin(np.arange(len(conv)), detour_state.visited_runs)
    expected = stats.mannwhitneyu(
        np.array(later)[visited], np.array(later)[~visited], alternative="two-sided"
    )
    assert detour_state.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_constant_features_warn_and_drop(planted) -> None:
    sequences, _, convergence, _, _ = planted
    seqs = [np.column_stack([s, np.full(len(s), 7.0)]) for s in sequences]
    seqs[0][:, 0] = 1.5  # f0 constant within run 0 only
    names = [*FEATURES, "const"]
    with pytest.warns(TrainingMapWarning) as record:
        tm = TrainingMap(n_states_range=[3], n_restarts=3, n_iter=50).fit(seqs, names, convergence)
    messages = " ".join(str(w.message) for w in record)
    assert "dropped" in messages and "'const'" in messages
    assert "run 0: 'f0'" in messages
    assert tm.feature_names_ == FEATURES
    assert tm.model_.means_.shape == (3, 4)
    np.testing.assert_allclose(tm.state_means_[:, 4], 7.0)  # dropped, yet reported raw

    with pytest.warns(TrainingMapWarning):
        z_runs, kept = standardise_runs(seqs[:2], names)
    assert kept == [0, 1, 2, 3]
    assert np.all(z_runs[0][:, 0] == 0.0)
    assert z_runs[1][:, 0].std() == pytest.approx(1.0)


def test_nan_raises_clear_error(planted) -> None:
    sequences = [s.copy() for s in planted[0][:4]]
    sequences[2][5, 1] = np.nan
    with pytest.raises(ValueError, match=r"run 2, feature 'f1'"):
        TrainingMap(n_states_range=[2]).fit(sequences, FEATURES)


def test_too_short_or_misshaped_runs_raise(planted) -> None:
    sequences = [s.copy() for s in planted[0][:3]]
    with pytest.raises(ValueError, match="at least 2"):
        TrainingMap(n_states_range=[2]).fit([*sequences, sequences[0][:1]], FEATURES)
    with pytest.raises(ValueError, match="expected"):
        TrainingMap(n_states_range=[2]).fit(sequences, FEATURES[:3])


def test_single_run_falls_back_to_training_bic(planted) -> None:
    sequences, _, convergence, epochs, detour = planted
    i = int(np.nonzero(detour)[0][0])
    with pytest.warns(TrainingMapWarning, match="single run"):
        tm = TrainingMap(n_states_range=range(1, 5), n_restarts=2, n_iter=50).fit(
            [sequences[i]], FEATURES, [convergence[i]], [epochs[i]]
        )
    assert not tm.selection_on_heldout_
    assert tm.n_states_ == 3
    assert all(s.obligatory and s.p_value is None and not s.detour for s in tm.states_)


def test_n_free_parameters() -> None:
    # 3 states, 4 features: start 2 + transitions 6 + means 12 + covariances 12 or 30.
    assert n_free_parameters(3, 4, "diag") == 32
    assert n_free_parameters(3, 4, "full") == 50
    assert n_free_parameters(1, 2, "diag") == 4
    # the count hmmlearn's own bic uses (the map's model choice calls GaussianHMM.bic)
    from hmmlearn.hmm import GaussianHMM

    x = np.random.default_rng(0).normal(size=(60, 4))
    for cov in ("diag", "full"):
        model = GaussianHMM(3, covariance_type=cov, random_state=0, n_iter=3).fit(x)
        assert sum(model._get_n_fit_scalars_per_param().values()) == n_free_parameters(3, 4, cov)


def test_runs_from_table() -> None:
    table = pd.DataFrame(
        {
            "run": [1, 0, 0, 1, 0],
            "epoch": [5, 2, 0, 0, 1],
            "a": [10, 2, 0, 9, 1],
            "b": [0.5, 0.2, 0.0, 0.4, 0.1],
        }
    )
    sequences, epochs, run_ids = runs_from_table(table, ["a", "b"])
    assert run_ids == [0, 1]
    np.testing.assert_array_equal(epochs[0], [0, 1, 2])
    np.testing.assert_array_equal(sequences[1], [[9, 0.4], [10, 0.5]])


def test_full_covariance_relabelling(planted) -> None:
    sequences, states, convergence, _, detour = planted
    sequences, states, convergence = sequences[:12], states[:12], convergence[:12]
    assert 3 <= detour[:12].sum() <= 9  # both groups present in the subset
    tm = TrainingMap(n_states_range=[3], covariance_type="full", n_restarts=3, n_iter=50).fit(
        sequences, FEATURES, convergence
    )
    z_runs, _ = standardise_runs(sequences, FEATURES)
    path = tm.model_.predict(np.concatenate(z_runs), tm.lengths_)
    np.testing.assert_array_equal(path, np.concatenate(tm.paths_))
    assert tm.model_.covars_.shape == (3, 4, 4)
    mapping = state_mapping(tm, states)
    assert [mapping[s] for s in tm.detours_] == [DETOUR]


def test_pooled_scaling_keeps_a_far_detour_as_one_state() -> None:
    """A detour far off the start-final line shifts the per-run z-score centre of the runs
    that take it, so per-run scaling (the paper's) places the same states differently in
    detour and direct runs; pooled scaling measures every run on one scale and recovers the
    three planted states, each fitted state holding one planted state."""
    far = 4.0 * np.array([[0, 0, 0, 0], [2, -2, 2, 2], [1, 1, 1, -1]], dtype=float)
    sequences, states, convergence, epochs, _ = sample_planted_runs(seed=1, means=far)
    kwargs = dict(n_states_range=range(1, 6), n_restarts=3, n_iter=50, random_state=0)
    pooled = TrainingMap(scaling="pooled", **kwargs).fit(sequences, FEATURES, convergence, epochs)
    assert pooled.n_states_ == 3
    mapping = state_mapping(pooled, states)
    assert sorted(mapping.values()) == [START, DETOUR, FINAL]
    fitted, planted = np.concatenate(pooled.paths_), np.concatenate(states)
    assert np.mean([mapping[int(f)] == p for f, p in zip(fitted, planted, strict=True)]) > 0.97
    inverse = {v: k for k, v in mapping.items()}
    assert pooled.detours_ == [inverse[DETOUR]]
    assert pooled.to_dict()["scaling"] == "pooled"
    # the same data z-scored per run: the detour runs' other states move, and BIC needs more
    # states than were planted to describe them
    per_run = TrainingMap(**kwargs).fit(sequences, FEATURES, convergence, epochs)
    assert per_run.n_states_ > 3


def test_unknown_scaling_is_refused(planted) -> None:
    sequences, _, _, _, _ = planted
    with pytest.raises(ValueError, match="scaling"):
        TrainingMap(scaling="global").fit(sequences, FEATURES)


# ------------------------------------------------------------- detour tests and their error rate

ALPHA = 0.05
N_SIMULATED_MAPS = 400
BUDGET = 1540.0  # epochs; about 20 % of the simulated runs never converge within it


def binomial_bound(rate: float, n: int) -> float:
    """``rate`` plus two binomial standard errors of a share estimated from ``n`` maps."""
    return rate + 2.0 * np.sqrt(rate * (1.0 - rate) / n)


def simulate_visits(
    rng: np.random.Generator, n_runs: int = 40, n_optional: int = 6, effect: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Run-level inputs of the detour tests for one simulated map: (runs x 8) visits and
    convergence epochs.

    States 0 and 7 are obligatory, states 1..6 optional, each visited independently with its
    own probability (state 1: 0.5, the others uniform in [0.15, 0.85]). Log convergence
    epochs are normal (mean 7, sd 0.4, i.e. about 1,100 epochs), shifted by ``effect`` for
    visitors of state 1 only, rounded to a 20-epoch evaluation grid (ties), and censored (NaN)
    beyond ``BUDGET``. With ``effect=0`` no state is associated with convergence.
    """
    p_visit = rng.uniform(0.15, 0.85, n_optional)
    p_visit[0] = 0.5
    optional = rng.random((n_runs, n_optional)) < p_visit
    visited = np.column_stack([np.ones(n_runs, bool), optional, np.ones(n_runs, bool)])
    log_conv = rng.normal(7.0, 0.4, n_runs) + effect * visited[:, 1]
    conv = np.round(np.exp(log_conv) / 20.0) * 20.0
    conv[conv > BUDGET] = np.nan
    return visited, conv


def test_holm_adjust_hand_computed() -> None:
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06
    # (monotone); None is no test and does not count in m = 4.
    assert holm_adjust([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx(
        [0.03, 0.06, None, 0.06, 0.02]
    )
    assert holm_adjust([0.2, 0.6, 0.5]) == pytest.approx([0.6, 1.0, 1.0])  # capped at 1
    assert holm_adjust([0.04]) == [0.04]  # one test: unchanged
    assert holm_adjust([None, None]) == [None, None]
    assert holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.5, 1.2])


def test_holm_adjust_matches_the_sequential_procedure() -> None:
    """Adjusted p < alpha rejects exactly what Holm's sequentially rejective procedure does:
    walk the sorted p-values, reject p_(k) while p_(k) < alpha / (m - k + 1), stop at the
    first that is not."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(1, 10))
        p = rng.uniform(0.0, 0.1, m) ** rng.uniform(0.5, 2.0)
        rejected = np.zeros(m, dtype=bool)
        for k, i in enumerate(np.argsort(p)):
            if p[i] >= ALPHA / (m - k):
                break
            rejected[i] = True
        adjusted = np.array(holm_adjust(list(p)))
        np.testing.assert_array_equal(adjusted < ALPHA, rejected)
        assert np.all(adjusted >= p)


def test_dwell_visits_ignore_lone_checkpoints() -> None:
    paths = [np.array([0, 0, 1, 2, 2, 1, 3, 3, 3]), np.array([0, 3, 3])]
    np.testing.assert_array_equal(dwell_visits(paths, 4, min_dwell=2), [[1, 0, 1, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(dwell_visits(paths, 4, min_dwell=1), [[1, 1, 1, 1], [1, 0, 0, 1]])
    np.testing.assert_array_equal(dwell_visits(paths, 4, min_dwell=3), [[0, 0, 0, 1], [0] * 4])
    with pytest.raises(ValueError, match="min_dwell"):
        dwell_visits(paths, 4, min_dwell=0)


def test_never_converged_runs_rank_latest_and_tie() -> None:
    np.testing.assert_array_equal(
        convergence_ranks([300, None, 100, float("nan"), 300]), [2.5, 4.5, 1, 4.5, 2.5]
    )


def test_no_effect_gives_at_most_alpha_maps_with_a_false_detour() -> None:
    """The family-wise error rate over the optional states of a map, on maps with no effect:
    the share of maps with any detour stays within alpha plus its binomial error. Without the
    Holm adjustment the same maps show a false detour far more often (the reason for it)."""
    rng = np.random.default_rng(0)
    any_holm = any_raw = 0
    for _ in range(N_SIMULATED_MAPS):
        visited, conv = simulate_visits(rng)
        result = detour_tests(visited, conv, ALPHA)
        assert result.p_value[0] is None and result.p_value[7] is None  # obligatory
        any_holm += any(result.significant)
        any_raw += any(
            p is not None and p < ALPHA and e > 0
            for p, e in zip(result.p_value, result.effect, strict=True)
        )
    bound = binomial_bound(ALPHA, N_SIMULATED_MAPS)
    assert any_holm / N_SIMULATED_MAPS <= bound
    assert any_raw / N_SIMULATED_MAPS > bound


def test_no_effect_time_share_tests_hold_alpha() -> None:
    """The same family-wise guarantee for the Spearman time-share tests: time shares drawn
    independently of convergence (Dirichlet, with states some runs never enter)."""
    rng = np.random.default_rng(1)
    any_holm = any_raw = 0
    for _ in range(N_SIMULATED_MAPS):
        visited, conv = simulate_visits(rng)
        share = rng.dirichlet(np.ones(8), len(conv)) * visited
        share /= share.sum(axis=1, keepdims=True)
        result = time_share_tests(share, conv, ALPHA)
        any_holm += any(result.significant)
        any_raw += any(p is not None and p < ALPHA for p in result.p_value)
    bound = binomial_bound(ALPHA, N_SIMULATED_MAPS)
    assert any_holm / N_SIMULATED_MAPS <= bound
    assert any_raw / N_SIMULATED_MAPS > bound


def test_planted_detour_is_found_after_correction() -> None:
    """Visitors of state 1 converge 1.8x later (log shift 0.6, 1.5 sd); many of them never
    converge within the budget. Ranked latest, those runs carry the effect: the detour is found
    after the Holm adjustment in most maps, the other states stay within alpha, and dropping
    the never-converged runs instead would miss it in most maps."""
    rng = np.random.default_rng(2)
    found = false_other = found_dropping = 0
    for _ in range(N_SIMULATED_MAPS):
        visited, conv = simulate_visits(rng, effect=0.6)
        result = detour_tests(visited, conv, ALPHA)
        found += result.significant[1]
        false_other += any(result.significant[2:])
        kept = ~np.isnan(conv)
        found_dropping += detour_tests(visited[kept], conv[kept], ALPHA).significant[1]
    assert found / N_SIMULATED_MAPS > 0.85
    assert false_other / N_SIMULATED_MAPS <= binomial_bound(ALPHA, N_SIMULATED_MAPS)
    assert found_dropping / N_SIMULATED_MAPS < 0.3


def test_detour_of_never_converged_visitors() -> None:
    """Ten runs visit a state and never converge, ten others converge: a detour (rank-biserial
    effect 1, every visitor later), though no visitor has a convergence epoch."""
    visited = np.zeros((20, 3), dtype=bool)
    visited[:, 0] = visited[:, 2] = True
    visited[:10, 1] = True
    conv = [None] * 10 + [float(e) for e in range(100, 1100, 100)]
    result = detour_tests(visited, conv, ALPHA)
    assert result.significant == [False, True, False]
    assert result.effect[1] == pytest.approx(1.0)
    assert result.p_value_holm[1] == result.p_value[1] < 1e-3  # one state tested


def test_map_uses_the_tested_functions(fitted) -> None:
    """The fitted map's p-values, adjusted p-values and detour flags are those of
    detour_tests / time_share_tests on its own visits, time shares and convergence epochs."""
    tm = fitted
    np.testing.assert_array_equal(tm.visited_, dwell_visits(tm.paths_, tm.n_states_, 2))
    mw = detour_tests(tm.visited_, tm.convergence_epochs_, tm.alpha)
    sp = time_share_tests(tm.time_share_, tm.convergence_epochs_, tm.alpha)
    for s in tm.states_:
        assert (s.p_value, s.p_value_holm, s.detour) == (
            mw.p_value[s.id],
            mw.p_value_holm[s.id],
            mw.significant[s.id],
        )
        assert (s.time_corr, s.time_p_value, s.time_p_value_holm) == (
            sp.effect[s.id],
            sp.p_value[s.id],
            sp.p_value_holm[s.id],
        )
        assert s.rank_biserial == mw.effect[s.id]
        assert s.time_p_value_holm is None or s.time_p_value_holm >= s.time_p_value


def test_a_lone_decoded_checkpoint_is_not_a_visit() -> None:
    """A direct run's first FINAL checkpoint moved to the (far) detour's mean is decoded into
    the detour state, alone; it makes the run a visitor only with min_dwell=1."""
    far = 4.0 * np.array([[0, 0, 0, 0], [2, -2, 2, 2], [1, 1, 1, -1]], dtype=float)
    sequences, states, convergence, epochs, detour = sample_planted_runs(seed=1, means=far)
    run = int(np.nonzero(~detour)[0][0])
    sequences[run][np.argmax(states[run] == FINAL)] = far[DETOUR]
    kwargs = dict(n_states_range=[3], n_restarts=3, n_iter=50, random_state=0, scaling="pooled")
    tm = TrainingMap(**kwargs).fit(sequences, FEATURES, convergence, epochs)
    detour_state = next(s for s in tm.states_ if not s.obligatory)
    assert np.sum(tm.paths_[run] == detour_state.id) == 1  # decoded, once
    assert run not in detour_state.visited_runs and detour_state.detour
    loose = TrainingMap(min_dwell=1, **kwargs).fit(sequences, FEATURES, convergence, epochs)
    loose_detour = next(s for s in loose.states_ if s.id == detour_state.id)
    assert run in loose_detour.visited_runs
    with pytest.raises(ValueError, match="min_dwell"):
        TrainingMap(min_dwell=0, n_states_range=[2]).fit(sequences, FEATURES)


def test_small_detour_tests_are_exact_with_ties():
    """3 visitors converging last against 3 others: the exact two-sided p is 2 / C(6, 3) = 0.1
    (the normal approximation would say 0.064); with never-converged runs tied at the end the
    p-value is still the exact enumeration over the 20 splits."""
    from grokscope.dynamics.hmm import detour_tests

    visited = np.array([[True], [True], [True], [False], [False], [False]])
    res = detour_tests(visited, [400, 500, 600, 100, 200, 300])
    assert res.p_value[0] == pytest.approx(0.1)
    tied = detour_tests(visited, [400, None, None, 100, 200, 300])
    assert tied.p_value[0] == pytest.approx(0.1)  # still the most extreme split
