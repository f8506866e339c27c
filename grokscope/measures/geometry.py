"""Geometry of modular-arithmetic embeddings: circles, parallelograms, Fourier localisation,
clock vs pizza.

"Before: clouds. After: a clean circle." These pure functions turn that picture into numbers
for one checkpoint. ``E`` is always a (p, d) embedding matrix whose row r is the embedding of
residue r: for grokscope models pass ``W_E[:p]`` (the '=' row dropped); for x*y and x/y pass the
rows in discrete-log order (``W_E[GridView.order]``), so that Z_(p-1) frequencies apply.

* :func:`circularity` / :func:`circularity_per_frequency` — how much of the embedding is a
  circle traversed in residue order at frequency k (Zhong, Liu, Tegmark & Andreas 2023, "The
  clock and the pizza"; the per-plane definition is ours, see the function).
  :func:`pca_circularity` — the PCA-based circularity as Zhong et al. compute it.
* :func:`rqi` / :func:`parallelogram_residuals` / :func:`parallelograms` — Liu, Kitouni, Nolte,
  Michaud, Tegmark & Williams (2022), representation quality index.
* :func:`gromov_ipr` — Gromov (2023), inverse participation ratio of each neuron's weights on
  the complex DFT; :func:`fourier_ipr` — our pooled variant over the whole embedding.
* :func:`distance_irrelevance`, :func:`gradient_symmetricity` (with the helpers
  :func:`correct_logit_grid`, :func:`symmetricity_triples`, :func:`embedding_gradients`) — Zhong
  et al. (2023), Definitions 4.2 and 4.1: the two clock-vs-pizza diagnostics.
* :func:`embedding_pca` — PCA coordinates for the clouds-to-circles figure.

All arithmetic is float64. A measure whose normalising scale is zero (a constant embedding, a
constant logit grid) returns NaN rather than a number that would look meaningful.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.sparse import csr_matrix

from grokscope.measures.fourier import fourier_basis, frequency_of_row, n_frequencies
from grokscope.models import HookedModule

# Residuals below this multiple of the embedding scale count as exactly zero (float rounding):
# without it, an exactly additive embedding r * v could miss a parallelogram at delta = 0.
RQI_RTOL = 1e-10
_CHUNK = 1 << 21  # floats per chunk when forming parallelogram residuals


def _embedding(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] < 2:
        raise ValueError(f"expected a (p, d) embedding with p >= 2, got shape {E.shape}")
    return E


def _centred(E: np.ndarray) -> np.ndarray:
    return E - E.mean(axis=0, keepdims=True)


# -- circularity ----------------------------------------------------------------------------------


def circularity_per_frequency(E: np.ndarray) -> np.ndarray:
    """(p // 2,) :func:`circularity` of ``E`` at every frequency k = 1 .. p // 2 (index k - 1).

    The values are shares of one variance, so they sum to at most 1 over k.
    """
    E = _embedding(E)
    p = E.shape[0]
    X = _centred(E)
    total = float(np.sum(X * X))
    K = n_frequencies(p)
    if total <= 0.0:
        return np.full(K, np.nan)
    coeffs = fourier_basis(p) @ X  # (p, d), rows: const, cos 1, sin 1, cos 2, ...
    cos = coeffs[1 : 2 * K : 2]  # rows 2k - 1, k = 1..K
    sin = np.zeros_like(cos)
    n_sin = (p - 1) // 2  # for even p the sine of k = p / 2 does not exist
    sin[:n_sin] = coeffs[2 : 2 * n_sin + 1 : 2]
    cc = np.sum(cos * cos, axis=1)
    ss = np.sum(sin * sin, axis=1)
    cs = np.sum(cos * sin, axis=1)
    det = np.maximum(cc * ss - cs * cs, 0.0)
    # (s1 + s2)^2 = s1^2 + s2^2 + 2 s1 s2 = trace + 2 sqrt(det) of the 2 x 2 Gram matrix
    return (cc + ss + 2.0 * np.sqrt(det)) / (2.0 * total)


def circularity(E: np.ndarray, k: int) -> float:
    """Share of the variance of ``E`` explained by the best circle traversed at frequency k.

    Zhong, Liu, Tegmark & Andreas (2023), "The clock and the pizza", read circles in the
    embedding; their own number is PCA-based (:func:`pca_circularity`). This per-plane version
    is our definition. Centre ``E`` over residues and fit, by least squares,

        E[r] - mean ~ u cos(2 pi k r / p) + v sin(2 pi k r / p),   u . v = 0,  |u| = |v|,

    i.e. a circle (any radius, orientation and plane) traversed in residue order at frequency
    k. The share of variance it explains is ``(s1 + s2)^2 / (2 |E - mean|_F^2)``, where s1, s2
    are the singular values of the d x 2 matrix of the embedding's coefficients on the
    orthonormal cos k and sin k basis vectors (:func:`~grokscope.measures.fourier.fourier_basis`).

    Exactly 1 for an exact circle at k (any radius, rotation, offset) and 0 at every other
    frequency; an ellipse with axis ratio t gives (1 + t)^2 / (2 (1 + t^2)) of its in-plane
    share (a degenerate line, t = 0, gives 1/2); Gaussian noise gives about 2 / (p - 1). For
    even p the Nyquist frequency k = p / 2 has no sine, so it scores at most 1/2. Invariant to
    rotation, scaling and translation of ``E``; NaN for a constant embedding.
    """
    E = _embedding(E)
    p = E.shape[0]
    if not 1 <= k <= n_frequencies(p):
        raise ValueError(f"frequency {k} is outside 1..{n_frequencies(p)} for p = {p}")
    return float(circularity_per_frequency(E)[k - 1])


def pca_circularity(E: np.ndarray, n_components: int = 4) -> float:
    """Zhong et al. (2023)'s circularity: how purely each top principal component is one
    frequency.

    For each of the first ``n_components`` principal components of ``E`` (scores over the p
    residues, centred), the largest share of that score vector's energy at one frequency k >= 1
    (cos and sin together); the mean over components. 1 when every top PC is a single Fourier
    mode (e.g. circles at distinct frequencies with distinct radii). Following the definition
    as we read it in Zhong et al.'s analysis (first 4 PCs), not checked against the paper
    text; their loop over multipliers i of t * i mod p is, for prime p, the same maximum over
    frequencies. Components with zero variance (rank of ``E`` below ``n_components``) are left
    out of the mean. NaN for a constant embedding.
    """
    E = _embedding(E)
    p = E.shape[0]
    scores, _ = embedding_pca(E, min(n_components, min(E.shape)))
    energy = np.sum(scores * scores, axis=0)
    keep = energy > 1e-20 * max(float(energy.max(initial=0.0)), 1e-300)
    if not keep.any():
        return float("nan")
    coeffs = fourier_basis(p) @ scores[:, keep]  # (p, n_kept)
    freq = frequency_of_row(p)
    per_freq = np.zeros((n_frequencies(p) + 1, coeffs.shape[1]))
    np.add.at(per_freq, freq, coeffs * coeffs)
    share = per_freq[1:].max(axis=0) / energy[keep]
    return float(np.mean(share))


# -- representation quality index -----------------------------------------------------------------


@lru_cache(maxsize=8)
def parallelograms(p: int, modular: bool = True) -> np.ndarray:
    """(Q, 4) int: every non-trivial parallelogram (i, j, m, n) of residues 0 .. p - 1, once.

    A parallelogram is an unordered pair of distinct unordered pairs {i, j} != {m, n} (i = j
    allowed) with i + j = m + n, mod p when ``modular`` else as integers (Liu et al. 2022).
    Rows have i <= j, m <= n, (i, j) before (m, n) in lexicographic order; sorted by sum.
    Cached and read-only.
    """
    if p < 2:
        raise ValueError(f"parallelograms need p >= 2, got {p}")
    i, j = np.triu_indices(p)
    s = (i + j) % p if modular else i + j
    order = np.argsort(s, kind="stable")  # within a sum, pairs stay in lexicographic order
    i, j, s = i[order], j[order], s[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    rows = []
    for lo, hi in zip(starts, ends, strict=True):
        a, b = np.triu_indices(hi - lo, 1)
        rows.append(np.stack([i[lo + a], j[lo + a], i[lo + b], j[lo + b]], axis=1))
    out = np.concatenate(rows) if rows else np.zeros((0, 4), dtype=np.int64)
    out = out.astype(np.int64)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=8)
def _pair_index(p: int, modular: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The unordered pairs (i <= j) and, per parallelogram, the indices of its two pairs."""
    quads = parallelograms(p, modular)
    i, j = np.triu_indices(p)
    index = np.full((p, p), -1)
    index[i, j] = np.arange(len(i))
    return i, j, index[quads[:, 0], quads[:, 1]], index[quads[:, 2], quads[:, 3]]


def parallelogram_residuals(E: np.ndarray, modular: bool = True) -> np.ndarray:
    """(Q,) |E_i + E_j - E_m - E_n| for every row (i, j, m, n) of :func:`parallelograms`.

    Liu et al. (2022): a representation is good when these close. Exact (no sampling); grouping
    the pairs by their sum keeps it to one vector sum per pair and one difference per
    parallelogram (p = 113: about 180k parallelograms, well under a second).
    """
    E = _embedding(E)
    p, d = E.shape
    i, j, A, B = _pair_index(p, modular)
    S = E[i] + E[j]  # one sum per unordered pair
    out = np.empty(len(A))
    step = max(_CHUNK // max(d, 1), 1)
    for lo in range(0, len(A), step):
        diff = S[A[lo : lo + step]] - S[B[lo : lo + step]]
        out[lo : lo + step] = np.sqrt(np.einsum("qd,qd->q", diff, diff))
    return out


@lru_cache(maxsize=8)
def _sum_classes(p: int, modular: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The unordered pairs (i <= j) and, per sum class, the indices of its pairs (the
    parallelograms of :func:`parallelograms` are the pairs of distinct pairs within a class)."""
    i, j = np.triu_indices(p)
    s = (i + j) % p if modular else i + j
    order = np.argsort(s, kind="stable")
    bounds = np.flatnonzero(np.r_[True, s[order][1:] != s[order][:-1], True])
    return i, j, [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def closed_parallelograms(E: np.ndarray, delta: float, modular: bool = True) -> tuple[int, int]:
    """(closed, total): how many parallelograms of :func:`parallelograms` have a residual
    ``|E_i + E_j - E_m - E_n| <= delta``, and how many there are; the same count as thresholding
    :func:`parallelogram_residuals`, about 20x faster (p = 113).

    Within a sum class every pair of pair-sums S_a, S_b is a parallelogram, so its squared
    residual is |S_a|^2 + |S_b|^2 - 2 S_a . S_b: one small Gram matrix per class. That form
    cancels when the residual is tiny, so every parallelogram whose Gram value lies within a
    rounding bound of delta^2 (10^-12 (|S_a|^2 + |S_b|^2), far above the float64 error of a sum
    of d products) is decided by its residual computed directly: the count is exact."""
    E = _embedding(E)
    p = E.shape[0]
    i, j, classes = _sum_classes(p, modular)
    S = E[i] + E[j]
    sq = np.einsum("ad,ad->a", S, S)
    d2 = delta * delta
    closed = total = 0
    if len({len(c) for c in classes}) == 1 and len(classes[0]) >= 2:
        return _closed_equal_classes(S, sq, np.stack(classes), delta)
    for idx in classes:
        if len(idx) < 2:
            continue
        a, b = np.triu_indices(len(idx), 1)
        block = S[idx]
        r2 = (sq[idx][:, None] + sq[idx][None, :] - 2.0 * (block @ block.T))[a, b]
        bound = 1e-12 * (sq[idx][a] + sq[idx][b])
        near = np.abs(r2 - d2) <= bound
        closed += int(np.count_nonzero(r2[~near] <= d2))
        if near.any():
            diff = block[a[near]] - block[b[near]]
            closed += int(np.count_nonzero(np.sqrt(np.einsum("qd,qd->q", diff, diff)) <= delta))
        total += len(a)
    return closed, total


def _closed_equal_classes(
    S: np.ndarray, sq: np.ndarray, classes: np.ndarray, delta: float
) -> tuple[int, int]:
    """:func:`closed_parallelograms` when every sum class has as many pairs (mod p, odd p:
    (p + 1) / 2 each): all Gram matrices in one batched product, the same decision rule."""
    blocks = S[classes]  # (classes, pairs, d)
    n2 = sq[classes]
    a, b = np.triu_indices(classes.shape[1], 1)
    gram = np.matmul(blocks, blocks.transpose(0, 2, 1))
    r2 = (n2[:, :, None] + n2[:, None, :] - 2.0 * gram)[:, a, b]
    bound = 1e-12 * (n2[:, a] + n2[:, b])
    d2 = delta * delta
    near = np.abs(r2 - d2) <= bound
    closed = int(np.count_nonzero(r2[~near] <= d2))
    if near.any():
        c, q = np.nonzero(near)
        diff = blocks[c, a[q]] - blocks[c, b[q]]
        closed += int(np.count_nonzero(np.sqrt(np.einsum("qd,qd->q", diff, diff)) <= delta))
    return closed, int(r2.size)


def embedding_scale(E: np.ndarray) -> float:
    """Median over residues of |E_r - mean_r E|: the scale of ``E``, for scale-free tolerances."""
    return float(np.median(np.linalg.norm(_centred(_embedding(E)), axis=1)))


def rqi(E: np.ndarray, delta: float, modular: bool = True, relative: bool = False) -> float:
    """Representation quality index (Liu, Kitouni, Nolte, Michaud, Tegmark & Williams 2022).

    The share of the non-trivial parallelograms (i, j, m, n) of :func:`parallelograms` (i + j =
    m + n, mod p when ``modular``; {i, j} != {m, n}; each counted once) whose embeddings close
    within ``delta``: |E_i + E_j - E_m - E_n| <= delta (Euclidean norm).

    ``relative=True`` measures ``delta`` in units of :func:`embedding_scale` (the median norm of
    the centred embeddings), so the index no longer depends on the embedding's overall scale
    (rotation- and translation-invariant either way; Liu et al. standardise each coordinate
    instead, which is not rotation-invariant). Residuals below ``RQI_RTOL`` times that scale
    count as zero (float rounding). Monotone in ``delta``.

    Note: no non-constant embedding of Z_p in R^d is additive mod p (there is no non-trivial
    homomorphism Z_p -> R^d), and a circle E_r = (cos w r, sin w r) closes *no* parallelogram at
    delta = 0 for odd p (two unit vectors are determined by their sum). Modular RQI therefore
    measures linear (integer-like) structure, not Fourier circles: use :func:`circularity` for
    those. ``modular=False`` is the integer addition of Liu et al.'s toy model, where the line
    E_r = r v gives 1. NaN when ``relative`` and the embedding is constant.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    E = _embedding(E)
    scale = embedding_scale(E)
    if relative:
        if scale <= 0.0:
            return float("nan")
        delta = delta * scale
    closed, total = closed_parallelograms(E, delta + RQI_RTOL * scale, modular)
    return closed / total if total else float("nan")


# -- Fourier localisation ------------------------------------------------------------------------


def fourier_ipr(E: np.ndarray, per_column: bool = False) -> float:
    """Our pooled inverse participation ratio of the embedding's frequency energies (the
    ``fourier_ipr_pooled`` column; Gromov's per-neuron IPR is :func:`gromov_ipr`).

    With c_k^2 the energy of frequency k = 1 .. p // 2 (cos and sin basis rows together, over
    all columns of ``E``), IPR = sum_k c_k^4 / (sum_k c_k^2)^2. The constant (k = 0) is
    excluded: it carries the mean embedding, not frequency content. 1 when one frequency
    carries everything, 1/K for K frequencies of equal energy, 1/(p // 2) for a flat spectrum.
    Rotation- and scale-invariant, which suits a residual stream without privileged axes.

    ``per_column=True``: the same per column of ``E``, averaged over the columns with non-zero
    energy (basis dependent). NaN when no frequency carries energy.
    """
    E = _embedding(E)
    p = E.shape[0]
    coeffs = fourier_basis(p) @ E
    freq = frequency_of_row(p)
    energy = np.zeros((n_frequencies(p) + 1, E.shape[1]))
    np.add.at(energy, freq, coeffs * coeffs)
    scale = np.sum(E * E, axis=0)  # every column's energy, constant included
    energy = energy[1:]  # drop the constant
    if not per_column:
        energy, scale = energy.sum(axis=1, keepdims=True), scale.sum(keepdims=True)
    total = energy.sum(axis=0)
    keep = total > 1e-24 * scale  # rounding noise of a constant column is no spectrum
    if not keep.any():
        return float("nan")
    ipr = np.sum(energy[:, keep] ** 2, axis=0) / total[keep] ** 2
    return float(np.mean(ipr))


def gromov_ipr(W: np.ndarray, r: int = 2) -> float:
    """Gromov's (2023) inverse participation ratio: for each neuron (each column of ``W``, its
    weights over the p input residues), the complex DFT U_k, k = 0 .. p - 1, and
    IPR_r = sum_k |U_k|^(2r) / (sum_k |U_k|^2)^r; the mean over the neurons with non-zero
    weights. r = 2 as he uses it. A neuron tuned to one frequency k != 0 splits its energy
    between +k and -k and scores 1/2; a constant neuron 1; a flat spectrum 1/p. Invariant to
    each neuron's scale, not to rotations mixing neurons (the neurons are privileged).

    Per neuron, as he defines it, for networks whose first layer reads the residues directly
    (his one-hot MLP: ``layers.0.W[:p]``, the ``mlp_quad`` preset); on a transformer's embedding
    the columns are residual dimensions, not neurons, and the number reads so. The definition
    is taken as the reference facts state it (per neuron, complex DFT), not checked against
    his code."""
    W = _embedding(W)
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    energy = np.abs(np.fft.fft(W, axis=0)) ** 2  # (p, n)
    total = energy.sum(axis=0)
    keep = total > 1e-24 * max(float(total.max(initial=0.0)), 1e-300)
    if not keep.any():
        return float("nan")
    ipr = np.sum(energy[:, keep] ** r, axis=0) / total[keep] ** r
    return float(np.mean(ipr))


# -- PCA ------------------------------------------------------------------------------------------


def embedding_pca(E: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the embeddings: ((p, n_components) coordinates, (n_components,) explained share).

    Coordinates are the centred embeddings projected on the top principal axes (SVD, float64);
    the share is each axis's fraction of the total variance. Signs are fixed so that each
    axis's largest-magnitude loading is positive (deterministic, though not aligned across
    checkpoints). For the clouds-to-circles figure (Zhong et al. 2023; Nanda et al. 2023).
    """
    E = _embedding(E)
    if not 1 <= n_components <= min(E.shape):
        raise ValueError(f"n_components must be in 1..{min(E.shape)}, got {n_components}")
    X = _centred(E)
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    U, s, Vt = U[:, :n_components], s[:n_components], Vt[:n_components]
    signs = np.sign(Vt[np.arange(n_components), np.abs(Vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    coords = U * (s * signs)[None, :]
    total = float(np.sum(X * X))
    share = s**2 / total if total > 0 else np.full(n_components, np.nan)
    return coords, share


# -- clock vs pizza (Zhong et al. 2023) -----------------------------------------------------------


def class_distance_ratio(reps: np.ndarray, labels: np.ndarray) -> float:
    """Inter- to intra-class distance ratio (ILDR) of representations ``reps`` (n, d) with class
    ``labels`` (n,): the mean Euclidean distance between the class means (over pairs of distinct
    classes present) divided by the mean distance of each sample to its own class mean. Proposed
    as an early-warning signal of grokking on the penultimate layer over held-out data (reported
    to fire at 2.5x its baseline, ~950 steps before grokking). Classes with one sample add no
    within-class spread but do count among the means. NaN with fewer than two classes or zero
    within-class spread."""
    X = np.asarray(reps, dtype=np.float64)
    y = np.asarray(labels)
    classes, inv = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        return float("nan")
    n = len(inv)
    member = csr_matrix((np.ones(n), (inv, np.arange(n))), shape=(len(classes), n))
    means = np.asarray(member @ X) / np.bincount(inv)[:, None]  # class sums, one sparse product
    within = float(np.linalg.norm(X - means[inv], axis=1).mean())
    if within <= 0.0:
        return float("nan")
    sq = np.sum(means * means, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * means @ means.T, 0.0)
    iu = np.triu_indices(len(classes), 1)
    return float(np.sqrt(d2[iu]).mean() / within)


def frequency_plane(E: np.ndarray, k: int) -> np.ndarray:
    """(p, 2) the centred embedding projected on the plane that carries its frequency-k circle:
    the principal plane of the embedding's cos k / sin k components (the d x 2 coefficient
    matrix's left singular vectors). An exact circle at k projects to a circle traversed k times
    in residue order; a cloud to a blob. For the clouds-to-circles figure at a fixed frequency
    (comparable across checkpoints, unlike the top principal components, which mix frequencies
    once several circles share the variance)."""
    E = _embedding(E)
    p = E.shape[0]
    X = _centred(E)
    basis = fourier_basis(p)
    C = np.stack([basis[2 * k - 1], basis[2 * k] if 2 * k < p else np.zeros(p)], axis=1)
    U, _, _ = np.linalg.svd(X.T @ C, full_matrices=False)  # (d, 2)
    return X @ U


def correct_logit_grid(logits: np.ndarray, labels: np.ndarray, p: int) -> np.ndarray:
    """(p, p) grid L[a, b] = logit of the correct class for the pair (a, b).

    ``logits`` is (p * p, n_classes) over the grid in a-major order (row a * p + b), ``labels``
    the (p * p,) correct classes. Zhong et al. (2023), the "correct logit matrix" of Def. 4.2.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.shape[0] != p * p or labels.shape != (p * p,):
        raise ValueError(f"expected {p * p} grid rows, got {logits.shape} and {labels.shape}")
    return logits[np.arange(p * p), labels].reshape(p, p)


def distance_irrelevance(correct_logits: np.ndarray, sign: int = 1) -> float:
    """Distance irrelevance q (Zhong, Liu, Tegmark & Andreas 2023, Def. 4.2).

    ``correct_logits`` is the (p, p) grid L[a, b] of :func:`correct_logit_grid`. Group the pairs
    by their distance d = (a - b) mod p (p pairs each); q is the mean over d of the standard
    deviation of L within the group, divided by the standard deviation of all of L (population
    std, ddof = 0):

        q = mean_d std{L[a, b] : a - b = d} / std{L[a, b]}.

    A pizza's correct logit depends on the distance (its |cos(w (a - b) / 2)| factor), so each
    group is nearly constant and q is near 0; a clock's does not, so q is near 1 (the paper
    reports 0.17 vs 0.85 and calls [0, 0.4] pizza, [0.4, 1] clock). ``sign = -1`` (our
    extension, for (a - b) mod p tasks) groups by the nuisance variable a + b instead, i.e. by
    (a - sign * b) mod p. NaN for a constant grid.
    """
    L = np.asarray(correct_logits, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"expected a (p, p) grid, got shape {L.shape}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    p = L.shape[0]
    overall = float(L.std())
    if overall <= 0.0:
        return float("nan")
    d, a = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    b = sign * (a - d) % p  # the b with (a - sign * b) = d mod p
    groups = L[a, b]  # (d, a): the p pairs at each distance d
    return float(groups.std(axis=1).mean() / overall)


def symmetricity_triples(p: int, n: int = 100, seed: int = 0) -> np.ndarray:
    """(n, 3) distinct (a, b, c) drawn uniformly from Z_p^3 for :func:`gradient_symmetricity`.

    Zhong et al. (2023) average over random triples; c is any output class, not necessarily
    the correct one (a + b). All p^3 triples when n >= p^3.
    """
    total = p**3
    rng = np.random.default_rng(seed)
    flat = np.arange(total) if n >= total else rng.choice(total, size=n, replace=False)
    return np.stack(np.unravel_index(flat, (p, p, p)), axis=1).astype(np.int64)


def gradient_symmetricity(grad_a: np.ndarray, grad_b: np.ndarray) -> float:
    """Gradient symmetricity s_g (Zhong, Liu, Tegmark & Andreas 2023, Def. 4.1).

    ``grad_a[t]``, ``grad_b[t]`` are the gradients of the output logit Q_abc of triple t with
    respect to the input embeddings E_a and E_b (see :func:`embedding_gradients`); s_g is the
    mean over triples of their cosine similarity. A pizza reads the operands through E_a + E_b,
    so the two gradients coincide and s_g = 1; a clock multiplies them (the gradient in E_a
    involves E_b and vice versa), giving lower values (paper: 0.99 pizza vs 0.33 clock).
    Triples where either gradient is zero are left out; NaN if none is left.
    """
    ga = np.asarray(grad_a, dtype=np.float64)
    gb = np.asarray(grad_b, dtype=np.float64)
    if ga.shape != gb.shape or ga.ndim != 2:
        raise ValueError(f"expected two (n, d) gradient arrays, got {ga.shape} and {gb.shape}")
    na, nb = np.linalg.norm(ga, axis=1), np.linalg.norm(gb, axis=1)
    keep = (na > 0) & (nb > 0)
    if not keep.any():
        return float("nan")
    cos = np.sum(ga[keep] * gb[keep], axis=1) / (na[keep] * nb[keep])
    return float(np.mean(cos))


def embedding_gradients(
    model: HookedModule, tokens: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float64 gradients of logit ``classes[t]`` at the answer position with respect to
    the token embeddings of the two operands (positions 0 and 1) of ``tokens[t]``.

    Read through the model's ``hook_embed`` activation (transformers, and MLPs with
    ``d_embed > 0``), in float32 like training and eval mode (restored afterwards). Rows are
    independent (no batch statistics), so one backward pass of the summed logits gives every
    row's gradient. For :func:`gradient_symmetricity` (Zhong et al. 2023, Def. 4.1).
    """
    if "hook_embed" not in model.hook_names():
        raise ValueError("the model has no learned operand embedding (hook_embed)")
    x = torch.as_tensor(np.asarray(tokens), dtype=torch.int64)
    c = torch.as_tensor(np.asarray(classes), dtype=torch.int64)
    captured: list[torch.Tensor] = []

    def grab(act: torch.Tensor, name: str) -> torch.Tensor:
        leaf = act.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model.run_with_hooks(x, [("hook_embed", grab)])[:, -1]
            picked = logits[torch.arange(len(x)), c].sum()
            (grad,) = torch.autograd.grad(picked, captured[0])
    finally:
        model.train(was_training)
    grad = grad.to(torch.float64).numpy()
    return grad[:, 0].copy(), grad[:, 1].copy()


# -- one checkpoint --------------------------------------------------------------------------------

# RQI tolerance, relative to the median embedding norm (:func:`embedding_scale`): a parallelogram
# closes when its residual is within a tenth of a typical embedding's length
RQI_DELTA = 0.1
GEOMETRY_COLUMNS = (
    "circularity_keys",
    "circularity_best",
    "circularity_best_freq",
    "pca_circularity",
    "rqi",
    "fourier_ipr_pooled",
    "gromov_ipr",
    "distance_irrelevance",
    "gradient_symmetricity",
    "ildr",
)


def geometry_row(
    E: np.ndarray,
    key_freqs: list[int] | None,
    correct_logits: np.ndarray | None = None,
    sign: int = 1,
    grads: tuple[np.ndarray, np.ndarray] | None = None,
    ildr: float | None = None,
) -> dict[str, float | int | None]:
    """The geometry columns of one checkpoint (:data:`GEOMETRY_COLUMNS`).

    ``E`` (p, d) the residue embedding in grid order; ``key_freqs`` the run's key frequencies
    (``circularity_keys`` is the sum of :func:`circularity` over them: the share of the
    embedding's variance on circles at the key frequencies, 1 when the embedding is exact
    circles at those frequencies whatever their number K and radii; None without keys; a mean
    over K frequencies would be at most 1/K);
    ``circularity_best`` the largest circularity at any frequency and ``circularity_best_freq``
    that frequency; ``pca_circularity`` (Zhong et al.); ``rqi`` at relative tolerance
    :data:`RQI_DELTA` (relative: parallelograms closed to 10 % of the embedding's scale; exact
    circles at several frequencies close only some, so RQI is near 0 for them, not exactly 0);
    ``fourier_ipr_pooled`` (ours, :func:`fourier_ipr`); ``gromov_ipr`` (:func:`gromov_ipr`, per
    column of ``E``); ``distance_irrelevance`` from the (p, p) correct
    logit grid, grouped by (a - sign b) (None without it); ``gradient_symmetricity`` from the
    operand-embedding gradients (None without them); ``ildr`` passed through
    (:func:`class_distance_ratio` of the penultimate layer on held-out examples).
    """
    per = circularity_per_frequency(E)
    finite = np.isfinite(per)
    best = int(np.nanargmax(per)) + 1 if finite.any() else None
    keys = [k for k in (key_freqs or []) if 1 <= k <= len(per)]
    return {
        "circularity_keys": float(np.sum(per[[k - 1 for k in keys]])) if keys else None,
        "circularity_best": float(per[best - 1]) if best else None,
        "circularity_best_freq": best,
        "pca_circularity": pca_circularity(E),
        "rqi": rqi(E, RQI_DELTA, relative=True),
        "fourier_ipr_pooled": fourier_ipr(E),
        "gromov_ipr": gromov_ipr(E),
        "distance_irrelevance": (
            None if correct_logits is None else distance_irrelevance(correct_logits, sign)
        ),
        "gradient_symmetricity": None if grads is None else gradient_symmetricity(*grads),
        "ildr": ildr,
    }
