"""The Fourier basis over Z_p and the transforms the grokking circuit is read in.

Nanda, Chan, Lieberum, Smith & Steinhardt (ICLR 2023), "Progress measures for grokking via
mechanistic interpretability", show that a transformer trained on (a + b) mod p embeds each
residue as cos / sin of a few *key frequencies* w_k = 2 pi k / p and computes the logits as
sums of cos(w_k (a + b - c)). This module holds the pure linear algebra to see that:

* :func:`fourier_basis` — the real orthonormal basis of functions on Z_p, one basis vector
  per row. Row order (the one used everywhere in grokscope):

  ===========  ====================================
  row 0        constant 1 / sqrt(p)
  row 2k - 1   cos(w_k x), normalised   (k = 1 .. p // 2)
  row 2k       sin(w_k x), normalised   (k = 1 .. (p - 1) // 2)
  ===========  ====================================

  For odd p that is 1 + 2 (p - 1) / 2 = p rows. For even p the last frequency k = p / 2 has
  only a cosine ((-1)^x at row p - 1), because sin(pi x) vanishes on the integers.
* 1-D transforms of the embedding (rows 0..p-1 of ``W_E``, one per residue) and of the
  unembedding (columns 0..p-1 of ``W_U``; the '=' token / class p is dropped).
* The 2-D transform of any function on the (a, b) grid (neuron activations, logits):
  ``F @ X @ F.T`` over the two grid axes.
* Projections of per-class logits onto the directions cos(w_k (a + s b)) and sin(w_k (a + s b))
  on the grid (s = +1 for a + b, s = -1 for a - b).

Everything is float64: the Fourier projections decide the science, so no float32 rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies over Z_p: k = 1 .. p // 2."""
    return p // 2


