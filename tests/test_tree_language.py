"""Tree languages: the grammar, the filtered samplers and the exact per-level predictors, checked
against brute-force enumeration of every tree of tiny grammars."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest
from scipy.stats import chi2

from grokscope.tasks.tree_language import (
    GrammarError,
    bayes_predictive,
    layout,
    level_references,
    make_grammar,
    node_given_root,
    node_priors,
    perturb,
    position_levels,
    sample_units,
    tree_language_task,
)


def enumerate_language(g, k, rule="marginal"):
    """{leaf tuple: probability} of the level-k filtered language, every tree enumerated: the
    level-k nodes independently from their marginals (``marginal``), or independently given
    each root symbol (``garnier_brun``), then every rule choice below them."""
    priors = node_priors(g)
    given = node_given_root(g, k)
    n_top = g.branching ** (g.levels - k)
    dist: dict[tuple, float] = defaultdict(float)

    def p_top(top):
        if rule == "marginal":
            return np.prod([priors[k][i, a] for i, a in enumerate(top)])
        return np.mean([np.prod([given[r, i, a] for i, a in enumerate(top)])
                        for r in range(g.vocab)])  # fmt: skip

    def expand(symbols, lev):
        """[(leaves, prob)] of the level-`lev` symbols' expansions."""
        if lev == 0:
            return [(tuple(symbols), 1.0)]
        out = []
        for choice in itertools.product(range(g.rules_per_symbol), repeat=len(symbols)):
            pairs = zip(symbols, choice, strict=True)
            kids = [c for sym, r in pairs for c in g.rules[lev - 1][sym, r]]
            p = (1.0 / g.rules_per_symbol) ** len(symbols)
            out += [(leaves, p * q) for leaves, q in expand(kids, lev - 1)]
        return out

    for top in itertools.product(range(g.vocab), repeat=n_top):
        weight = p_top(top)
        if weight == 0:
            continue
        for leaves, p in expand(list(top), k):
            dist[leaves] += weight * p
    return dict(dist)


def conditional(dist, prefix, v):
    """P(next token | prefix) under an enumerated distribution."""
    j = len(prefix)
    out = np.zeros(v)
    for leaves, p in dist.items():
        if leaves[:j] == tuple(prefix):
            out[leaves[j]] += p
    return out / out.sum()


TINY = [(2, 2, 2, 2), (3, 2, 2, 2), (2, 3, 2, 2), (1, 3, 3, 2)]  # (levels, vocab, rules, s)


def test_rules_are_disjoint_and_a_grammar_that_cannot_exist_is_refused():
    g = make_grammar(3, 8, 4, 2, seed=1)
    for r in g.rules:
        tuples = {tuple(t) for t in r.reshape(-1, 2)}
        assert len(tuples) == 8 * 4
    with pytest.raises(GrammarError, match="only 16 exist"):
        make_grammar(2, 4, 5, 2, seed=0)
    assert make_grammar(2, 4, 4, 2, seed=0).rules[0].shape == (4, 4, 2)


@pytest.mark.parametrize("levels,vocab,rules,s", TINY)
def test_exact_predictors_equal_brute_force_at_every_level(levels, vocab, rules, s):
    g = make_grammar(levels, vocab, rules, s, seed=3)
    full = enumerate_language(g, levels)
    assert abs(sum(full.values()) - 1) < 1e-12
    strings = np.array(sorted(full))
    for k in range(levels + 1):
        filtered = enumerate_language(g, k)
        q = bayes_predictive(g, strings, k)
        width = s**k
        for row, leaves in enumerate(strings):
            for j in range(g.leaves):
                # the level-k predictor is the filtered language's conditional ...
                want = conditional(filtered, leaves[:j], vocab)
                np.testing.assert_allclose(q[row, j], want, atol=1e-12)
                # ... which is the full language's conditional on the block's own past
                block = j - j % width
                sub = defaultdict(float)
                for other, p in full.items():
                    sub[other[block:]] += p
                want_full = conditional(dict(sub), leaves[block:j], vocab)
                np.testing.assert_allclose(q[row, j], want_full, atol=1e-12)


def test_samplers_draw_the_enumerated_distributions():
    g = make_grammar(2, 3, 2, 2, seed=5)
    n = 60_000
    for k in (2, 1, 0):
        exact = enumerate_language(g, k)
        lat = sample_units(g, n, np.random.default_rng(k), k)
        counts = Counter(map(tuple, lat[0]))
        assert set(counts) <= set(exact)
        tv = 0.5 * sum(abs(counts.get(x, 0) / n - p) for x, p in exact.items())
        assert tv < 0.02, (k, tv)
        for lev in range(k + 1, 3):
            assert (lat[lev] == -1).all()


