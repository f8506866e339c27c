"""Weight statistics of one checkpoint, the inputs of the latent-state training map.

The fourteen statistics follow Hu, Chen, Saphra & Cho, "Latent State Models of Training
Dynamics" (TMLR 2023), Section 3: L1 and L2 norm, trace, spectral norm, code sparsity
(L1 / L2), computational sparsity (trace / spectral norm) and the mean and variance of the
singular values of each weight matrix, averaged over the matrices; plus the mean, median and
variance of all weights pooled and of all biases pooled.

The paper's text leaves open which parameters count; the authors' released code
(github.com/michahu/modeling-training, ``src/metrics.py`` and ``src/utils.py``) fixes it, and
the default ``matrices="released"`` computes the statistics as that code does:

* **Matrices**, per transformer block: the attention ``W_Q``, ``W_K``, ``W_V`` of every head
  (one matrix per head), the attention output ``W_O`` as one matrix (all heads together, shape
  (n_heads * d_head, d_model)), and the MLP ``W_in`` and ``W_out``. The embedding ``W_E``, the
  positional embedding ``W_pos``, the unembedding ``W_U`` and LayerNorm parameters are left
  out. The eight per-matrix statistics are a plain mean over this list (a 1-layer, 4-head model:
  12 + 3 = 15 matrices, each with weight 1/15).
* **Biases**: the MLP ``b_in`` and ``b_out`` only.
* **MLP models** (no attention or MLP-block parameter in the checkpoint): every linear layer, as
  the released code does for its MLPs, i.e. the hidden layers ``layers.i.W`` and the output layer
  ``unembed.W_U``, with biases ``layers.i.b`` and ``unembed.b_U``; the embedding ``embed.W_E``
  (present when ``d_embed > 0``) is left out, as for transformers. Formally: every 2-D parameter
  except ``W_E`` and ``W_pos``, and every bias.
* **Variances** (of the singular values and of the pooled weights and biases) are sample
  variances, ddof = 1 (``torch.var``'s default, which the released code uses). A matrix with a
  single singular value has no sample variance (NaN) and is left out of the mean of ``w_sv_var``
  (the released code takes ``np.nanmean``); a pooled set of fewer than two values gets 0.0.
* **Singular values below 1e-5 are set to zero** before their mean and variance are taken (the
  released code does exactly this: it zeroes them, it does not drop them). The spectral norm is
  the largest singular value, unaffected.
* **Median** of an even number of values is the lower of the two middle ones (what
  ``torch.median`` returns and the released code reports), not their average.
* The **trace** of a non-square m x n matrix is the sum of ``W[i, i]`` for i < min(m, n) (what
  ``torch.trace`` and ``numpy.trace`` compute). Transposing a matrix changes none of the
  statistics, so the TransformerLens layouts used here (``W_Q`` as (d_model, d_head) per head,
  ``W_in`` as (d_model, d_mlp)) give the released code's values for its transposed layouts.

``matrices="all"`` keeps the wider set used before: every parameter with two or more dimensions
(``W_E``, ``W_pos``, ``W_U`` included), arrays with more than two dimensions split along their
leading axes (so ``W_O`` counts once per head), and every parameter whose last dotted name
component starts with ``b`` as a bias (``b_U``, LayerNorm ``.b``); LayerNorm scales (1-D
non-bias parameters) are ignored. The statistics themselves are the same in both sets.

Ratios with a zero denominator (an all-zero matrix) are 0.0, and a model without biases gets 0.0
for ``b_mean``, ``b_median`` and ``b_var``, so that the statistics can be fed to a Gaussian HMM
directly.
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

MATRIX_SETS: tuple[str, ...] = ("released", "all")

SINGULAR_VALUE_FLOOR = 1e-5
# Names the definition the default statistics follow; stored beside cached values (the
# ``weight_stats_definition`` column) so that values computed under another definition are
# recomputed instead of read back.
WEIGHT_STATS_DEFINITION = "released-code-v1"

_MATRIX_COLUMNS = WEIGHT_STAT_COLUMNS[:8]
_PER_HEAD = ("W_Q", "W_K", "W_V")
_BLOCK_MATRICES = (*_PER_HEAD, "W_O", "W_in", "W_out")
_BLOCK_BIASES = ("b_in", "b_out")
_EMBEDDINGS = ("W_E", "W_pos")


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def is_bias_name(name: str) -> bool:
    """Whether a parameter name denotes a bias: its last dotted component starts with ``b``."""
    return _leaf(name).startswith("b")


def _as_float64(name: str, value: np.ndarray) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"parameter {name!r} contains NaN or infinite values")
    return array


def _split_leading(array: np.ndarray) -> list[np.ndarray]:
    stacked = array.reshape(-1, array.shape[-2], array.shape[-1])
    return [stacked[i] for i in range(stacked.shape[0])]


def split_params(
    params: Mapping[str, np.ndarray], matrices: str = "released"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split a checkpoint into the 2-D weight matrices and the bias arrays (float64) that the
    statistics use, by the rules of the module docstring (``matrices``: "released" or "all").

    Raises ValueError for an unknown set or a parameter that is not finite.
    """
    if matrices not in MATRIX_SETS:
        raise ValueError(f"matrices must be one of {MATRIX_SETS}, got {matrices!r}")
    arrays = {name: _as_float64(name, value) for name, value in params.items()}
    mats: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    if matrices == "all":
        for name, array in arrays.items():
            if is_bias_name(name):
                biases.append(array.ravel())
            elif array.ndim >= 2:
                mats.extend(_split_leading(array))
        return mats, biases

    is_transformer = any(_leaf(name) in _BLOCK_MATRICES for name in arrays)
    for name, array in arrays.items():
        leaf = _leaf(name)
        if is_transformer:
            if leaf in _PER_HEAD:
                mats.extend(_split_leading(array))
            elif leaf in ("W_O", "W_in", "W_out"):
                mats.append(array.reshape(-1, array.shape[-1]))
            elif leaf in _BLOCK_BIASES:
                biases.append(array.ravel())
        elif is_bias_name(name):
            biases.append(array.ravel())
        elif array.ndim == 2 and leaf not in _EMBEDDINGS:
            mats.append(array)
    return mats, biases


