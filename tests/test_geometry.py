"""Geometry measures on planted embeddings: circles, lines, noise, hand-built logits and models."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.measures import geometry as geo
from grokscope.models import MLP, Transformer


def circle(p: int, d: int, k: int, radius: float = 1.0, ratio: float = 1.0, seed: int = 0):
    """E[r] = radius (u cos(w k r) + ratio v sin(w k r)) + offset, u, v orthonormal in R^d."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    r = np.arange(p)[:, None]
    w = 2 * np.pi * k / p
    E = radius * (np.cos(w * r) * Q[:, 0] + ratio * np.sin(w * r) * Q[:, 1])
    return E + rng.normal(size=d)  # a common offset changes nothing


def rotation(d: int, seed: int = 1) -> np.ndarray:
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q


# -- circularity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("p, k", [(31, 5), (31, 15), (12, 5), (113, 41)])
def test_exact_circle_scores_one_at_its_frequency_and_zero_elsewhere(p, k):
    E = circle(p, 16, k, radius=3.7)
    per = geo.circularity_per_frequency(E)
    assert per.shape == (p // 2,)
    assert geo.circularity(E, k) == pytest.approx(1.0, abs=1e-12)
    others = np.delete(per, k - 1)
    assert np.max(np.abs(others)) < 1e-12


def test_ellipse_and_line_give_the_closed_form_in_between():
    # axis ratio t: (1 + t)^2 / (2 (1 + t^2)); t = 0.5 -> 0.9, t = 0 (a line) -> 0.5
    assert geo.circularity(circle(29, 8, 3, ratio=0.5), 3) == pytest.approx(0.9, abs=1e-12)
    assert geo.circularity(circle(29, 8, 3, ratio=0.0), 3) == pytest.approx(0.5, abs=1e-12)
    # half the variance in noise orthogonal to the circle's plane halves the score
    E = circle(29, 8, 3)
    X = E - E.mean(0)
    noise = np.random.default_rng(3).normal(size=(29, 8))
    noise -= noise.mean(0)
    noise -= (noise @ np.linalg.pinv(X)) @ X  # remove every component in the circle's span
    E2 = X + noise * np.linalg.norm(X) / np.linalg.norm(noise)
    assert 0.3 < geo.circularity(E2, 3) < 0.7


def test_random_embeddings_are_near_zero_and_shrink_with_p():
    means = []
    for p in (23, 97):
        per = np.mean(
            [
                geo.circularity_per_frequency(np.random.default_rng(s).normal(size=(p, 64)))
                for s in range(5)
            ],
            axis=0,
        )
        assert per.max() < 6.0 / (p - 1)
        assert per.mean() == pytest.approx(2.0 / (p - 1), rel=0.25)
        means.append(per.mean())
    assert means[1] < means[0] / 3


def test_circularity_is_a_share_and_invariant():
    rng = np.random.default_rng(4)
    E = circle(37, 12, 4) + 0.5 * circle(37, 12, 9, seed=5) + 0.1 * rng.normal(size=(37, 12))
    per = geo.circularity_per_frequency(E)
    assert per.sum() <= 1.0 + 1e-12 and per.min() >= 0.0
    moved = 7.5 * E @ rotation(12) + 3.0
    np.testing.assert_allclose(geo.circularity_per_frequency(moved), per, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError):
        geo.circularity(E, 0)
    with pytest.raises(ValueError):
        geo.circularity(E, 19)
    assert np.isnan(geo.circularity(np.ones((7, 3)), 2))


def test_pca_circularity_follows_zhong():
    # circles at k = 7 and 17 in orthogonal planes, distinct radii: every top PC is one mode
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 4)))[0]
    w = 2 * np.pi * np.arange(59)[:, None] / 59
    two = 2.0 * (np.cos(7 * w) * Q[:, 0] + np.sin(7 * w) * Q[:, 1])
    two += np.cos(17 * w) * Q[:, 2] + np.sin(17 * w) * Q[:, 3]
    assert geo.pca_circularity(two) == pytest.approx(1.0, abs=1e-10)
    assert geo.pca_circularity(circle(59, 32, 7)) == pytest.approx(1.0, abs=1e-10)  # rank 2
    noise = np.random.default_rng(2).normal(size=(59, 128))
    assert geo.pca_circularity(noise) < 0.35
    assert geo.pca_circularity(noise @ rotation(128)) == pytest.approx(geo.pca_circularity(noise))


