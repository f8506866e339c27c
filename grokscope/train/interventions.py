"""Gradient and weight interventions known to change grokking, applied between backward and step.

- Grokfast (Lee et al. 2024): amplify the slow component of the gradient. EMA filter:
  mu <- alpha mu + (1 - alpha) g; g <- g + lambda mu (defaults alpha 0.98, lambda 2.0). Moving
  average: g <- g + lambda * mean of the last w gradients, once w gradients have been seen.
- Orthogonal gradient, "perp-Grad" (Prieto et al. 2025): per parameter tensor
  g_perp = g - (<w, g> / <w, w>) w, rescaled to the norm of g.
- Weight-norm constraint (Liu, Michaud & Tegmark 2023, Omnigrok): after every step rescale all
  parameters together to a fixed total L2 norm.
- Weight decay toward the initial weights instead of toward zero.
- Gradient clipping to a total L2 norm (each seed's gradient over all its parameters), as
  ``torch.nn.utils.clip_grad_norm_`` does for one model; Murty et al.'s (2023) released
  structural-grokking code clips at norm 1.

Each filter keeps its state as a dict of tensors so that checkpoints can store and restore it.
"""

from __future__ import annotations

import torch

from grokscope.config import OptimConfig


class GradFilter:
    """Grokfast filter state for a list of named parameters (``kind`` none / ema / ma)."""

    def __init__(self, cfg: OptimConfig, names: list[str]) -> None:
        self.kind, self.names = cfg.grokfast, names
        self.alpha, self.lam, self.window = (
            cfg.grokfast_alpha,
            cfg.grokfast_lambda,
            cfg.grokfast_window,
        )
        self.ema: dict[str, torch.Tensor] = {}
        self.history: dict[str, torch.Tensor] = {}  # (window, *shape) ring buffer per parameter
        self.seen = 0

    @torch.no_grad()
    def apply(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's .grad by its filtered version, in place."""
        if self.kind == "none":
            return
        slot = self.seen % self.window
        self.seen += 1
        for name, p in zip(self.names, params, strict=True):
            g = p.grad
            if self.kind == "ema":
                if name not in self.ema:
                    self.ema[name] = g.clone()
                else:
                    self.ema[name].mul_(self.alpha).add_(g, alpha=1 - self.alpha)
                g.add_(self.ema[name], alpha=self.lam)
            else:
                if name not in self.history:
                    self.history[name] = torch.zeros(
                        (self.window, *g.shape), dtype=g.dtype, device=g.device
                    )
                self.history[name][slot].copy_(g)
                if self.seen >= self.window:
                    g.add_(self.history[name].mean(dim=0), alpha=self.lam)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"ema.{k}": v for k, v in self.ema.items()}
        out.update({f"history.{k}": v for k, v in self.history.items()})
        out["seen"] = torch.tensor(self.seen, dtype=torch.int64)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        self.seen = int(tensors.get("seen", torch.tensor(0)))
        self.ema = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        self.history = {k[8:]: v.to(device) for k, v in tensors.items() if k.startswith("history.")}


def _seed_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.dim()))


def _per_seed(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) vector shaped to broadcast against ``like`` (K, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def orthogonalize_gradients(params: list[torch.Tensor], eps: float = 1e-30) -> None:
    """perp-Grad (Prieto et al. 2025): remove from each gradient its component along the
    weights, then rescale it to the original gradient norm; for every seed separately.

    ``params`` carry a leading seed axis (K, *shape), K = 1 for one run (the training core
    always stacks); the reductions run over every axis but the first."""
    for p in params:
        g, w = p.grad, p.detach()
        dims = _seed_dims(w)
        ww = torch.sum(w * w, dim=dims)
        ok = ww > eps
        norm = torch.linalg.vector_norm(g, dim=dims)
        coef = torch.where(ok, torch.sum(w * g, dim=dims) / torch.where(ok, ww, 1.0), 0.0)
        g.sub_(w * _per_seed(coef, w))
        new_norm = torch.linalg.vector_norm(g, dim=dims)
        scale = torch.where(
            ok & (new_norm > eps), norm / torch.where(new_norm > 0, new_norm, 1.0), 1.0
        )
        g.mul_(_per_seed(scale, g))


@torch.no_grad()
def clip_gradients(params: list[torch.Tensor], max_norm: float, eps: float = 1e-6) -> None:
    """Scale each seed's gradient so that its total L2 norm (over all of its parameters) is at
    most ``max_norm``: g <- g * min(1, max_norm / (|g| + eps)), the rule and the eps of
    ``torch.nn.utils.clip_grad_norm_``, for every seed of stacked ``params`` (K, *shape)
    separately. The norm is summed in float64 (torch sums in the gradient's dtype), so a
    gradient at the threshold may be scaled by a factor differing from torch's in the last
    float32 bit."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.sqrt(sum(torch.sum(g.double() ** 2, dim=_seed_dims(g)) for g in grads))
    scale = torch.clamp(max_norm / (norm + eps), max=1.0)
    if bool((scale >= 1.0).all()):
        return  # nothing to clip: leave the gradients untouched, bit for bit
    for g in grads:
        g.mul_(_per_seed(scale, g).to(g.dtype))


@torch.no_grad()
def decay_toward(
    params: list[torch.nn.Parameter], targets: list[torch.Tensor], factor: float
) -> None:
    """w <- w - factor * (w - w0): decoupled weight decay toward fixed targets (e.g. the init)."""
    for p, t in zip(params, targets, strict=True):
        p.sub_(p - t, alpha=factor)


@torch.no_grad()
def total_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each seed's parameters together, (K,) in float64, for stacked ``params``."""
    return torch.sqrt(sum(torch.sum(p.detach().double() ** 2, dim=_seed_dims(p)) for p in params))


@torch.no_grad()
def project_to_norm(params: list[torch.Tensor], target: float) -> None:
    """Rescale each seed's parameters together so that their total L2 norm equals ``target``
    (Omnigrok's constant-norm sphere, Liu et al. 2023); ``params`` are stacked (K, *shape)."""
    scale = (target / total_norm(params)).to(params[0].dtype)
    for p in params:
        p.mul_(_per_seed(scale, p))
