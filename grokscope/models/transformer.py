"""Decoder-only transformer; the default is exactly the Nanda et al. (2023) main-run model.

Nanda, Chan, Lieberum, Smith & Steinhardt (ICLR 2023), "Progress measures for grokking via
mechanistic interpretability": 1 layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm,
learned positions, untied embed / unembed, no attention biases; W_E, W_pos, W_Q, W_K, W_V, W_O,
W_in, W_out drawn randn / sqrt(d_model), W_U randn / sqrt(d_vocab), biases zero.

Parameter names and shapes follow TransformerLens: ``embed.W_E`` (d_vocab, d_model),
``pos_embed.W_pos`` (n_ctx, d_model), ``blocks.i.attn.W_Q`` (n_heads, d_model, d_head), ``W_O``
(n_heads, d_head, d_model), ``blocks.i.mlp.W_in`` (d_model, d_mlp), ``unembed.W_U``
(d_model, d_vocab_out).

Every task here is read out at the last position only, so the training forward pass computes
just what that position depends on: keys and values at every position, but the query, the MLP
and the unembedding at the last position alone. For a one-layer model without LayerNorm the keys,
values and queries are moreover functions of (token, position) only, so they are looked up from
per-position tables of size d_vocab instead of being computed per example, and so are the
attention scores (query token x key token x key position). The function is the
same; :meth:`Transformer.forward` uses the full pass (every position, every hook) whenever a cache
or a patch is active.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.hooks import HookedModule
from grokscope.models.stacked_ops import affine, heads_to_cols, take_rows


def activation(name: str):
    """The elementwise non-linearity called ``name``."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "quad":
        return torch.square
    raise ValueError(f"unknown activation {name!r}")


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


class LayerNorm(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, eps=1e-5)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))


class MLPBlock(nn.Module):
    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.layernorm:
            self.ln1 = LayerNorm(cfg.d_model)
            self.ln2 = LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.d_head)
        self.mlp = MLPBlock(cfg.d_model, cfg.d_mlp)


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab_out: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))


