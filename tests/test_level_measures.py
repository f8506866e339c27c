"""The perturbation cascade on planted predictors: the exact predictor of each level."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.measures.levels import (
    level_coefficients,
    perturbation_cascade,
    perturbed_pairs,
    score_levels,
)
from grokscope.tasks.tree_language import level_references, tree_language_task


@pytest.fixture(scope="module")
def ds():
    return tree_language_task(3, 8, 3, 2, 3, 2, True, 100, 0, 100, 150, seed=2)


def planted(ds, level):
    """A 'model' that predicts with the exact level-``level`` predictor."""

    def logp(tokens):
        with np.errstate(divide="ignore"):
            return np.log(level_references(ds, tokens)[level])

    return logp


def test_the_exact_predictor_responds_exactly_as_itself(ds):
    pairs = {k: perturbed_pairs(ds, k, 150) for k in (1, 2, 3)}
    assert all(len(p["tokens"]) > 50 for p in pairs.values())
    out = perturbation_cascade(planted(ds, 3), ds, pairs)
    assert set(out) >= {"cascade_k3_j1", "cascade_k3_j2", "cascade_k3_j3", "cascade_k1_j1"}
    for v in out.values():
        assert v == pytest.approx(1.0, abs=1e-9)


def test_a_predictor_blind_above_level_k_does_not_respond_there(ds):
    pairs = {k: perturbed_pairs(ds, k, 150) for k in (2, 3)}
    marginal = perturbation_cascade(planted(ds, 0), ds, pairs)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in marginal.values())
    phrase = perturbation_cascade(planted(ds, 1), ds, pairs)
    # level-1 positions respond (the phrase context changed); first tokens of phrases and
    # sentences do not (a level-1 predictor reads no context there)
    assert phrase["cascade_k3_j1"] > 0.3
    assert phrase["cascade_k3_j2"] == pytest.approx(0.0, abs=1e-12)
    assert phrase["cascade_k3_j3"] == pytest.approx(0.0, abs=1e-12)
    sentence = perturbation_cascade(planted(ds, 2), ds, pairs)
    assert sentence["cascade_k3_j2"] > 0.3
    assert sentence["cascade_k3_j3"] == pytest.approx(0.0, abs=1e-12)


def test_twins_differ_only_inside_unit_zero_from_the_perturbed_span(ds):
    pair = perturbed_pairs(ds, 2, 100)
    lay = ds.info["layout"]
    differ = pair["tokens"] != pair["twins"]
    assert differ.any(axis=1).all()
    assert not differ[:, lay.unit != 0].any()
    first = np.argmax(differ, axis=1)
    assert (lay.leaf[first] >= pair["start"]).all()


def observed(ds, tokens, logp_all):
    """Log-probabilities of the observed next tokens at the leaf positions."""
    nxt = tokens[:, 1:]
    leaf = ds.info["layout"].need[1:] >= 0
    return np.take_along_axis(logp_all, nxt[..., None], -1)[..., 0][:, leaf]


@pytest.fixture(scope="module")
def level_logps(ds):
    tokens = ds.splits["gen"].tokens.reshape(len(ds.splits["gen"]), -1)
    with np.errstate(divide="ignore"):
        refs = np.log(level_references(ds, tokens))
    obs = np.stack([observed(ds, tokens, refs[k]) for k in range(4)])
    return obs


@pytest.mark.parametrize("j", [0, 1, 2, 3])
def test_level_coefficients_of_each_exact_predictor_are_ones_then_zeros(level_logps, j):
    coef, fit = level_coefficients(level_logps[j], level_logps)
    np.testing.assert_allclose(coef, [1.0 if k <= j else 0.0 for k in (1, 2, 3)], atol=1e-9)
    if j:
        assert fit == pytest.approx(1.0, abs=1e-9)


def test_level_coefficients_are_specific_to_their_level_and_do_not_force_an_order(level_logps):
    # a planted 'model' that carries level 2's evidence and not level 1's: the coefficients
    # say so, so an order of levels read from them is a finding, not a construction
    d = np.diff(level_logps, axis=0)
    coef, _ = level_coefficients(level_logps[0] + d[1], level_logps)
    np.testing.assert_allclose(coef, [0.0, 1.0, 0.0], atol=1e-9)
    # half of every level: one half each
    coef, _ = level_coefficients(level_logps[0] + 0.5 * d.sum(0), level_logps)
    np.testing.assert_allclose(coef, [0.5, 0.5, 0.5], atol=1e-9)


def test_level_coefficients_of_unrelated_noise_are_near_zero(level_logps):
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, level_logps[0].shape)
    coef, fit = level_coefficients(level_logps[0] + noise, level_logps)
    assert np.abs(coef).max() < 0.1
    assert fit < 0.05


def test_the_positional_progress_is_not_level_specific_but_the_coefficient_is(ds):
    """The defect the coefficient fixes: on the positions that need level 1, the exact full
    predictor scores f_1 above 1 (higher levels also inform them); its c_1 is exactly 1."""
    tokens = ds.splits["gen"].tokens.reshape(len(ds.splits["gen"]), -1)
    with np.errstate(divide="ignore"):
        refs = level_references(ds, tokens)
        logp = np.log(refs[3])
    scores = score_levels(logp, tokens, refs, ds.info["layout"].need, 3)
    f1 = (scores["ceil_l1"] - scores["loss_l1"]) / (scores["ceil_l1"] - scores["floor_l1"])
    assert f1 > 1.05
    assert scores["coef_l1"] == pytest.approx(1.0, abs=1e-9)
    assert scores["coef_fit"] == pytest.approx(1.0, abs=1e-9)
