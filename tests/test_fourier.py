"""Fourier basis, transforms and key frequencies: identities and planted truths."""

from __future__ import annotations

import numpy as np
import pytest

from grokscope.measures import fourier as fo
from grokscope.measures import neurons as nu


def grid(p: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return a.ravel(), b.ravel()


def w(p: int, k: int) -> float:
    return 2 * np.pi * k / p


@pytest.mark.parametrize("p", [2, 5, 12, 23, 113])
def test_basis_orthonormal_and_row_order(p):
    F = fo.fourier_basis(p)
    assert F.shape == (p, p)
    np.testing.assert_allclose(F @ F.T, np.eye(p), atol=1e-12)
    x = np.arange(p)
    np.testing.assert_allclose(F[0], np.full(p, 1 / np.sqrt(p)), atol=1e-14)
    for k in range(1, p // 2 + 1):
        cos = np.cos(w(p, k) * x)
        np.testing.assert_allclose(F[2 * k - 1], cos / np.linalg.norm(cos), atol=1e-12)
        if 2 * k != p:
            sin = np.sin(w(p, k) * x)
            np.testing.assert_allclose(F[2 * k], sin / np.linalg.norm(sin), atol=1e-12)
    labels = fo.basis_labels(p)
    assert len(labels) == p and labels[0] == "const" and labels[1] == "cos 1"
    assert [fo.frequency_of_row(p)[r] for r in range(p)] == [
        int(lab.split()[1]) if lab != "const" else 0 for lab in labels
    ]


def test_frequency_rows_even_p_has_no_sine_at_nyquist():
    assert fo.frequency_rows(12, 6) == [11]
    assert fo.frequency_rows(13, 6) == [11, 12]
    with pytest.raises(ValueError):
        fo.frequency_rows(13, 7)


def test_planted_embedding_has_norm_only_at_its_frequency():
    p, k = 23, 5
    x = np.arange(p + 1)  # one extra '=' row, which the transform must ignore
    W_E = np.stack([np.cos(w(p, k) * x), np.sin(w(p, k) * x), np.zeros(p + 1)], axis=1)
    W_E[p] = 100.0
    norms = fo.frequency_norms(fo.embed_fourier(W_E, p), p)
    expected = np.zeros(p // 2 + 1)
    expected[k] = np.sqrt(p)  # sqrt(p/2) from the cos row plus sqrt(p/2) from the sin row
    np.testing.assert_allclose(norms, expected, atol=1e-10)


def test_unembed_transform_matches_embedding_transform_of_the_transpose():
    rng = np.random.default_rng(0)
    p = 17
    W_U = rng.normal(size=(6, p + 1))
    np.testing.assert_allclose(fo.unembed_fourier(W_U, p), fo.embed_fourier(W_U.T, p).T)


def test_fourier_2d_is_orthonormal_and_matches_brute_force():
    rng = np.random.default_rng(1)
    p = 11
    X = rng.normal(size=(p, p, 3))
    C = fo.fourier_2d(X, p)
    F = fo.fourier_basis(p)
    brute = np.array(
        [[[F[i] @ X[:, :, n] @ F[j] for n in range(3)] for j in range(p)] for i in range(p)]
    )
    np.testing.assert_allclose(C, brute, atol=1e-12)
    np.testing.assert_allclose(np.square(C).sum(), np.square(X).sum())  # Parseval
    np.testing.assert_allclose(np.einsum("ia,jb,ijn->abn", F, F, C), X, atol=1e-12)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("p", [12, 13])
def test_sum_directions_orthonormal_and_orthogonal_to_constant(p, sign):
    U = fo.sum_directions(p, range(1, p // 2 + 1), sign)
    assert U.shape == (p - 1, p * p)
    np.testing.assert_allclose(U @ U.T, np.eye(p - 1), atol=1e-12)
    np.testing.assert_allclose(U.sum(axis=1), 0, atol=1e-9)


@pytest.mark.parametrize("sign", [1, -1])
def test_function_of_a_plus_b_is_spanned_by_all_sum_directions(sign):
    # Any g((a + s b) mod p, c) = class mean + its projections on all frequencies, exactly.
    rng = np.random.default_rng(2)
    p = 13
    a, b = grid(p)
    table = rng.normal(size=(p, p + 1))
    logits = table[(a + sign * b) % p]
    proj = fo.project_sum_directions(logits, p, range(1, p // 2 + 1), sign)
    np.testing.assert_allclose(proj + logits.mean(axis=0), logits, atol=1e-12)


def test_projection_of_planted_logits_keeps_exactly_the_planted_frequency():
    p = 23
    a, b = grid(p)
    c = np.arange(p)
    key = np.cos(w(p, 4) * (a[:, None] + b[:, None] - c[None]))
    other = 0.3 * np.sin(w(p, 9) * (a[:, None] + b[:, None] - 2 * c[None]))
    proj = fo.project_sum_directions(key + other, p, [4])
    np.testing.assert_allclose(proj, key, atol=1e-12)


def planted_acts(p: int, freqs: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Neurons that are exactly single-frequency (random mix of the eight terms of k)."""
    rng = np.random.default_rng(seed)
    a, b = grid(p)
    cols, truth = [], []
    for n in range(60):
        k = freqs[n % len(freqs)]
        phases = rng.uniform(0, 2 * np.pi, size=3)
        amps = rng.uniform(0.5, 2, size=3)
        col = (
            amps[0] * np.cos(w(p, k) * a + phases[0])
            + amps[1] * np.cos(w(p, k) * b + phases[1])
            + amps[2] * np.cos(w(p, k) * a + phases[2]) * np.cos(w(p, k) * b)
            + 3.0
        )
        cols.append(col)
        truth.append(k)
    return np.stack(cols, axis=1), np.array(truth)


def test_planted_neurons_give_exactly_the_planted_key_frequencies():
    p = 23
    acts, truth = planted_acts(p, [3, 7, 10])
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(p * p, 20))  # unstructured neurons: no key frequency
    fr = nu.neuron_frequency_fractions(np.concatenate([acts, noise], axis=1), p)
    np.testing.assert_allclose(fr[:60].max(axis=1), 1.0, atol=1e-10)
    np.testing.assert_array_equal(nu.dominant_frequencies(fr[:60]), truth)
    assert fr[60:].max() < 0.1
    assert nu.key_frequencies(fr) == [3, 7, 10]
    assert nu.single_frequency_share(fr) == pytest.approx(60 / 80)


def test_fractions_of_mixed_cross_and_dead_neurons():
    p = 19
    a, b = grid(p)
    mixed = np.cos(w(p, 2) * a) + np.cos(w(p, 5) * b)  # half in 2, half in 5
    cross = np.cos(w(p, 2) * a) * np.cos(w(p, 5) * b)  # belongs to no frequency
    dead = np.full(p * p, 4.0)
    fr = nu.neuron_frequency_fractions(np.stack([mixed, cross, dead], axis=1), p)
    np.testing.assert_allclose(fr[0, [1, 4]], [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(fr[1], 0, atol=1e-12)
    np.testing.assert_array_equal(fr[2], 0)
    dom = nu.dominant_frequencies(fr)
    assert dom[0] in (2, 5) and list(dom[1:]) == [0, 0]  # no frequency -> 0
    assert nu.single_frequency_share(fr) == 0.0


def test_key_rule_thresholds_are_respected():
    # 10 neurons: 3 clean at k=1, 1 clean at k=2, 6 noisy at k=3 (fraction 0.4).
    fr = np.zeros((10, 4))
    fr[:3, 0] = 0.9
    fr[3, 1] = 0.95
    fr[4:, 2] = 0.4
    assert nu.key_frequencies(fr, nu.KeyFreqRule(0.5, 0.2)) == [1]
    assert nu.key_frequencies(fr, nu.KeyFreqRule(0.5, 0.1)) == [1, 2]
    assert nu.key_frequencies(fr, nu.KeyFreqRule(0.3, 0.1)) == [1, 2, 3]
    assert nu.single_frequency_share(fr, 0.85) == pytest.approx(0.4)