# -- RQI -------------------------------------------------------------------------------------------


def brute_force_residuals(E: np.ndarray, modular: bool) -> dict:
    """{frozenset of two sorted pairs: residual} over a plain loop of all quadruples."""
    p = len(E)
    out = {}
    for i, j, m, n in itertools.product(range(p), repeat=4):
        s1, s2 = (i + j, m + n) if not modular else ((i + j) % p, (m + n) % p)
        first, second = tuple(sorted((i, j))), tuple(sorted((m, n)))
        if s1 != s2 or first == second:
            continue
        out[frozenset((first, second))] = np.linalg.norm(E[i] + E[j] - E[m] - E[n])
    return out


@pytest.mark.parametrize("modular", [True, False])
def test_rqi_matches_a_plain_quadruple_loop(modular):
    p = 7
    E = np.random.default_rng(0).normal(size=(p, 3))
    brute = brute_force_residuals(E, modular)
    quads = geo.parallelograms(p, modular)
    assert len(quads) == len(brute)
    keys = [frozenset((tuple(q[:2]), tuple(q[2:]))) for q in quads]
    assert len(set(keys)) == len(keys)  # each parallelogram once
    fast = geo.parallelogram_residuals(E, modular)
    np.testing.assert_allclose(fast, [brute[k] for k in keys], rtol=1e-12)
    values = np.array(list(brute.values()))
    for delta in (0.0, 0.5, 1.0, 2.0, 3.0, 10.0):
        assert geo.rqi(E, delta, modular) == pytest.approx(np.mean(values <= delta))