def matrix_stats(matrix: np.ndarray) -> dict[str, float]:
    """The eight per-matrix statistics of Hu et al. (TMLR 2023) for one 2-D matrix.

    Code sparsity is L1 / L2 and computational sparsity is trace / spectral norm; singular
    values below ``SINGULAR_VALUE_FLOOR`` count as 0 in their mean and sample variance; the
    variance is NaN for a matrix with a single singular value (see the module docstring).
    """
    w = np.asarray(matrix, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {w.shape}")
    sv = np.linalg.svd(w, compute_uv=False)
    spectral = float(sv[0]) if sv.size else 0.0
    sv = np.where(sv < SINGULAR_VALUE_FLOOR, 0.0, sv)
    l1 = float(np.abs(w).sum())
    l2 = float(np.sqrt(np.square(w).sum()))
    trace = float(np.trace(w))
    return {
        "w_l1": l1,
        "w_l2": l2,
        "w_trace": trace,
        "w_spectral": spectral,
        "w_code_sparsity": l1 / l2 if l2 > 0 else 0.0,
        "w_comp_sparsity": trace / spectral if spectral > 0 else 0.0,
        "w_sv_mean": float(sv.mean()) if sv.size else 0.0,
        "w_sv_var": float(sv.var(ddof=1)) if sv.size > 1 else float("nan"),
    }


def pooled_stats(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, lower median, sample variance) of a flat array, as ``torch.mean``,
    ``torch.median`` and ``torch.var`` give them; (0, 0, 0) when empty, variance 0 for one value.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0, 0.0, 0.0
    lower_median = float(np.partition(x, (x.size - 1) // 2)[(x.size - 1) // 2])
    var = float(x.var(ddof=1)) if x.size > 1 else 0.0
    return float(x.mean()), lower_median, var


def weight_stats(params: Mapping[str, np.ndarray], matrices: str = "released") -> dict[str, float]:
    """The 14 weight statistics of one checkpoint (Hu et al., TMLR 2023), keyed by column.

    ``matrices="released"`` (default) uses the parameters of the authors' released code
    (attention W_Q / W_K / W_V per head, W_O, MLP W_in / W_out; biases b_in / b_out; every linear
    layer of an MLP model), ``"all"`` every weight matrix and bias; see the module docstring.
    The first eight statistics are means over the matrices, the other six pool the entries.
    Raises ValueError when no matrix is selected, the set is unknown or a parameter is not finite.
    """
    mats, biases = split_params(params, matrices)
    if not mats:
        raise ValueError(f"no weight matrix in params for matrices={matrices!r}")

    per_matrix = [matrix_stats(m) for m in mats]
    stats = {col: float(np.mean([s[col] for s in per_matrix])) for col in _MATRIX_COLUMNS[:7]}
    sv_vars = [s["w_sv_var"] for s in per_matrix if not np.isnan(s["w_sv_var"])]
    stats["w_sv_var"] = float(np.mean(sv_vars)) if sv_vars else 0.0

    weights = np.concatenate([m.ravel() for m in mats])
    stats["w_mean"], stats["w_median"], stats["w_var"] = pooled_stats(weights)
    bias_values = np.concatenate(biases) if biases else np.empty(0)
    stats["b_mean"], stats["b_median"], stats["b_var"] = pooled_stats(bias_values)
    return {col: stats[col] for col in WEIGHT_STAT_COLUMNS}