def _mi_test(a, b):
    """Plug-in mutual information (nats) of paired discrete samples and its G-test p-value."""
    n = len(a)
    ia, a = np.unique(a, return_inverse=True, axis=0)
    ib, b = np.unique(b, return_inverse=True, axis=0)
    joint = np.zeros((len(ia), len(ib)))
    np.add.at(joint, (a.ravel(), b.ravel()), 1)
    p = joint / n
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())
    dof = (len(ia) - 1) * (len(ib) - 1)
    return mi, float(chi2.sf(2 * n * mi, dof))


def test_filtered_data_have_no_mutual_information_beyond_the_level_range():
    """Measured on samples: at filter level k, two neighbouring level-k blocks are independent
    (G-test does not reject, and the exact mutual information from enumeration is 0); in the full
    language they are not (a planted effect the same test detects)."""
    g = make_grammar(2, 3, 2, 2, seed=5)
    n = 40_000
    full = sample_units(g, n, np.random.default_rng(1))[0]
    filt = sample_units(g, n, np.random.default_rng(2), 1)[0]
    mi_full, p_full = _mi_test(full[:, :2], full[:, 2:])
    mi_filt, p_filt = _mi_test(filt[:, :2], filt[:, 2:])
    assert p_full < 1e-6 and mi_full > 0.05
    assert p_filt > 1e-3 and mi_filt < 0.005
    # inside a block the correlations survive filtering
    mi_in, p_in = _mi_test(filt[:, :1], filt[:, 1:2])
    assert p_in < 1e-6
    # exact: the enumerated filtered language factorises over blocks
    exact = enumerate_language(g, 1)
    left, right = defaultdict(float), defaultdict(float)
    for x, p in exact.items():
        left[x[:2]] += p
        right[x[2:]] += p
    for x, p in exact.items():
        assert abs(p - left[x[:2]] * right[x[2:]]) < 1e-12


def test_entropy_plateaus_fall_with_the_level():
    """H_0 > H_1 > ... > H_L: each level's predictor, scored on the full language."""
    g = make_grammar(3, 6, 3, 2, seed=2)
    leaves = sample_units(g, 4000, np.random.default_rng(0))[0]
    rows = np.arange(len(leaves))[:, None]
    cols = np.arange(g.leaves)[None, :]
    h = [
        float(-np.log(bayes_predictive(g, leaves, k)[rows, cols, leaves]).mean()) for k in range(4)
    ]
    assert all(a > b + 1e-3 for a, b in zip(h, h[1:], strict=False)), h
    assert h[0] <= np.log(6) + 1e-9


def test_position_levels_and_layout():
    g = make_grammar(3, 4, 2, 2, seed=0)
    assert position_levels(g).tolist() == [0, 1, 2, 1, 3, 1, 2, 1]
    g3 = make_grammar(2, 4, 2, 3, seed=0)
    assert position_levels(g3).tolist() == [0, 1, 1, 2, 1, 1, 2, 1, 1]
    lay = layout(g, 2, boundary=True)
    assert lay.length == 1 + 8 + 1 + 8
    assert lay.need[:3].tolist() == [-2, 0, 1] and lay.need[9] == -1 and lay.need[10] == 0


def test_references_cover_the_vocabulary_and_fix_the_boundary():
    ds = tree_language_task(2, 4, 2, 2, 2, 2, True, 50, 0, 40, 40, seed=1)
    split = ds.splits["test"]
    tokens = split.tokens.reshape(len(split), -1)
    ref = level_references(ds, tokens)
    assert ref.shape == (3, 40, tokens.shape[1] - 1, ds.d_vocab)
    np.testing.assert_allclose(ref.sum(-1), 1.0, atol=1e-12)
    sep = ds.vocab.index("<sep>")
    boundary = np.flatnonzero(tokens[0, 1:] == sep)
    assert len(boundary) == 1 and (ref[:, :, boundary[0], sep] == 1).all()
    # every observed token has positive probability under the full predictor
    got = np.take_along_axis(ref[2], tokens[:, 1:, None], -1)[..., 0]
    assert (got > 0).all()


def test_filtered_task_and_its_bad_settings():
    ds = tree_language_task(3, 4, 2, 2, 1, 1, False, 100, 0, 50, 50, seed=0)
    assert ds.info["filter_level"] == 1
    assert (ds.info["latents"]["train"][2] == -1).all()
    assert (ds.info["latents"]["gen"][2] >= 0).all()
    with pytest.raises(GrammarError, match="tree_filter must lie in 0..3"):
        tree_language_task(3, 4, 2, 2, 4, 1, False, 10, 0, 10, 10, seed=0)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_perturbation_swaps_one_node_and_stays_grammatical(level):
    g = make_grammar(3, 4, 3, 2, seed=4)
    lat = [a[0] for a in sample_units(g, 1, np.random.default_rng(0))]
    rng = np.random.default_rng(1)
    out = perturb(g, lat, level, rng)
    assert out is not None
    new, node = out
    assert new[level][node] != lat[level][node]
    # every node expands by one of its rules
    for lev in range(1, 4):
        for i, sym in enumerate(new[lev]):
            kids = new[lev - 1][i * 2 : i * 2 + 2]
            assert (g.rules[lev - 1][sym] == kids).all(-1).any()
    # the leaves outside the node's span are untouched
    span = 2**level
    outside = np.ones(8, bool)
    outside[node * span : (node + 1) * span] = False
    assert (new[0][outside] == lat[0][outside]).all()


