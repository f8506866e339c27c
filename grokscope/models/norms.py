"""The squared weight norm of a model's parameters: one definition for the trainer's metrics
rows and the analyses of every kind."""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def weight_norm_sq(tensors: Iterable[torch.Tensor]) -> float:
    """Sum of squared parameters, each tensor summed in float64, then the tensors in order."""
    return float(sum(torch.sum(t.detach().double() ** 2) for t in tensors))
