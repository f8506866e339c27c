"""Losses: cross-entropy in float64 (as Nanda et al. 2023 compute it) and StableMax.

Prieto, Barsbey, Mediano & Birdal (2025), "Grokking at the edge of numerical stability":
s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0; p_i = s(z_i) / sum_j s(z_j).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy64(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the log-softmax taken in float64."""
    return F.cross_entropy(logits.to(torch.float64), labels)


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """The StableMax map s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (always positive)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of -log(s(z_y) / sum_j s(z_j)) in float64 (Prieto et al. 2025)."""
    s = stablemax_s(logits.to(torch.float64))
    log_probs = torch.log(s) - torch.log(s.sum(dim=-1, keepdim=True))
    return F.nll_loss(log_probs, labels)


def loss_function(name: str):
    """The training loss called ``name`` (softmax or stablemax)."""
    if name == "softmax":
        return cross_entropy64
    if name == "stablemax":
        return stablemax_cross_entropy
    raise ValueError(f"unknown loss {name!r}")


def softmax_collapse_share(logits: torch.Tensor) -> float:
    """Share of samples whose float32 sum_j exp(z_j - max z) is exactly 1 (Prieto et al. 2025):
    every non-maximal probability has underflowed, so the gradient of the loss vanishes."""
    z = logits.detach().to(torch.float32)
    sums = torch.exp(z - z.max(dim=-1, keepdim=True).values).sum(dim=-1)
    return float((sums == 1.0).to(torch.float64).mean())
