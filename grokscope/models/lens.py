"""A grokscope transformer as a TransformerLens ``HookedTransformer`` (optional extra ``lens``).

TransformerLens (Nanda & Bloom, https://github.com/TransformerLensOrg/TransformerLens) is where
interpretability researchers patch activations, attribute logits and read circuits. grokscope's
models already use its parameter and hook names, so a checkpoint converts weight by weight:

- the Nanda et al. (2023) transformer and its deeper / LayerNorm variants (``model.kind =
  transformer``): TransformerLens's own blocks, with zero attention and unembedding biases
  (grokscope's model has none), pre-LayerNorm when ``model.layernorm``;
- the language model (``model.kind = lm``): pre-LN maps onto TransformerLens's blocks directly.
  Post-LN (the Murty et al. 2023 model, ``ln_position = post``: ``x = LN(x + sublayer(x))``)
  has no TransformerLens setting (its post-norm architectures normalise the sublayer's output
  before the residual sum), so its blocks become :class:`PostLNBlock`, a TransformerLens block
  whose ``forward`` applies the norm after the sum, with the same hook points; the final
  LayerNorm is then the identity. Sinusoidal positions become a fixed ``W_pos`` table, and the
  sqrt(d_model) scale of the token embedding is folded into ``W_E`` (so ``hook_embed`` sees what
  grokscope's sees). Dropout is not carried: the model is for analysis, in eval mode.

An MLP has no attention and no residual stream, and the ``quad`` activation has no
TransformerLens name: both are refused in one line (:class:`LensError`).

``HookedTransformer`` is the TransformerLens 2.x-3.x class; TransformerLens 4 replaced it with
``TransformerBridge``, which wraps Hugging Face models, so the extra pins ``<4``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from grokscope.errors import GrokscopeError
from grokscope.models.hooks import HookedModule

INSTALL = "pip install 'grokscope[lens]'"
ACT_FN = {"relu": "relu", "gelu": "gelu"}  # grokscope's name -> TransformerLens's act_fn


class LensError(GrokscopeError):
    """A model TransformerLens cannot express, or TransformerLens not installed."""


def _lens():
    """TransformerLens's HookedTransformer and its config class, or LensError."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as err:
        raise LensError(f"TransformerLens 2.x-3.x is not installed ({err}): {INSTALL}") from None
    return HookedTransformer, HookedTransformerConfig


def _post_ln_block_class():
    from transformer_lens.components import TransformerBlock

    class PostLNBlock(TransformerBlock):
        """A post-LayerNorm TransformerLens block: ``resid_mid = ln1(resid_pre + attn_out)``,
        ``resid_post = ln2(resid_mid + mlp_out)`` (Vaswani et al. 2017; torch's
        ``TransformerEncoderLayer`` with ``norm_first=False``), with TransformerLens's hook
        points in the same places: ``hook_attn_out`` and ``hook_mlp_out`` are the sublayers'
        outputs, ``hook_resid_mid`` / ``hook_resid_post`` the normalised sums."""

        def forward(
            self,
            resid_pre: torch.Tensor,
            shortformer_pos_embed: torch.Tensor | None = None,
            past_kv_cache_entry: Any = None,
            attention_mask: torch.Tensor | None = None,
        ) -> torch.Tensor:
            resid_pre = self.hook_resid_pre(resid_pre)
            attn_out = self.attn(
                query_input=resid_pre,
                key_input=resid_pre,
                value_input=resid_pre,
                past_kv_cache_entry=past_kv_cache_entry,
                attention_mask=attention_mask,
            )
            attn_out = self.hook_attn_out(attn_out)
            resid_mid = self.hook_resid_mid(self.ln1(resid_pre + attn_out))
            mlp_out = self.hook_mlp_out(self.mlp(resid_mid))
            return self.hook_resid_post(self.ln2(resid_mid + mlp_out))

    return PostLNBlock


def _check(model: HookedModule) -> str:
    """The grokscope model's kind (transformer or lm), or LensError."""
    cfg = model.cfg
    if cfg.kind not in ("transformer", "lm"):
        raise LensError(
            f"a model.kind={cfg.kind} model has no attention or residual stream; "
            "TransformerLens's HookedTransformer cannot express it (only transformer and lm)"
        )
    if cfg.act not in ACT_FN:
        raise LensError(
            f"TransformerLens has no activation {cfg.act!r} (supported: {', '.join(ACT_FN)})"
        )
    return cfg.kind


def lens_state_dict(model: HookedModule) -> dict[str, torch.Tensor]:
    """The grokscope model's weights under TransformerLens's names and conventions: absent
    biases as zeros, sinusoidal positions as ``pos_embed.W_pos``, the embedding scale folded
    into ``embed.W_E``."""
    kind = _check(model)
    cfg = model.cfg
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    H, E, D = cfg.n_heads, cfg.d_head, cfg.d_model
    zeros = torch.zeros
    for i in range(cfg.n_layers):
        a = f"blocks.{i}.attn"
        for m in "QKV":
            sd.setdefault(f"{a}.b_{m}", zeros(H, E))
        sd.setdefault(f"{a}.b_O", zeros(D))
    sd.setdefault("unembed.b_U", zeros(sd["unembed.W_U"].shape[1]))
    if kind == "lm" and cfg.positions != "learned":
        sd["embed.W_E"] = sd["embed.W_E"] * math.sqrt(D)
        sd["pos_embed.W_pos"] = model.pos_table.detach().clone()
    return sd


def to_hooked_transformer(model: HookedModule):
    """The grokscope ``model`` as a ``transformer_lens.HookedTransformer`` with its weights, in
    eval mode on the CPU: logits agree with grokscope's to float32 rounding and every hook
    name grokscope caches sees the same activation (tests/test_lens.py)."""
    kind = _check(model)
    HookedTransformer, HookedTransformerConfig = _lens()
    cfg = model.cfg
    post_ln = kind == "lm" and cfg.ln_position == "post"
    layernorm = kind == "lm" or cfg.layernorm
    lens_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=model.n_ctx,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=model.d_vocab,
        d_vocab_out=getattr(model, "d_vocab_out", model.d_vocab),
        act_fn=ACT_FN[cfg.act],
        normalization_type="LN" if layernorm else None,
        eps=1e-5,
        positional_embedding_type="standard",
        default_prepend_bos=False,
        init_weights=False,
        device="cpu",
        dtype=torch.float32,
    )
    with warnings.catch_warnings():  # 3.x announces the class's move to TransformerBridge
        warnings.simplefilter("ignore", DeprecationWarning)
        lens = HookedTransformer(lens_cfg)
    if post_ln:
        block_class = _post_ln_block_class()
        for block in lens.blocks:
            block.__class__ = block_class
        lens.ln_final = nn.Identity()
        lens.setup()  # the hook dictionary without ln_final's hooks
    state = lens_state_dict(model)
    missing, unexpected = lens.load_state_dict(state, strict=False)
    expected_buffers = {k for k, _ in lens.named_buffers()}
    missing = [k for k in missing if k not in expected_buffers]
    if missing or unexpected:
        raise LensError(
            f"weights do not map onto TransformerLens: missing {missing}, unexpected {unexpected}"
        )
    lens.requires_grad_(False)
    return lens.eval()
