"""Causal language-model transformer for sequence tasks (question formation, tense, Dyck).

The model Murty, Sharma, Andreas & Manning (ACL 2023) train for structural grokking: a vanilla
transformer language model, post-LayerNorm, sinusoidal positions, dropout 0.1 (their d_model 512,
4 heads, d_ff 512 on a GPU). Every piece is a setting: ``n_layers``, ``d_model``, ``n_heads`` of
``d_head``, ``d_mlp`` (d_ff), ``act``, ``ln_position`` pre / post (Xiong et al. 2020 for the
difference), ``positions`` sinusoidal (Vaswani et al. 2017, embeddings scaled by sqrt(d_model)) or
learned, ``dropout`` (on the embeddings, the attention weights, the MLP hidden layer and both
residual branches, where torch's ``TransformerEncoderLayer`` puts it).

Parameter and activation names follow TransformerLens: ``embed.W_E``, ``pos_embed.W_pos`` (learned
positions only), ``blocks.i.attn.W_Q`` (n_heads, d_model, d_head), ``b_Q`` (n_heads, d_head),
``W_O`` (n_heads, d_head, d_model), ``blocks.i.ln1.w``, ``blocks.i.mlp.W_in`` (d_model, d_mlp),
``ln_final.w`` (pre-LN only), ``unembed.W_U`` / ``b_U``; hooks ``hook_embed``, ``hook_pos_embed``,
``blocks.i.hook_resid_pre``, ``blocks.i.attn.hook_pattern`` (batch, head, query, key),
``blocks.i.hook_attn_out``, ``blocks.i.hook_resid_mid``, ``blocks.i.mlp.hook_post``,
``blocks.i.hook_resid_post``, ``ln_final.hook_normalized``.

``model(tokens)`` returns the logits at every position, (batch, pos, vocab): a language model is
read out everywhere. Sequences are right-padded; with a causal mask a real token never attends to
a pad after it, so no padding mask is needed and a padded row computes exactly what the unpadded
sequence computes at its real positions. Attention runs through
``F.scaled_dot_product_attention`` (fused kernels) unless a hook needs the pattern.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.hooks import HookedModule
from grokscope.models.stacked_ops import affine, heads_to_cols, take_rows
from grokscope.models.transformer import Embed, LayerNorm, MLPBlock, PosEmbed, activation


def sinusoidal_table(n_ctx: int, d_model: int) -> torch.Tensor:
    """Vaswani et al. (2017) positions: sin(pos / 10000^(2i/d)) at even, cos at odd dimensions."""
    pos = torch.arange(n_ctx, dtype=torch.float64).unsqueeze(1)
    rate = torch.exp(
        -math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model
    )
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * rate)
    table[:, 1::2] = torch.cos(pos * rate[: d_model // 2])
    return table.float()


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ w + b over the last axis of x, as one fused product (addmm)."""
    flat = torch.addmm(b, x.reshape(-1, x.shape[-1]), w)
    return flat.view(*x.shape[:-1], w.shape[1])


class _Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int) -> None:
        super().__init__()
        for name in ("W_Q", "W_K", "W_V"):
            setattr(self, name, nn.Parameter(torch.empty(n_heads, d_model, d_head)))
        for name in ("b_Q", "b_K", "b_V"):
            setattr(self, name, nn.Parameter(torch.zeros(n_heads, d_head)))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_O = nn.Parameter(torch.zeros(d_model))


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model)
        self.attn = _Attention(cfg.d_model, cfg.n_heads, cfg.d_head)
        self.ln2 = LayerNorm(cfg.d_model)
        self.mlp = MLPBlock(cfg.d_model, cfg.d_mlp)


class _Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab))
        self.b_U = nn.Parameter(torch.zeros(d_vocab))


