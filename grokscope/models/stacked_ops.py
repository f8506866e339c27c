"""Tensor operations that work on one model's weights and on K models' weights stacked.

A weight of one model has its usual shape, e.g. (d_in, d_out); K seeds' weights stacked along a
leading axis have shape (K, d_in, d_out), and their inputs carry the same leading K axis. The
training fast paths of the MLP and of the one-layer transformer are written with these functions
only, so the same code trains one model and a batch of seeds (:mod:`grokscope.train.core`)
without ``torch.vmap``, whose per-operation cost is several times that of the operation itself
for models this small. Stacked or not, each seed computes the same function; the sums inside a
stacked product or embedding backward may run in another order than alone, depending on the
CPU's kernels, so the two agree to float32 rounding, bit for bit only where the kernels happen to
sum alike (tests/test_batched.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def take_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` (rows, d) at ``idx`` (...): shape (..., d); for stacked tables
    (K, rows, d) and indices (K, ...), each seed's rows of its own table: (K, ..., d).

    Stacked tables are looked up as one table of K * rows rows, so the gradient is one
    embedding backward, with each row's contributions summed in the same order as alone."""
    if table.dim() == 2:
        return F.embedding(idx, table)
    k, rows = table.shape[0], table.shape[1]
    offsets = torch.arange(k, device=idx.device) * rows
    flat = idx + offsets.view(k, *([1] * (idx.dim() - 1)))
    return F.embedding(flat, table.reshape(k * rows, table.shape[-1]))


def affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x @ w + b as one fused product: x (n, d_in) or stacked (K, n, d_in)."""
    if b is None:
        return x @ w
    if w.dim() == 2:
        return torch.addmm(b, x, w)
    return torch.baddbmm(b.unsqueeze(-2), x, w)


def heads_to_cols(*weights: torch.Tensor) -> torch.Tensor:
    """(heads, d_model, d_head) weights side by side as one (d_model, sum heads*d_head) matrix
    (with a leading K axis when stacked)."""
    return torch.cat([w.transpose(-3, -2).flatten(-2) for w in weights], dim=-1)
