"""Losses: cross-entropy in float64 (as Nanda et al. 2023 compute it) and StableMax.

Prieto, Barsbey, Mediano & Birdal (2025), "Grokking at the edge of numerical stability":
s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0; p_i = s(z_i) / sum_j s(z_j).

Every function here takes logits (..., n, classes) and labels (..., n) and averages over the
example axis n only, keeping any leading axes: a batch of K seeds (K, n, classes) gets K losses
from one call, and each equals the loss of that seed's slice computed alone (the same per-example
terms, averaged over the same n), so single and batched training share these functions.
"""

from __future__ import annotations

import torch


class _CrossEntropy64(torch.autograd.Function):
    """Per-example cross-entropy with the log-softmax in float64, from its definition:
    nll = log sum_j exp(z_j - m) - (z_y - m), gradient (softmax(z) - onehot(y)) * upstream.

    The same function as ``F.cross_entropy`` on float64 logits (losses agree to a few ulp of the
    log-normaliser, gradients to float32 rounding; tests/test_train.py), but on a CPU it saves a
    third of the loss's cost for small batches of stacked seeds, where torch's float64
    log-softmax kernel costs several times an exp per element."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = logits.to(torch.float64)
        top = z.amax(dim=-1, keepdim=True)
        e = (z - top).exp()
        total = e.sum(dim=-1, keepdim=True)
        log_norm = top + total.log()
        ctx.save_for_backward(e, total, labels)
        ctx.dtype = logits.dtype
        return (log_norm - z.gather(-1, labels.unsqueeze(-1))).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        e, total, labels = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        out = e * (g / total)
        out.scatter_add_(-1, labels.unsqueeze(-1), -g.expand_as(labels.unsqueeze(-1)))
        return out.to(ctx.dtype), None


def cross_entropy64_each(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy (..., n), with the log-softmax taken in float64."""
    return _CrossEntropy64.apply(logits, labels)


def cross_entropy64(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the examples, with the log-softmax taken in float64."""
    return cross_entropy64_each(logits, labels).mean(dim=-1)


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """The StableMax map s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (always positive)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))


def stablemax_cross_entropy_each(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example -log(s(z_y) / sum_j s(z_j)) (..., n), in float64 (Prieto et al. 2025)."""
    s = stablemax_s(logits.to(torch.float64))
    log_probs = torch.log(s) - torch.log(s.sum(dim=-1, keepdim=True))
    return -torch.gather(log_probs, -1, labels.unsqueeze(-1)).squeeze(-1)


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean StableMax cross-entropy over the examples, in float64 (Prieto et al. 2025)."""
    return stablemax_cross_entropy_each(logits, labels).mean(dim=-1)


# name -> (mean over the examples, per example)
_LOSSES = {
    "softmax": (cross_entropy64, cross_entropy64_each),
    "stablemax": (stablemax_cross_entropy, stablemax_cross_entropy_each),
}


def _loss_pair(name: str):
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}")
    return _LOSSES[name]


def loss_function(name: str):
    """The training loss called ``name`` (softmax or stablemax): mean over the examples."""
    return _loss_pair(name)[0]


def per_example_loss(name: str):
    """The loss called ``name`` per example (..., n): evaluation sums these over a whole split,
    so the result does not depend on how the split was cut into chunks."""
    return _loss_pair(name)[1]


def softmax_collapsed(logits: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per example (..., n): is sum_j exp(z_j - max z), computed in ``dtype``, exactly 1?

    Softmax collapse (SC) of Prieto et al. (2025): the largest logit dominates so far that the
    other terms vanish in the floating-point sum, the loss of a correctly classified example
    rounds to exactly 0 and its correct-class gradient to exactly 0. Whether that happens depends
    on the precision of the sum, so it is measured at the precision the loss works in: float64
    (the default) is that of :func:`cross_entropy64`, which forms this very sum, and there SC
    needs a logit gap of about 53 ln 2 = 36.7 for a single rival class (float32: 24 ln 2 = 16.6).
    ``dtype=torch.float32`` gives the share in the float32 setting of the paper."""
    z = logits.detach().to(dtype)
    return (z - z.amax(dim=-1, keepdim=True)).exp().sum(dim=-1) == 1.0


def stablemax_collapsed(logits: torch.Tensor) -> torch.Tensor:
    """Per example (..., n): does the float64 StableMax normaliser sum_j s(z_j) equal its
    largest term max_j s(z_j) exactly, as the StableMax loss computes it?

    The analogue of softmax collapse for :func:`stablemax_cross_entropy`: the non-maximal terms
    vanish in the sum. Because s decays only like 1 / |x| for negative x and grows like x for
    positive x, this needs logits of order 1e16 (the largest term 2^53 times the others): in
    practice never, which is why StableMax was proposed (Prieto et al. 2025)."""
    s = stablemax_s(logits.detach().to(torch.float64))
    return s.sum(dim=-1) == s.amax(dim=-1)