@pytest.mark.parametrize("levels,vocab,rules,s", TINY)
def test_garnier_brun_predictors_equal_brute_force_at_every_level(levels, vocab, rules, s):
    """Under Garnier-Brun et al.'s rule (level-k nodes independent given the root) the exact
    predictor of every level equals the enumerated filtered language's conditional."""
    g = make_grammar(levels, vocab, rules, s, seed=3)
    strings = np.array(sorted(enumerate_language(g, levels)))
    for k in range(levels + 1):
        filtered = enumerate_language(g, k, "garnier_brun")
        assert abs(sum(filtered.values()) - 1) < 1e-12
        q = bayes_predictive(g, strings, k, "garnier_brun")
        for row, leaves in enumerate(strings):
            for j in range(g.leaves):
                want = conditional(filtered, leaves[:j], vocab)
                np.testing.assert_allclose(q[row, j], want, atol=1e-12)
    # at k = L both rules are the full grammar
    np.testing.assert_allclose(
        bayes_predictive(g, strings, levels, "garnier_brun"), bayes_predictive(g, strings, levels)
    )


def test_garnier_brun_sampler_draws_the_enumerated_distribution():
    g = make_grammar(2, 3, 2, 2, seed=5)
    n = 60_000
    for k in (1, 0):
        exact = enumerate_language(g, k, "garnier_brun")
        lat = sample_units(g, n, np.random.default_rng(10 + k), k, "garnier_brun")
        counts = Counter(map(tuple, lat[0]))
        assert set(counts) <= set(exact)
        tv = 0.5 * sum(abs(counts.get(x, 0) / n - p) for x, p in exact.items())
        assert tv < 0.02, (k, tv)


def _block_mi(dist, width):
    """Exact mutual information (nats) between the first two blocks of ``width`` leaves."""
    joint: dict = defaultdict(float)
    for leaves, p in dist.items():
        joint[(leaves[:width], leaves[width : 2 * width])] += p
    pa, pb = defaultdict(float), defaultdict(float)
    for (a, b), p in joint.items():
        pa[a] += p
        pb[b] += p
    return sum(p * np.log(p / (pa[a] * pb[b])) for (a, b), p in joint.items() if p > 0)


def test_the_two_filters_keep_different_correlations_between_blocks():
    """Blocks of the level-1 filtered language: Garnier-Brun et al.'s keep some mutual
    information through the shared root, ours none, the full language the most; on the
    levels_cpu grammar the two level-2 nodes share 1.85, 0.82 and 0 nats."""
    g = make_grammar(2, 3, 2, 2, seed=5)
    full = _block_mi(enumerate_language(g, 2), 2)
    gb = _block_mi(enumerate_language(g, 1, "garnier_brun"), 2)
    ours = _block_mi(enumerate_language(g, 1), 2)
    assert full > gb > 1e-3 and abs(ours) < 1e-12
    big = make_grammar(3, 32, 4, 2, 0)  # levels_cpu's grammar (data seed 0)
    given = node_given_root(big, 2)
    joint_gb = np.einsum("ra,rb->ab", given[:, 0], given[:, 1]) / 32
    joint_full = np.zeros((32, 32))
    for r in range(32):
        for i in range(4):
            a, b = big.rules[2][r, i]
            joint_full[a, b] += 1 / 128

    def mi(joint):
        outer = np.outer(joint.sum(1), joint.sum(0))
        nz = joint > 0
        return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())

    assert mi(joint_full) == pytest.approx(1.850, abs=1e-3)
    assert mi(joint_gb) == pytest.approx(0.822, abs=1e-3)


def test_the_filter_rule_is_a_setting_with_one_line_errors():
    from grokscope.config import ConfigError, apply_overrides, preset, resolve

    ds = tree_language_task(2, 4, 2, 2, 1, 1, False, 50, 0, 20, 20, 0, "garnier_brun")
    assert ds.info["filter_rule"] == "garnier_brun"
    refs = level_references(ds, ds.splits["test"].tokens.reshape(20, -1), 1)
    assert np.isfinite(refs[:2]).all() and np.allclose(refs[:2].sum(-1), 1.0)
    with pytest.raises(GrammarError, match="unknown filter rule"):
        tree_language_task(2, 4, 2, 2, 1, 1, False, 50, 0, 20, 20, 0, "magic")
    with pytest.raises(ConfigError, match="unknown task.tree_filter_rule"):
        resolve(apply_overrides(preset("levels_cpu"), ["task.tree_filter_rule=magic"]))