@lru_cache(maxsize=8)
def fourier_basis(p: int) -> np.ndarray:
    """The (p, p) real orthonormal Fourier basis over Z_p, one basis vector per row.

    Row 0 is constant / sqrt(p); for k = 1 .. p // 2 row 2k - 1 is cos(2 pi k x / p) and row
    2k is sin(2 pi k x / p), each scaled to unit norm (Nanda et al. 2023 order: cos first).
    For even p the sine of k = p / 2 is identically zero and is left out. The array is cached
    and read-only (copy it to modify).
    """
    if p < 2:
        raise ValueError(f"the Fourier basis needs p >= 2, got {p}")
    x = np.arange(p, dtype=np.float64)
    rows = [np.ones(p)]
    for k in range(1, p // 2 + 1):
        w = 2 * np.pi * k / p
        rows.append(np.cos(w * x))
        if 2 * k != p:
            rows.append(np.sin(w * x))
    basis = np.stack(rows)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis.flags.writeable = False
    return basis


def basis_labels(p: int) -> list[str]:
    """Names of the basis rows: ``const``, ``cos 1``, ``sin 1``, ``cos 2``, ..."""
    labels = ["const"]
    for k in range(1, p // 2 + 1):
        labels.append(f"cos {k}")
        if 2 * k != p:
            labels.append(f"sin {k}")
    return labels


def frequency_rows(p: int, k: int) -> list[int]:
    """Basis rows of frequency k: [0] for k = 0, [2k - 1, 2k] (just [2k - 1] when 2k = p)."""
    if k == 0:
        return [0]
    if not 1 <= k <= p // 2:
        raise ValueError(f"frequency {k} is outside 0..{p // 2} for p = {p}")
    return [2 * k - 1] if 2 * k == p else [2 * k - 1, 2 * k]


def frequency_of_row(p: int) -> np.ndarray:
    """(p,) int: the frequency k of every basis row (0 for the constant)."""
    return (np.arange(p) + 1) // 2


def embed_fourier(W_E: np.ndarray, p: int) -> np.ndarray:
    """(p, d_model): the embedding of residues 0..p-1 (rows of ``W_E``) in the Fourier basis.

    Row i is the direction in the residual stream that basis function i is written to.
    """
    return fourier_basis(p) @ np.asarray(W_E, dtype=np.float64)[:p]


def unembed_fourier(W_U: np.ndarray, p: int) -> np.ndarray:
    """(d_in, p): the unembedding of classes 0..p-1 (columns of ``W_U``; '=' dropped) in the
    Fourier basis over the output c."""
    return np.asarray(W_U, dtype=np.float64)[:, :p] @ fourier_basis(p).T


def fourier_2d(values: np.ndarray, p: int) -> np.ndarray:
    """2-D Fourier transform over the first two axes of a (p, p, ...) grid of values.

    ``out[i, j, ...] = sum_{a, b} F[i, a] F[j, b] values[a, b, ...]``: basis row i over the
    first operand a and row j over the second operand b. Orthonormal, so energy is preserved.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[:2] != (p, p):
        raise ValueError(f"expected a ({p}, {p}, ...) grid, got shape {values.shape}")
    F = fourier_basis(p)
    rest = values.shape[2:]
    n = int(np.prod(rest, dtype=np.int64))
    out = (F @ values.reshape(p, p * n)).reshape(p, p, n)  # over a
    out = np.matmul(F, out)  # over b, for every basis row i of a: F @ out[i]
    return out.reshape((p, p) + rest)


def component_norms(coeffs: np.ndarray) -> np.ndarray:
    """Norm of each Fourier component: the Euclidean norm of every row of a (p, d) matrix."""
    return np.linalg.norm(np.asarray(coeffs, dtype=np.float64), axis=1)


def frequency_norms(coeffs: np.ndarray, p: int) -> np.ndarray:
    """(p // 2 + 1,): the norm of each frequency, cos and sin rows together (index 0 = const).

    ``coeffs`` is (p, d) with basis rows first, e.g. :func:`embed_fourier` output.
    """
    sq = np.square(np.asarray(coeffs, dtype=np.float64)).reshape(p, -1).sum(axis=1)
    return np.sqrt(np.bincount(frequency_of_row(p), weights=sq, minlength=p // 2 + 1))


def sum_directions(p: int, freqs: Iterable[int], sign: int = 1) -> np.ndarray:
    """(n_dirs, p * p): unit vectors cos(w_k (a + s b)) and sin(w_k (a + s b)) on the grid.

    Flattened a-major (index a * p + b). For distinct k in 1 .. p // 2 these vectors are
    orthonormal and orthogonal to the constant; for 2k = p the sine vanishes and is dropped.
    ``sign`` s = +1 for (a + b) mod p (Nanda et al. 2023), -1 for (a - b) mod p.
    """
    return _sum_directions(p, tuple(sorted(set(int(f) for f in freqs))), sign)


@lru_cache(maxsize=16)
def _sum_directions(p: int, freqs: tuple[int, ...], sign: int) -> np.ndarray:
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    s = ((a + sign * b) % p).ravel().astype(np.float64)
    dirs = []
    for k in freqs:
        if not 1 <= k <= p // 2:
            raise ValueError(f"frequency {k} is outside 1..{p // 2} for p = {p}")
        w = 2 * np.pi * k / p
        dirs.append(np.cos(w * s))
        if 2 * k != p:
            dirs.append(np.sin(w * s))
    if not dirs:
        return np.zeros((0, p * p))
    out = np.stack(dirs)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out.flags.writeable = False  # cached: shared by every caller
    return out


def project_sum_directions(
    logits: np.ndarray, p: int, freqs: Iterable[int], sign: int = 1
) -> np.ndarray:
    """Per-class projection of grid logits onto the key directions cos / sin(w_k (a + s b)).

    ``logits`` is (p * p, n_classes) in a-major order (or (p, p, n_classes)); each class column
    is a function on the grid, projected independently. Returns the same shape, float64.
    """
    logits = np.asarray(logits, dtype=np.float64)
    shape = logits.shape
    flat = logits.reshape(p * p, -1)
    U = sum_directions(p, freqs, sign)
    return (U.T @ (U @ flat)).reshape(shape)


def centre_grid(values: np.ndarray, p: int) -> np.ndarray:
    """Subtract, for every trailing index (class / neuron), the mean over the p * p grid."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(p * p, -1)
    return (flat - flat.mean(axis=0, keepdims=True)).reshape(values.shape)
