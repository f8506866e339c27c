"""The language-model transformer: TransformerLens names, the hooked pass equals the fused one,
positions, LayerNorm placement, and the attention-entropy measure on planted attention."""

import math

import numpy as np
import pytest
import torch

from grokscope import config as config_mod
from grokscope.measures.attention import attention_entropy
from grokscope.models import build_model
from grokscope.models.lm import sinusoidal_table


def lm_config(*extra: str) -> config_mod.ModelConfig:
    cfg = config_mod.preset("structural_cpu")
    over = ["model.n_layers=2", "model.d_model=32", "model.d_head=8", "model.d_mlp=48", *extra]
    return config_mod.apply_overrides(cfg, over).model


@pytest.mark.parametrize("ln", ["pre", "post"])
@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_hooked_pass_equals_fused_pass_and_names_follow_transformer_lens(ln, pos):
    model = build_model(lm_config(f"model.ln_position={ln}", f"model.positions={pos}"), 20, 16, 3)
    model.eval()
    x = torch.randint(1, 20, (4, 11))
    logits, cache = model.run_with_cache(x)
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)
    assert set(cache) == set(model.hook_names())
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (4, 4, 11, 11)
    assert torch.allclose(pattern.sum(-1), torch.ones(4, 4, 11))
    assert torch.all(pattern.triu(1) == 0)  # causal
    names = dict(model.named_parameters())
    assert names["blocks.0.attn.W_Q"].shape == (4, 32, 8)
    assert names["blocks.0.attn.W_O"].shape == (4, 8, 32)
    assert names["unembed.W_U"].shape == (32, 20)
    assert ("ln_final.w" in names) == (ln == "pre")
    assert ("pos_embed.W_pos" in names) == (pos == "learned")


def test_patching_an_activation_changes_the_output_downstream_only():
    model = build_model(lm_config(), 20, 16, 0).eval()
    x = torch.randint(1, 20, (2, 9))

    def zero_from_5(act, name):
        act = act.clone()
        act[:, 5:] = 0
        return act

    out = model.run_with_hooks(x, [("blocks.0.hook_resid_post", zero_from_5)])
    base = model(x)
    torch.testing.assert_close(out[:, :5], base[:, :5])  # causal: earlier positions untouched
    assert not torch.allclose(out[:, 5:], base[:, 5:])


def test_sinusoidal_table_is_the_vaswani_formula():
    t = sinusoidal_table(7, 6)
    pos, i = 5, 1
    assert t[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 6)), abs=1e-6)
    assert t[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 6)), abs=1e-6)


def test_position_ids_shift_a_span_to_its_place_in_the_sentence():
    model = build_model(lm_config(), 20, 16, 0).eval()
    x = torch.randint(1, 20, (1, 10))
    full = model.final_states(x)
    # the span 0..3 run alone at positions 0..3 is the prefix of the full causal run
    torch.testing.assert_close(model.final_states(x[:, :4]), full[:, :4], rtol=1e-5, atol=1e-5)
    # a span run with its original positions differs from the same tokens at positions 0..
    span = x[:, 4:8]
    shifted = model.final_states(span, torch.arange(4, 8)[None])
    assert not torch.allclose(shifted, model.final_states(span))
    with pytest.raises(ValueError, match="context"):
        model.final_states(x, torch.full((1, 10), 16))


def test_attention_entropy_on_planted_uniform_and_one_hot_attention():
    model = build_model(lm_config(), 20, 32, 0).eval()
    seqs = [np.arange(1, n + 1) % 19 + 1 for n in (3, 7, 12)]
    for b in model.blocks:  # zero queries: every row attends uniformly
        b.attn.W_Q.data.zero_()
        b.attn.b_Q.data.zero_()
    want = np.mean([math.log(t + 1) for s in seqs for t in range(1, len(s))])
    got = attention_entropy(model, seqs)
    assert got["mean"] == pytest.approx(want, rel=1e-5)
    assert len(got["per_layer"]) == 2

    def one_hot(pattern, name):  # every query attends to itself only
        n = pattern.shape[-1]
        return torch.eye(n).expand_as(pattern).clone()

    model._patches = {f"blocks.{i}.attn.hook_pattern": one_hot for i in range(2)}
    try:
        assert attention_entropy(model, seqs)["mean"] == pytest.approx(0.0, abs=1e-9)
    finally:
        model._patches = {}