class LMTransformer(HookedModule):
    """Causal transformer language model; ``forward(tokens)`` -> logits (batch, pos, vocab)."""

    def __init__(self, cfg: ModelConfig, d_vocab: int, n_ctx: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.n_ctx = d_vocab, n_ctx
        self.pre_ln = cfg.ln_position == "pre"
        self.embed = Embed(d_vocab, cfg.d_model)
        if cfg.positions == "learned":
            self.pos_embed = PosEmbed(n_ctx, cfg.d_model)
        else:
            self.register_buffer(
                "pos_table", sinusoidal_table(n_ctx, cfg.d_model), persistent=False
            )
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        if self.pre_ln:
            self.ln_final = LayerNorm(cfg.d_model)
        self.unembed = _Unembed(cfg.d_model, d_vocab)
        self.act = activation(cfg.act)
        self.neuron_hook = f"blocks.{cfg.n_layers - 1}.mlp.hook_post"

    def init_weights(self, seed: int) -> None:
        """Matrices drawn randn / sqrt(fan_in) (W_E randn / sqrt(d_model), so that with sinusoidal
        positions the scaled embedding has unit scale, as Vaswani et al. 2017), biases zero,
        LayerNorm gains one; drawn on the CPU from ``seed`` in a fixed order, times
        ``cfg.init_scale``, so every device gets the same weights."""
        gen = torch.Generator().manual_seed(seed)
        d_model = self.cfg.d_model
        fan_in = {"W_O": self.cfg.d_head * self.cfg.n_heads, "W_out": self.cfg.d_mlp}
        with torch.no_grad():
            for name, param in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf.startswith("b"):
                    param.zero_()
                elif leaf == "w":
                    param.fill_(1.0)
                else:
                    std = 1.0 / math.sqrt(fan_in.get(leaf, d_model))
                    draw = torch.randn(param.shape, generator=gen) * std * self.cfg.init_scale
                    param.copy_(draw)

    def hook_names(self) -> list[str]:
        names = ["hook_embed", "hook_pos_embed"]
        for i in range(self.cfg.n_layers):
            b = f"blocks.{i}"
            names += [
                f"{b}.hook_resid_pre",
                f"{b}.attn.hook_pattern",
                f"{b}.hook_attn_out",
                f"{b}.hook_resid_mid",
                f"{b}.mlp.hook_post",
                f"{b}.hook_resid_post",
            ]
        if self.pre_ln:
            names.append("ln_final.hook_normalized")
        return names

    # -- the pass --------------------------------------------------------------------------------

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.dropout
        return F.dropout(x, p, self.training) if p > 0 else x

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        if tokens.shape[1] > self.n_ctx or (
            positions.numel() and int(positions.max()) >= self.n_ctx
        ):
            raise ValueError(f"sequence longer than the model's context ({self.n_ctx} positions)")
        emb = self.embed.W_E[tokens]
        if self.cfg.positions == "learned":
            pos = self.pos_embed.W_pos[positions]
        else:
            emb = emb * math.sqrt(self.cfg.d_model)
            pos = self.pos_table[positions]
        emb, pos = self.hook("hook_embed", emb), self.hook("hook_pos_embed", pos)
        return self._drop(emb + pos)

    def _attention(self, i: int, x: torch.Tensor) -> torch.Tensor:
        a = self.blocks[i].attn
        batch, n, d = x.shape
        h, dh = a.W_Q.shape[0], a.W_Q.shape[2]
        # one product for queries, keys and values: (d_model, 3 * n_heads * d_head)
        w = torch.cat([m.permute(1, 0, 2).reshape(d, h * dh) for m in (a.W_Q, a.W_K, a.W_V)], 1)
        b = torch.cat([a.b_Q.reshape(-1), a.b_K.reshape(-1), a.b_V.reshape(-1)])
        qkv = _affine(x, w, b).view(batch, n, 3, h, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.cfg.dropout if self.training else 0.0
        if self.hooks_active:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
            pattern = self.hook(f"blocks.{i}.attn.hook_pattern", pattern)
            z = F.dropout(pattern, p, self.training) @ v if p > 0 else pattern @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        out = _affine(z.transpose(1, 2).reshape(batch, n, h * dh), a.W_O.reshape(h * dh, d), a.b_O)
        return self.hook(f"blocks.{i}.hook_attn_out", out)

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        m = self.blocks[i].mlp
        post = self.hook(f"blocks.{i}.mlp.hook_post", self.act(_affine(x, m.W_in, m.b_in)))
        return _affine(self._drop(post), m.W_out, m.b_out)

    def final_states(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The last layer's states (after the final LayerNorm for pre-LN), (batch, pos, d_model).

        ``positions`` (batch, pos) gives each token's position id (default 0, 1, ...): a run
        on a span of a sentence keeps the span's original positions (tree projections)."""
        x = self._embed(tokens, positions)
        for i, block in enumerate(self.blocks):
            b = f"blocks.{i}"
            x = self.hook(f"{b}.hook_resid_pre", x)
            if self.pre_ln:
                x = x + self._drop(self._attention(i, block.ln1(x)))
                x = self.hook(f"{b}.hook_resid_mid", x)
                x = x + self._drop(self._mlp(i, block.ln2(x)))
            else:
                x = block.ln1(x + self._drop(self._attention(i, x)))
                x = self.hook(f"{b}.hook_resid_mid", x)
                x = block.ln2(x + self._drop(self._mlp(i, x)))
            x = self.hook(f"{b}.hook_resid_post", x)
        if self.pre_ln:
            x = self._final_norm(x)
        return x

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm. ``ln_final.hook_normalized`` is, as in TransformerLens, the
        normalised state before the gain and bias; the fused kernel serves when no hook
        watches (the two agree to float32 rounding)."""
        if not self.hooks_active:
            return self.ln_final(x)
        normed = F.layer_norm(x, (x.shape[-1],), eps=1e-5)
        return self.hook("ln_final.hook_normalized", normed) * self.ln_final.w + self.ln_final.b

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        return _affine(self.final_states(tokens, positions), self.unembed.W_U, self.unembed.b_U)

    def logits_all(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward(tokens)

    # -- the training pass of K stacked seeds --------------------------------------------------

    def stacked_train_logits(
        self, params: dict[str, torch.Tensor], tokens: torch.Tensor, drop: SeedDropout
    ) -> torch.Tensor:
        """Logits (K, batch, pos, vocab) of K seeds' stacked ``params`` (name -> (K, *shape))
        on their own tokens (K, batch, pos): the function :meth:`forward` computes, with dropout
        at the same places drawn per seed by ``drop`` (so a seed draws the same masks alone or
        in a batch), and attention written out (the fused kernel draws its dropout from the
        global generator, which seeds cannot share)."""
        k, batch, n = tokens.shape
        d, h, dh = self.cfg.d_model, self.cfg.n_heads, self.cfg.d_head
        emb = take_rows(params["embed.W_E"], tokens)
        if self.cfg.positions == "learned":
            pos = params["pos_embed.W_pos"][:, :n].unsqueeze(1)
        else:
            emb = emb * math.sqrt(d)
            pos = self.pos_table[:n]
        x = drop(emb + pos).reshape(k, batch * n, d)
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()

        def norm(y: torch.Tensor, name: str) -> torch.Tensor:
            y = F.layer_norm(y, (d,), eps=1e-5)
            return y * params[f"{name}.w"].unsqueeze(1) + params[f"{name}.b"].unsqueeze(1)

        def attention(i: int, y: torch.Tensor) -> torch.Tensor:
            a = f"blocks.{i}.attn"
            w = heads_to_cols(*(params[f"{a}.W_{m}"] for m in "QKV"))
            b = torch.cat([params[f"{a}.b_{m}"].flatten(-2) for m in "QKV"], -1)
            qkv = affine(y, w, b).view(k, batch, n, 3, h, dh).permute(3, 0, 1, 4, 2, 5)
            q, key, v = qkv[0], qkv[1], qkv[2]  # (K, batch, heads, pos, d_head)
            scores = (q @ key.transpose(-1, -2)) / math.sqrt(dh)
            pattern = drop(scores.masked_fill(~causal, float("-inf")).softmax(-1))
            z = (pattern @ v).transpose(2, 3).reshape(k, batch * n, h * dh)
            return affine(z, params[f"{a}.W_O"].flatten(-3, -2), params[f"{a}.b_O"])

        def mlp(i: int, y: torch.Tensor) -> torch.Tensor:
            m = f"blocks.{i}.mlp"
            post = self.act(affine(y, params[f"{m}.W_in"], params[f"{m}.b_in"]))
            return affine(drop(post), params[f"{m}.W_out"], params[f"{m}.b_out"])

        for i in range(self.cfg.n_layers):
            b = f"blocks.{i}"
            if self.pre_ln:
                x = x + drop(attention(i, norm(x, f"{b}.ln1")))
                x = x + drop(mlp(i, norm(x, f"{b}.ln2")))
            else:
                x = norm(x + drop(attention(i, x)), f"{b}.ln1")
                x = norm(x + drop(mlp(i, x)), f"{b}.ln2")
        if self.pre_ln:
            x = norm(x, "ln_final")
        logits = affine(x, params["unembed.W_U"], params["unembed.b_U"])
        return logits.view(k, batch, n, -1)


class SeedDropout:
    """Dropout with each seed's masks drawn from its own generator: for x (K, ...), seed k's
    slice is kept where a uniform draw of shape x.shape[1:] from ``generators[k]`` is >= p, and
    scaled by 1 / (1 - p), as ``F.dropout``. The draws of a seed depend on its generator and the
    shapes alone, so a seed draws the same masks whatever else is in the batch. ``p`` = 0 or
    no generators (evaluation): the identity."""

    def __init__(self, p: float, generators: list[torch.Generator] | None) -> None:
        self.p = p
        self.generators = generators

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or not self.generators:
            return x
        shape = x.shape[1:]
        keep = torch.stack(
            [torch.rand(shape, generator=g, device=x.device) >= self.p for g in self.generators]
        )
        return x * keep / (1.0 - self.p)
