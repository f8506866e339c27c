"""Named activations: cache or patch any intermediate by its TransformerLens-style name.

A model routes every named intermediate through :meth:`HookedModule.hook`. With no cache and no
patches the call is free; :meth:`run_with_cache` records activations and :meth:`run_with_hooks`
replaces them with ``fn(activation, name)`` (the TransformerLens convention). Both run the full
pass and return logits at every position, (batch, pos, vocab), as TransformerLens does; an MLP,
which reads its operands as one input, has one position. Calling the model itself,
``model(tokens)``, returns the logits at the last position only, (batch, vocab): every task here is
read out there, and training computes just what that position needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]


class HookedModule(nn.Module):
    """Base class giving a model cache / patch hooks on its named activations."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, torch.Tensor] | None = None
        self._cache_names: set[str] | None = None
        self._patches: dict[str, HookFn] = {}
        self._last: dict[str, torch.Tensor] | None = None

    @property
    def hooks_active(self) -> bool:
        return self._cache is not None or bool(self._patches)

    def hook(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Apply a patch registered for ``name`` and record the result when caching."""
        if name in self._patches:
            out = self._patches[name](x, name)
            if out is not None:
                x = out
        if self._cache is not None and (self._cache_names is None or name in self._cache_names):
            self._cache[name] = x.detach()
        return x

    def hook_names(self) -> list[str]:
        """Every activation name the full forward pass produces, in order."""
        raise NotImplementedError

    def logits_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """The full pass (every hook fires): logits at every position, (batch, pos, vocab)."""
        raise NotImplementedError

    def run_with_cache(
        self, tokens: torch.Tensor, names: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (batch, pos, vocab) and a dict of the named activations (all of them, or only
        ``names``), keyed by their TransformerLens-style names."""
        self._cache, self._cache_names = {}, set(names) if names else None
        try:
            logits = self.logits_all(tokens)
            return logits, self._cache
        finally:
            self._cache, self._cache_names = None, None

    def record_last(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Record activation ``name`` at the answer position, (batch, width), computed by the
        fast last-position pass, while :meth:`answer_pass` asks for it; free otherwise."""
        if self._last is not None:
            self._last[name] = x.detach()
        return x

    @torch.no_grad()
    def answer_pass(
        self, tokens: torch.Tensor, names: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits at the answer position (batch, vocab) and the named activations there (name ->
        (batch, width)), from one forward pass. The fast last-position pass serves when it
        computes every name (a transformer's last MLP and residual stream, its answer-position
        outputs); otherwise the full cached pass does, read at the last position. The two agree
        to float32 rounding (tests/test_models.py)."""
        self._last = {}
        try:
            logits = self(tokens)
            got = self._last
        finally:
            self._last = None
        if all(n in got for n in names):
            return logits, {n: got[n] for n in names}
        logits, cache = self.run_with_cache(tokens, names)
        return logits[:, -1], {n: (a[:, -1] if a.ndim == 3 else a) for n, a in cache.items()}

    def run_with_hooks(
        self, tokens: torch.Tensor, fwd_hooks: list[tuple[str, HookFn]]
    ) -> torch.Tensor:
        """Logits (batch, pos, vocab) with each named activation replaced by what its hook
        returns."""
        unknown = [n for n, _ in fwd_hooks if n not in self.hook_names()]
        if unknown:
            raise KeyError(f"unknown hook name(s): {', '.join(unknown)}")
        self._patches = dict(fwd_hooks)
        try:
            return self.logits_all(tokens)
        finally:
            self._patches = {}
