"""The perturbation cascade on planted predictors: the exact predictor of each level."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.measures.levels import perturbation_cascade, perturbed_pairs
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
