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
import torch.nn.functional as F
from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.hooks import HookedModule
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
        operands = tokens[:, : self.n_operands]
        first = self.layers[0]
        if self.cfg.d_embed > 0:
            x = self.hook("hook_embed", self.embed.W_E[operands]).flatten(1)
            pre = x @ first.W
        else:
            offsets = torch.arange(self.n_operands, device=tokens.device) * self.d_vocab
            pre = F.embedding(operands + offsets, first.W).sum(dim=1)
        if first.b is not None:
            pre = pre + first.b
        for i, layer in enumerate(self.layers):
            if i > 0:
                pre = x @ layer.W + (layer.b if layer.b is not None else 0.0)
            pre = self.hook(f"layers.{i}.hook_pre", pre)
            x = self.hook(f"layers.{i}.hook_post", self.act(pre))
        logits = x @ self.unembed.W_U
        return logits + self.unembed.b_U if self.unembed.b_U is not None else logits