class Transformer(HookedModule):
    """Transformer whose ``forward(tokens)`` returns the logits at the last position.

    ``d_vocab_out`` defaults to ``d_vocab``: as in Nanda et al. (2023) the unembedding covers every
    token, '=' included, and the loss is taken over all of them.
    """

    neuron_hook = "blocks.0.mlp.hook_post"

    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int, d_vocab_out: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.n_ctx = d_vocab, n_ctx
        self.d_vocab_out = d_vocab_out or d_vocab
        self.embed = Embed(d_vocab, cfg.d_model)
        self.pos_embed = PosEmbed(n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        if cfg.layernorm:
            self.ln_final = LayerNorm(cfg.d_model)
        self.unembed = Unembed(cfg.d_model, self.d_vocab_out)
        self.act = activation(cfg.act)
        self.neuron_hook = f"blocks.{cfg.n_layers - 1}.mlp.hook_post"
        self.register_buffer(
            "causal_mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False
        )

    def init_weights(self, seed: int) -> None:
        """Nanda et al. (2023) initialisation, drawn on the CPU from ``seed`` in a fixed order,
        times ``cfg.init_scale`` (1 by default), so any device gets the same weights."""
        gen = torch.Generator().manual_seed(seed)
        scale = self.cfg.init_scale
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith(("b_in", "b_out")) or name.endswith(".b"):
                    param.zero_()
                    continue
                if name.endswith(".w"):
                    param.fill_(1.0)
                    continue
                std = 1 / math.sqrt(self.d_vocab_out if name == "unembed.W_U" else self.cfg.d_model)
                draw = torch.randn(param.shape, generator=gen, dtype=torch.float32)
                param.copy_(draw * std * scale)

    def hook_names(self) -> list[str]:
        names = ["hook_embed", "hook_pos_embed"]
        for i in range(self.cfg.n_layers):
            b = f"blocks.{i}"
            names += [f"{b}.hook_resid_pre"]
            names += [f"{b}.attn.hook_{x}" for x in ("q", "k", "v", "attn_scores", "pattern", "z")]
            names += [f"{b}.hook_attn_out", f"{b}.hook_resid_mid"]
            names += [f"{b}.mlp.hook_pre", f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
            names += [f"{b}.hook_resid_post"]
        return names

    # -- full pass: every position, every hook ------------------------------------------------

    def _attention_full(self, i: int, x: torch.Tensor) -> torch.Tensor:
        attn, b = self.blocks[i].attn, f"blocks.{i}.attn"
        q = self.hook(f"{b}.hook_q", torch.einsum("bpd,hde->bphe", x, attn.W_Q))
        k = self.hook(f"{b}.hook_k", torch.einsum("bpd,hde->bphe", x, attn.W_K))
        v = self.hook(f"{b}.hook_v", torch.einsum("bpd,hde->bphe", x, attn.W_V))
        n = x.shape[1]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.cfg.d_head)
        scores = scores.masked_fill(~self.causal_mask[:n, :n], float("-inf"))
        scores = self.hook(f"{b}.hook_attn_scores", scores)
        pattern = self.hook(f"{b}.hook_pattern", scores.softmax(dim=-1))
        z = self.hook(f"{b}.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, attn.W_O)

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        mlp, b = self.blocks[i].mlp, f"blocks.{i}.mlp"
        pre = self.hook(f"{b}.hook_pre", x @ mlp.W_in + mlp.b_in)
        post = self.hook(f"{b}.hook_post", self.act(pre))
        return post @ mlp.W_out + mlp.b_out

    def _block_rest(self, i: int, resid: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        b = f"blocks.{i}"
        attn_out = self.hook(f"{b}.hook_attn_out", attn_out)
        resid = self.hook(f"{b}.hook_resid_mid", resid + attn_out)
        x = self.blocks[i].ln2(resid) if self.cfg.layernorm else resid
        mlp_out = self.hook(f"{b}.hook_mlp_out", self._mlp(i, x))
        return self.hook(f"{b}.hook_resid_post", resid + mlp_out)

    def logits_all(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every position through every layer (all hooks fire): logits (batch, pos, vocab)."""
        return self._unembed(self._resid_full(tokens))

    def forward_full(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every position through every layer (all hooks fire); logits at the last position."""
        return self._unembed(self._resid_full(tokens)[:, -1])

    def _resid_full(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        resid = self.hook("hook_embed", self.embed.W_E[tokens])
        resid = resid + self.hook("hook_pos_embed", self.pos_embed.W_pos[:n].unsqueeze(0))
        for i, block in enumerate(self.blocks):
            resid = self.hook(f"blocks.{i}.hook_resid_pre", resid)
            x = block.ln1(resid) if self.cfg.layernorm else resid
            resid = self._block_rest(i, resid, self._attention_full(i, x))
        return resid

    def _unembed(self, resid_last: torch.Tensor) -> torch.Tensor:
        if self.cfg.layernorm:
            resid_last = self.ln_final(resid_last)
        return resid_last @ self.unembed.W_U

    # -- fast pass: only what the last position depends on ------------------------------------

    def _attend_last(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Attention output at the last position from q (batch, heads*d_head) and k, v
        (batch, pos, heads*d_head). Elementwise products and sums: with a handful of positions
        this beats batched matrix products of tiny matrices."""
        batch, n, _ = k.shape
        H, E = self.cfg.n_heads, self.cfg.d_head
        q = q.view(batch, 1, H, E)
        scores = (q * k.view(batch, n, H, E)).sum(dim=-1) / math.sqrt(E)  # (batch, pos, heads)
        pattern = scores.softmax(dim=1).unsqueeze(-1)
        z = (pattern * v.view(batch, n, H, E)).sum(dim=1).reshape(batch, H * E)
        return z @ self.blocks[i].attn.W_O.reshape(H * E, -1)

    def _forward_fast(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n = tokens.shape
        HE = self.cfg.n_heads * self.cfg.d_head
        if self.cfg.n_layers == 1 and not self.cfg.layernorm:
            return self._forward_tables(tokens)
        resid = self.embed.W_E[tokens] + self.pos_embed.W_pos[:n].unsqueeze(0)
        for i in range(self.cfg.n_layers - 1):
            x = self.blocks[i].ln1(resid) if self.cfg.layernorm else resid
            resid = self._block_rest(i, resid, self._attention_full(i, x))
        i = self.cfg.n_layers - 1
        attn = self.blocks[i].attn
        x = self.blocks[i].ln1(resid) if self.cfg.layernorm else resid
        k, v = (x @ heads_to_cols(attn.W_K, attn.W_V)).split(HE, dim=-1)
        q = x[:, -1] @ heads_to_cols(attn.W_Q)
        resid = resid[:, -1] + self._attend_last(i, q, k, v)
        x = self.blocks[i].ln2(resid) if self.cfg.layernorm else resid
        resid = self.record_last(f"blocks.{i}.hook_resid_post", resid + self._mlp_fast(i, x))
        return self._unembed(resid)

    def _forward_tables(self, tokens: torch.Tensor) -> torch.Tensor:
        attn, mlp = self.blocks[0].attn, self.blocks[0].mlp
        weights = (self.embed.W_E, self.pos_embed.W_pos, attn.W_Q, attn.W_K, attn.W_V, attn.W_O)
        weights += (mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out, self.unembed.W_U)
        return self._tables_logits(tokens, weights)

    def stacked_logits(self, params: dict[str, torch.Tensor], tokens: torch.Tensor):
        """Logits (K, batch, d_vocab_out) of K seeds' stacked ``params`` (name -> (K, *shape))
        on their own tokens (K, batch, n_ctx), for a one-layer model without LayerNorm (the
        computation of its training pass); None for other shapes."""
        if self.cfg.n_layers != 1 or self.cfg.layernorm:
            return None
        names = ["embed.W_E", "pos_embed.W_pos"]
        names += [f"blocks.0.attn.W_{x}" for x in "QKVO"]
        names += [f"blocks.0.mlp.{x}" for x in ("W_in", "b_in", "W_out", "b_out")]
        return self._tables_logits(tokens, tuple(params[n] for n in names + ["unembed.W_U"]))

    def _tables_logits(self, tokens: torch.Tensor, weights: tuple) -> torch.Tensor:
        """One layer, no LayerNorm: the residual before attention is W_E[token] + W_pos[pos], so
        queries, keys, values and even the attention scores (query token x key token x key
        position) are small tables, looked up per example. Weights may be stacked (leading K)."""
        W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, b_in, W_out, b_out, W_U = weights
        n = tokens.shape[-1]
        V, H, E = self.d_vocab, self.cfg.n_heads, self.cfg.d_head
        x_table = W_E.unsqueeze(-3) + W_pos[..., :n, :].unsqueeze(-2)  # (n, V, D)
        kv_table = x_table.flatten(-3, -2) @ heads_to_cols(W_K, W_V)
        k_table, v_table = kv_table.split(H * E, dim=-1)  # rows: position * V + token
        q_table = (x_table[..., -1, :, :] @ heads_to_cols(W_Q)).unflatten(-1, (H, E))
        k_heads = k_table.unflatten(-1, (H, E))
        s_table = torch.einsum("...qhe,...khe->...qkh", q_table, k_heads) / math.sqrt(E)
        key_rows = tokens + torch.arange(n, device=tokens.device) * V  # (batch, n)
        scores = take_rows(s_table.flatten(-3, -2), tokens[..., -1:] * (n * V) + key_rows)
        pattern = scores.softmax(dim=-2).unsqueeze(-1)  # (batch, key pos, heads, 1)
        v = take_rows(v_table, key_rows).unflatten(-1, (H, E))
        z = (pattern * v).sum(dim=-3).flatten(-2)
        resid = take_rows(x_table[..., -1, :, :], tokens[..., -1]) + z @ W_O.flatten(-3, -2)
        post = self.record_last("blocks.0.mlp.hook_post", self.act(affine(resid, W_in, b_in)))
        resid = self.record_last(
            "blocks.0.hook_resid_post", resid + (post @ W_out + b_out.unsqueeze(-2))
        )
        return resid @ W_U

    def _mlp_fast(self, i: int, x: torch.Tensor) -> torch.Tensor:
        mlp = self.blocks[i].mlp
        post = self.record_last(
            f"blocks.{i}.mlp.hook_post", self.act(affine(x, mlp.W_in, mlp.b_in))
        )
        return post @ mlp.W_out + mlp.b_out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at the last position, (batch, d_vocab_out)."""
        if self.hooks_active:
            return self.forward_full(tokens)
        return self._forward_fast(tokens)
