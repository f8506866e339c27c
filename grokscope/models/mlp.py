"""MLP on the operands: embeddings or one-hot inputs, hidden layers, relu / gelu / x^2.

With one-hot inputs, one hidden layer, the x^2 activation and no biases this is the network that
Gromov (2023), "Grokking modular arithmetic", analyses in closed form. Operand embeddings are
concatenated (a shared ``embed.W_E``); with ``d_embed = 0`` the first layer acts on the one-hot
codes, computed as a sum of looked-up rows of ``layers.0.W`` (the same function, without the
one-hot matrix).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.hooks import HookedModule
from grokscope.models.stacked_ops import affine, take_rows
from grokscope.models.transformer import activation


class Linear(nn.Module):
    def __init__(self, d_in: int, d_out: int, bias: bool) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(d_in, d_out))
        self.b = nn.Parameter(torch.zeros(d_out)) if bias else None


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_embed: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_embed))


class Unembed(nn.Module):
    def __init__(self, d_in: int, d_vocab_out: int, bias: bool) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_in, d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(d_vocab_out)) if bias else None


class MLP(HookedModule):
    """``forward(tokens)``: logits from the operand tokens (every token but the final '=')."""

    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int, d_vocab_out: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.n_ctx = d_vocab, n_ctx
        self.d_vocab_out = d_vocab_out or d_vocab
        self.n_operands = n_ctx - 1
        if cfg.d_embed > 0:
            self.embed = Embed(d_vocab, cfg.d_embed)
            d_in = self.n_operands * cfg.d_embed
        else:
            d_in = self.n_operands * d_vocab
        widths = [d_in] + [cfg.d_mlp] * cfg.n_layers
        self.layers = nn.ModuleList(
            Linear(widths[i], widths[i + 1], cfg.bias) for i in range(cfg.n_layers)
        )
        self.unembed = Unembed(cfg.d_mlp, self.d_vocab_out, cfg.bias)
        self.act = activation(cfg.act)
        self.neuron_hook = f"layers.{cfg.n_layers - 1}.hook_post"

    def init_weights(self, seed: int) -> None:
        """Weights randn / sqrt(fan_in) (embeddings randn / sqrt(d_embed)), biases zero, times
        ``cfg.init_scale``; drawn on the CPU from ``seed`` in a fixed order."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith((".b", ".b_U")):
                    param.zero_()
                    continue
                fan_in = param.shape[1] if name == "embed.W_E" else param.shape[0]
                if name == "layers.0.W" and self.cfg.d_embed == 0:
                    fan_in = self.n_operands  # one-hot input: n_operands ones per example
                draw = torch.randn(param.shape, generator=gen, dtype=torch.float32)
                param.copy_(draw * self.cfg.init_scale / math.sqrt(fan_in))

    def hook_names(self) -> list[str]:
        names = ["hook_embed"] if self.cfg.d_embed > 0 else []
        for i in range(self.cfg.n_layers):
            names += [f"layers.{i}.hook_pre", f"layers.{i}.hook_post"]
        return names

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, d_vocab_out)."""
        layers = [(layer.W, layer.b) for layer in self.layers]
        W_E = self.embed.W_E if self.cfg.d_embed > 0 else None
        weights = (W_E, layers, self.unembed.W_U, self.unembed.b_U)
        return self._logits(tokens, weights, self.hook)

    def logits_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, 1, d_vocab_out): the operands are read as one input, one position."""
        return self(tokens).unsqueeze(1)

    def stacked_logits(self, params: dict[str, torch.Tensor], tokens: torch.Tensor):
        """Logits (K, batch, d_vocab_out) of K seeds' stacked ``params`` (name -> (K, *shape))
        on their own tokens (K, batch, n_ctx): the same computation as :meth:`forward`."""
        n = self.cfg.n_layers
        layers = [(params[f"layers.{i}.W"], params.get(f"layers.{i}.b")) for i in range(n)]
        W_E, W_U, b_U = params.get("embed.W_E"), params["unembed.W_U"], params.get("unembed.b_U")
        weights = (W_E, layers, W_U, b_U)
        return self._logits(tokens, weights, lambda name, x: x)

    def _logits(self, tokens: torch.Tensor, weights: tuple, hook) -> torch.Tensor:
        W_E, layers, W_U, b_U = weights
        operands = tokens[..., : self.n_operands]
        if W_E is not None:
            x = hook("hook_embed", take_rows(W_E, operands)).flatten(-2)
        else:  # one-hot input: the first layer's rows for each operand, summed
            offsets = torch.arange(self.n_operands, device=tokens.device) * self.d_vocab
            x = None
        for i, (W, b) in enumerate(layers):
            if i == 0 and x is None:
                pre = take_rows(W, operands + offsets).sum(dim=-2)
                pre = pre if b is None else pre + b.unsqueeze(-2)
            else:
                pre = affine(x, W, b)
            pre = hook(f"layers.{i}.hook_pre", pre)
            x = hook(f"layers.{i}.hook_post", self.act(pre))
        return affine(x, W_U, b_U)
