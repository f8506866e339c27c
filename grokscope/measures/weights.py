"""Weight statistics of one checkpoint, the inputs of the latent-state training map.

The fourteen statistics follow Hu, Chen, Saphra & Cho, "Latent State Models of Training
Dynamics" (TMLR 2023), Section 3: norms, trace, spectral norm, two sparsity ratios and the
singular-value moments of each weight matrix (averaged over matrices), plus the mean, median
and variance of all weights and of all biases.

Conventions chosen here (the paper does not pin them down):

* A parameter is a *bias* when the last component of its dotted name starts with ``b``
  (``b_in``, ``b_out``, ``b_U``, ``b_Q``, ``layers.0.b``, a LayerNorm ``.b``, a PyTorch
  ``bias``), whatever its shape. Biases enter only the pooled ``b_*`` statistics.
* Every other parameter with two or more dimensions is a weight *matrix*. Arrays with more
  than two dimensions are split along their leading axes into 2-D matrices over the last two
  axes, so a TransformerLens attention weight ``W_Q`` of shape (n_heads, d_model, d_head)
  counts as n_heads separate matrices (one per head).
* Other 1-D (or 0-D) parameters, i.e. LayerNorm scales such as ``ln1.w``, are neither matrix
  nor bias and are ignored: they are not linear maps between layers and would distort the
  pooled weight moments.
* The trace of a non-square m x n matrix is the trace of its leading min(m, n) square block,
  i.e. the sum of ``W[i, i]`` for i < min(m, n) (what ``numpy.trace`` computes).
* Ratios with a zero denominator (an all-zero matrix) are defined as 0.0.
* Variances are population variances (ddof = 0).
* A model without biases gets 0.0 for ``b_mean``, ``b_median`` and ``b_var`` instead of NaN,
  so that the statistics can be fed to a Gaussian HMM directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

WEIGHT_STAT_COLUMNS: tuple[str, ...] = (
    "w_l1",
    "w_l2",
    "w_trace",
    "w_spectral",
    "w_code_sparsity",
    "w_comp_sparsity",
    "w_sv_mean",
    "w_sv_var",
    "w_mean",
    "w_median",
    "w_var",
    "b_mean",
    "b_median",
    "b_var",
)

_MATRIX_COLUMNS = WEIGHT_STAT_COLUMNS[:8]


def is_bias_name(name: str) -> bool:
    """Whether a parameter name denotes a bias: its last dotted component starts with ``b``."""
    return name.rsplit(".", 1)[-1].startswith("b")


def split_params(
    params: Mapping[str, np.ndarray],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split a checkpoint into 2-D weight matrices and bias arrays (float64).

    Arrays with more than two dimensions are split along their leading axes (per head for
    attention weights); 1-D non-bias parameters (LayerNorm scales) are dropped. See the
    module docstring for the rules, which follow Hu et al. (TMLR 2023) where they are stated.
    """
    matrices: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for name, value in params.items():
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"parameter {name!r} contains NaN or infinite values")
        if is_bias_name(name):
            biases.append(array.ravel())
        elif array.ndim >= 2:
            stacked = array.reshape(-1, array.shape[-2], array.shape[-1])
            matrices.extend(stacked[i] for i in range(stacked.shape[0]))
    return matrices, biases


def matrix_stats(matrix: np.ndarray) -> dict[str, float]:
    """The eight per-matrix statistics of Hu et al. (TMLR 2023) for one 2-D matrix.

    Code sparsity is L1 / L2 and computational sparsity is trace / spectral norm, both as
    defined in the paper; the trace uses the leading min(m, n) square block.
    """
    w = np.asarray(matrix, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    singular_values = np.linalg.svd(w, compute_uv=False)
    l1 = float(np.abs(w).sum())
    l2 = float(np.sqrt(np.square(w).sum()))
    trace = float(np.trace(w))
    spectral = float(singular_values[0]) if singular_values.size else 0.0
    return {
        "w_l1": l1,
        "w_l2": l2,
        "w_trace": trace,
        "w_spectral": spectral,
        "w_code_sparsity": l1 / l2 if l2 > 0 else 0.0,
        "w_comp_sparsity": trace / spectral if spectral > 0 else 0.0,
        "w_sv_mean": float(singular_values.mean()) if singular_values.size else 0.0,
        "w_sv_var": float(singular_values.var()) if singular_values.size else 0.0,
    }


def weight_stats(params: dict[str, np.ndarray]) -> dict[str, float]:
    """The 14 weight statistics of one checkpoint (Hu et al., TMLR 2023), keyed by column.

    The first eight (``w_l1`` ... ``w_sv_var``) are averaged over all weight matrices, with
    3-D attention weights split per head; ``w_mean``/``w_median``/``w_var`` pool every matrix
    entry and ``b_*`` pool every bias entry (0.0 when the model has no biases). Raises
    ValueError when there is no weight matrix or a parameter is not finite.
    """
    matrices, biases = split_params(params)
    if not matrices:
        raise ValueError("no weight matrix (parameter with >= 2 dimensions) in params")

    per_matrix = [matrix_stats(m) for m in matrices]
    stats = {col: float(np.mean([s[col] for s in per_matrix])) for col in _MATRIX_COLUMNS}

    weights = np.concatenate([m.ravel() for m in matrices])
    stats["w_mean"] = float(weights.mean())
    stats["w_median"] = float(np.median(weights))
    stats["w_var"] = float(weights.var())

    bias_values = np.concatenate(biases) if biases else np.empty(0)
    if bias_values.size:
        stats["b_mean"] = float(bias_values.mean())
        stats["b_median"] = float(np.median(bias_values))
        stats["b_var"] = float(bias_values.var())
    else:
        stats["b_mean"] = stats["b_median"] = stats["b_var"] = 0.0
    return {col: stats[col] for col in WEIGHT_STAT_COLUMNS}