def test_parallelogram_counts():
    # odd p, mod p: every sum has (p + 1) / 2 unordered pairs -> p * C((p + 1) / 2, 2)
    for p in (7, 113):
        assert len(geo.parallelograms(p, True)) == p * ((p + 1) // 2) * ((p - 1) // 2) // 2


@pytest.mark.parametrize("delta", [0.0, 1e-6, 0.3])
def test_line_is_exactly_additive_over_the_integers(delta):
    v = np.random.default_rng(1).normal(size=9)
    E = np.arange(31)[:, None] * v[None, :] + 2.0
    assert geo.rqi(E, delta, modular=False) == 1.0
    assert geo.rqi(E, delta, modular=False, relative=True) == 1.0
    # mod p, exactly the pairs whose integer sums agree close; wrap-arounds miss by p |v|
    share = len(geo.parallelograms(31, False)) / len(geo.parallelograms(31, True))
    assert geo.rqi(E, delta, modular=True) == pytest.approx(share, abs=1e-15)
    assert share < 0.7


def test_circle_closes_no_modular_parallelogram():
    # two unit vectors are fixed by their sum, so E_i + E_j = E_m + E_n forces {i,j} = {m,n}
    E = circle(31, 2, 3)
    assert geo.rqi(E, 0.0, modular=True) == 0.0
    assert geo.rqi(E, 1e-6, modular=True) == 0.0


def test_rqi_random_near_zero_monotone_and_reaches_one():
    E = np.random.default_rng(5).normal(size=(41, 16))
    deltas = np.linspace(0, 20, 41)
    values = [geo.rqi(E, d) for d in deltas]
    assert values[0] == 0.0 and values[1] < 0.01  # delta = 0.5 vs residuals ~ 2 sqrt(16)
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[-1] == 1.0


def test_rqi_invariances():
    rng = np.random.default_rng(6)
    E = np.arange(23)[:, None] * rng.normal(size=8) + 0.8 * rng.normal(size=(23, 8))
    Q = rotation(8)
    for modular in (True, False):
        for delta in (0.5, 1.0, 2.0):
            base = geo.rqi(E, delta, modular)
            assert geo.rqi(E @ Q + 5.0, delta, modular) == base
            assert geo.rqi(3.0 * E, 3.0 * delta, modular) == base
            rel = geo.rqi(E, delta / 4, modular, relative=True)
            assert geo.rqi(11.0 * E @ Q - 2.0, delta / 4, modular, relative=True) == rel
    with pytest.raises(ValueError):
        geo.rqi(E, -1.0)
    assert np.isnan(geo.rqi(np.zeros((5, 2)), 0.1, relative=True))


def test_rqi_is_fast_at_p_113():
    E = np.random.default_rng(7).normal(size=(113, 128))
    geo.parallelograms(113, True)  # the cached index is built once per p
    start = time.perf_counter()
    geo.rqi(E, 1.0, relative=True)
    geo.rqi(E, 1.0, modular=False)
    assert time.perf_counter() - start < 3.0  # about 0.1 s each on one idle core


# -- Fourier IPR -----------------------------------------------------------------------------------


def test_ipr_single_and_equal_frequencies():
    p = 59
    assert geo.fourier_ipr(circle(p, 16, 7, radius=4.0)) == pytest.approx(1.0)
    assert geo.fourier_ipr(circle(p, 16, 7, ratio=0.0)) == pytest.approx(1.0)  # cos only
    freqs = [2, 9, 14, 20, 28]
    for K in range(1, len(freqs) + 1):
        E = sum(circle(p, 32, k, seed=k) for k in freqs[:K])
        assert geo.fourier_ipr(E) == pytest.approx(1.0 / K, rel=1e-10)
    flat = np.linalg.qr(np.random.default_rng(0).normal(size=(p, p)))[0]
    assert geo.fourier_ipr(flat) == pytest.approx(1.0 / (p // 2), rel=0.1)


def test_ipr_unequal_energies_and_invariances():
    p = 31
    E = circle(p, 10, 3, radius=2.0) + circle(p, 10, 8, radius=1.0, seed=3)
    # energies 4 : 1 -> (16 + 1) / 25
    assert geo.fourier_ipr(E) == pytest.approx(17 / 25, rel=1e-10)
    assert geo.fourier_ipr(6.0 * E @ rotation(10) + 1.0) == pytest.approx(17 / 25, rel=1e-10)
    assert np.isnan(geo.fourier_ipr(np.ones((p, 3))))


def test_ipr_per_column_is_gromovs_per_neuron_mean():
    p = 23
    r = np.arange(p)
    col_a = np.cos(2 * np.pi * 3 * r / p)  # one frequency: 1
    col_b = np.cos(2 * np.pi * 3 * r / p) + np.sin(2 * np.pi * 5 * r / p)  # two equal: 1/2
    E = np.stack([col_a, col_b, np.full(p, 4.0)], axis=1)  # constant column: no energy, skipped
    assert geo.fourier_ipr(E, per_column=True) == pytest.approx(0.75)


# -- PCA -------------------------------------------------------------------------------------------


def test_pca_of_a_circle_is_a_circle():
    E = circle(31, 20, 4, radius=2.5)
    coords, share = geo.embedding_pca(E)
    assert coords.shape == (31, 2)
    np.testing.assert_allclose(share, [0.5, 0.5], atol=1e-10)
    radii = np.linalg.norm(coords, axis=1)
    np.testing.assert_allclose(radii, radii[0], rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(coords[0]), 2.5, rtol=1e-10)


def test_pca_matches_svd_and_is_rotation_invariant():
    rng = np.random.default_rng(8)
    E = rng.normal(size=(17, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    coords, share = geo.embedding_pca(E, 3)
    X = E - E.mean(0)
    s = np.linalg.svd(X, compute_uv=False)
    np.testing.assert_allclose(share, s[:3] ** 2 / np.sum(s**2), rtol=1e-10)
    np.testing.assert_allclose(np.abs(coords), np.abs(X @ np.linalg.svd(X)[2][:3].T), rtol=1e-8)
    coords_rot, _ = geo.embedding_pca(E @ rotation(6) + 1.0, 3)
    np.testing.assert_allclose(np.abs(coords_rot), np.abs(coords), rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError):
        geo.embedding_pca(E, 7)


# -- distance irrelevance --------------------------------------------------------------------------


def test_correct_logit_grid_picks_the_label():
    p = 5
    logits = np.random.default_rng(0).normal(size=(p * p, p + 1))
    a, b = np.divmod(np.arange(p * p), p)
    L = geo.correct_logit_grid(logits, (a + b) % p, p)
    for x, y in itertools.product(range(p), repeat=2):
        assert L[x, y] == logits[x * p + y, (x + y) % p]


def test_distance_irrelevance_planted():
    p = 31
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    rng = np.random.default_rng(1)
    f, g = rng.normal(size=p), rng.normal(size=p)
    pizza = f[(a - b) % p]  # depends only on the distance
    clock = g[(a + b) % p]  # does not depend on the distance at all
    assert geo.distance_irrelevance(pizza) == pytest.approx(0.0, abs=1e-12)
    assert geo.distance_irrelevance(clock) == pytest.approx(1.0, abs=1e-12)
    # a mix: within-distance std is std(g); overall variance var f + var g (uncorrelated on Z_p^2)
    mix = pizza + clock
    expected = g.std() / np.sqrt(f.var() + g.var())
    assert geo.distance_irrelevance(mix) == pytest.approx(expected, rel=1e-12)
    # an a - b task: the nuisance variable is a + b
    assert geo.distance_irrelevance(clock, sign=-1) == pytest.approx(0.0, abs=1e-12)
    assert geo.distance_irrelevance(pizza, sign=-1) == pytest.approx(1.0, abs=1e-12)
    assert geo.distance_irrelevance(5.0 * mix + 2.0) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(geo.distance_irrelevance(np.ones((p, p))))


def test_distance_irrelevance_brute_force_and_cos_pizza():
    p = 11
    L = np.random.default_rng(2).normal(size=(p, p))
    stds = [
        np.std([L[x, y] for x in range(p) for y in range(p) if (x - y) % p == d]) for d in range(p)
    ]
    assert geo.distance_irrelevance(L) == pytest.approx(np.mean(stds) / L.std(), rel=1e-12)
    # the pizza's correct logit |cos(w (a - b) / 2)| depends only on a - b
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    assert geo.distance_irrelevance(np.abs(np.cos(np.pi * 3 * (a - b) / p))) < 1e-12


# -- gradient symmetricity -------------------------------------------------------------------------


def test_gradient_symmetricity_on_planted_gradients():
    g = np.random.default_rng(0).normal(size=(50, 8))
    assert geo.gradient_symmetricity(g, 2.0 * g) == pytest.approx(1.0)
    assert geo.gradient_symmetricity(g, -g) == pytest.approx(-1.0)
    ortho = np.stack([np.array([1.0, 0.0]), np.array([0.0, 1.0])])
    assert geo.gradient_symmetricity(ortho, ortho[::-1]) == pytest.approx(0.0)
    zero = np.zeros_like(g)
    zero[0] = g[0]
    assert geo.gradient_symmetricity(g, zero) == pytest.approx(1.0)  # zero rows left out
    assert np.isnan(geo.gradient_symmetricity(np.zeros((3, 2)), np.ones((3, 2))))


def test_symmetricity_triples():
    t = geo.symmetricity_triples(13, 200, seed=3)
    assert t.shape == (200, 3) and t.min() >= 0 and t.max() < 13
    assert len({tuple(x) for x in t}) == 200
    np.testing.assert_array_equal(t, geo.symmetricity_triples(13, 200, seed=3))
    assert len(geo.symmetricity_triples(3, 100)) == 27


def grid_inputs(p: int, n: int = 60):
    triples = geo.symmetricity_triples(p, n, seed=1)
    tokens = np.stack([triples[:, 0], triples[:, 1], np.full(n, p)], axis=1)
    return tokens, triples[:, 2]


def test_symmetric_mlp_has_symmetricity_one():
    p, d = 13, 8
    model = MLP(ModelConfig(kind="mlp", d_embed=d, d_mlp=32, n_layers=2), d_vocab=p + 1, n_ctx=3)
    model.init_weights(0)
    tokens, classes = grid_inputs(p)
    ga, gb = geo.embedding_gradients(model, tokens, classes)
    assert ga.shape == (60, d) and ga.dtype == np.float64
    assert geo.gradient_symmetricity(ga, gb) < 0.9  # random operand weights: asymmetric
    with torch.no_grad():
        W = model.layers[0].W
        W[d:] = W[:d]  # the first layer reads E_a + E_b: a pizza-like symmetric function
    ga, gb = geo.embedding_gradients(model, tokens, classes)
    assert geo.gradient_symmetricity(ga, gb) == pytest.approx(1.0, abs=1e-6)
    assert model.training  # mode restored


def test_uniform_attention_transformer_has_symmetricity_one():
    p = 13
    cfg = ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32)
    model = Transformer(cfg, d_vocab=p + 1, n_ctx=3)
    model.init_weights(0)
    tokens, classes = grid_inputs(p)
    ga, gb = geo.embedding_gradients(model, tokens, classes)
    # a finite-difference check of one gradient entry
    eps = 1e-2
    t, c = tokens[:1], classes[0]
    with torch.no_grad():
        base = model(torch.as_tensor(t))[0, c].item()
        model.embed.W_E[t[0, 0], 3] += eps
        bumped = model(torch.as_tensor(t))[0, c].item()
        model.embed.W_E[t[0, 0], 3] -= eps
    assert (bumped - base) / eps == pytest.approx(ga[0, 3], rel=0.05, abs=1e-3)
    assert geo.gradient_symmetricity(ga, gb) < 0.99
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()  # constant attention scores: uniform attention
        model.pos_embed.W_pos[1] = model.pos_embed.W_pos[0]  # operands enter symmetrically
    ga, gb = geo.embedding_gradients(model, tokens, classes)
    assert geo.gradient_symmetricity(ga, gb) == pytest.approx(1.0, abs=1e-5)


def test_embedding_gradients_needs_an_embedding():
    model = MLP(ModelConfig(kind="mlp", d_embed=0, d_mlp=16), d_vocab=8, n_ctx=3)
    model.init_weights(0)
    with pytest.raises(ValueError, match="embedding"):
        geo.embedding_gradients(model, np.zeros((2, 3), dtype=np.int64), np.zeros(2))


def test_frequency_plane_shows_the_planted_circle_as_a_ring():
    from grokscope.measures.geometry import frequency_plane

    p, k = 31, 4
    rng = np.random.default_rng(0)
    r = np.arange(p)
    Q = np.linalg.qr(rng.normal(size=(16, 16)))[0][:, :2]
    E = 3.0 * np.stack([np.cos(2 * np.pi * k * r / p), np.sin(2 * np.pi * k * r / p)], 1) @ Q.T
    radius = np.linalg.norm(frequency_plane(E + 5.0, k), axis=1)
    np.testing.assert_allclose(radius, 3.0, rtol=1e-10)
    cloud = np.linalg.norm(frequency_plane(rng.normal(size=(p, 16)), k), axis=1)
    assert cloud.std() / cloud.mean() > 0.2


def test_geometry_row_on_a_planted_circle_and_a_cloud():
    from grokscope.measures.geometry import GEOMETRY_COLUMNS, geometry_row

    p, k = 31, 4
    r = np.arange(p)
    E = np.stack([np.cos(2 * np.pi * k * r / p), np.sin(2 * np.pi * k * r / p)], 1)
    row = geometry_row(E, [k, 7])
    assert set(row) == set(GEOMETRY_COLUMNS)
    assert row["circularity_best_freq"] == k and row["circularity_best"] == pytest.approx(1.0)
    assert row["circularity_keys"] == pytest.approx(1.0)  # 1 at k + 0 at 7
    assert row["fourier_ipr_pooled"] == pytest.approx(1.0)
    assert row["gromov_ipr"] == pytest.approx(0.5)  # each column's energy at +k and -k
    assert row["distance_irrelevance"] is None and row["gradient_symmetricity"] is None
    cloud = geometry_row(np.random.default_rng(1).normal(size=(p, 32)), [k])
    assert cloud["circularity_keys"] < 0.2 and cloud["fourier_ipr_pooled"] < 0.2
    assert cloud["gromov_ipr"] < 0.1  # a random neuron spreads over all 31 coefficients


@pytest.mark.parametrize("n_keys", [1, 2, 3, 5])
def test_exact_circles_at_the_key_frequencies_score_one_whatever_their_number(n_keys):
    """K exact circles (one per key frequency, unequal radii, in orthogonal planes) put all of
    the embedding's variance on circles at the key frequencies: 1 for any K (a mean over the
    K frequencies would give 1/K); a cloud, nothing planted, stays near its noise level."""
    from grokscope.measures.geometry import geometry_row

    p, keys = 61, [3, 7, 11, 19, 26][:n_keys]
    r = np.arange(p)[:, None]
    cols = []
    for j, k in enumerate(keys):
        w = 2 * np.pi * k * r / p
        cols += [(1 + j) * np.cos(w), (1 + j) * np.sin(w)]
    E = np.hstack(cols) @ rotation(2 * n_keys)
    assert geometry_row(E, keys)["circularity_keys"] == pytest.approx(1.0, abs=1e-12)
    noise = np.random.default_rng(3).normal(size=(p, 2 * n_keys))
    assert geometry_row(noise, keys)["circularity_keys"] < 0.6


def test_gromov_ipr_on_planted_neurons():
    from grokscope.measures.geometry import gromov_ipr

    p = 31
    r = np.arange(p)
    tuned = np.stack([np.cos(2 * np.pi * 5 * r / p + ph) for ph in (0.0, 0.4, 1.3)], 1)
    assert gromov_ipr(tuned) == pytest.approx(0.5)  # one frequency: +k and -k
    assert gromov_ipr(7.0 * tuned) == pytest.approx(0.5)  # scale-free
    impulse = np.zeros((p, 1))
    impulse[4] = 1.0
    assert gromov_ipr(impulse) == pytest.approx(1 / p)  # a flat spectrum
    assert gromov_ipr(np.ones((p, 2))) == pytest.approx(1.0)  # all at k = 0
    assert np.isnan(gromov_ipr(np.zeros((p, 3))))


def test_class_distance_ratio_planted():
    from grokscope.measures.geometry import class_distance_ratio

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 200)
    centres = rng.normal(size=(5, 8)) * 10
    tight = centres[labels] + rng.normal(size=(1000, 8)) * 0.1
    loose = centres[labels] + rng.normal(size=(1000, 8)) * 1.0
    assert class_distance_ratio(tight, labels) == pytest.approx(
        10 * class_distance_ratio(loose, labels), rel=0.05
    )
    # no class structure: class means nearly coincide, ratio near 0
    assert class_distance_ratio(rng.normal(size=(1000, 8)), labels) < 0.2
    # brute force on a tiny case: means 0 and 4 apart, every sample 1 from its mean
    X = np.array([[-1.0], [1.0], [3.0], [5.0]])
    assert class_distance_ratio(X, np.array([0, 0, 1, 1])) == pytest.approx(4.0)
    assert np.isnan(class_distance_ratio(X, np.zeros(4)))


@pytest.mark.parametrize(("p", "low", "high"), [(59, 0.02, 0.035), (113, 0.035, 0.05)])
def test_rqi_of_exact_circles_at_the_analysis_tolerance(p, low, high):
    """Exact circles close no parallelogram at tolerance 0, but at the analysis's 10 % relative
    tolerance one circle closes a few (what docs/geometry.md states) and two or more about
    none: RQI near 0 is what circles give."""
    r = np.arange(p)[:, None]

    def circles(ks):
        return np.hstack([np.hstack([np.cos(2 * np.pi * k * r / p), np.sin(2 * np.pi * k * r / p)])
                          for k in ks])  # fmt: skip

    assert geo.rqi(circles([5]), 0.0, relative=True) == 0.0
    assert low < geo.rqi(circles([5]), geo.RQI_DELTA, relative=True) < high
    assert geo.rqi(circles([5, 17, 31, 42]), geo.RQI_DELTA, relative=True) < 0.002


@pytest.mark.parametrize("modular", [True, False])
def test_closed_parallelograms_count_exactly_what_the_residuals_threshold(modular):
    """The Gram-matrix count equals thresholding the directly computed residuals, at random
    tolerances, at tolerances equal to residuals themselves (ties) and at 0 on exact
    structure (a line closes every integer parallelogram; a circle no modular one)."""
    rng = np.random.default_rng(0)
    p = 23
    for E in (rng.normal(size=(p, 6)), np.outer(np.arange(p), rng.normal(size=4))):
        res = geo.parallelogram_residuals(E, modular)
        deltas = [0.0, *np.quantile(res, [0.1, 0.5, 0.9]), *rng.choice(res, 5)]
        for delta in deltas:
            closed, total = geo.closed_parallelograms(E, float(delta), modular)
            assert total == len(res)
            assert closed == int(np.count_nonzero(res <= delta))
    t = 2 * np.pi * 3 * np.arange(p) / p
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    assert geo.closed_parallelograms(circle, 0.0, True)[0] == 0
