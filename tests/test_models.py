"""Model shapes, the Nanda et al. (2023) initialisation, the fast path and the hooks."""

import math

import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.models import MLP, Transformer, build_model

NANDA_SHAPES = {
    "embed.W_E": (114, 128),
    "pos_embed.W_pos": (3, 128),
    "blocks.0.attn.W_Q": (4, 128, 32),
    "blocks.0.attn.W_K": (4, 128, 32),
    "blocks.0.attn.W_V": (4, 128, 32),
    "blocks.0.attn.W_O": (4, 32, 128),
    "blocks.0.mlp.W_in": (128, 512),
    "blocks.0.mlp.b_in": (512,),
    "blocks.0.mlp.W_out": (512, 128),
    "blocks.0.mlp.b_out": (128,),
    "unembed.W_U": (128, 114),
}


def test_default_transformer_is_nanda_main_run():
    model = build_model(ModelConfig(), d_vocab=114, n_ctx=3, seed=0)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == NANDA_SHAPES
    sd = model.state_dict()
    for name, t in sd.items():
        if name.endswith(("b_in", "b_out")):
            assert torch.all(t == 0)
        else:
            want = 1 / math.sqrt(114 if name == "unembed.W_U" else 128)
            assert abs(float(t.std()) - want) < 0.08 * want, name


def test_init_is_seeded():
    a = build_model(ModelConfig(), 114, 3, seed=1).state_dict()
    b = build_model(ModelConfig(), 114, 3, seed=1).state_dict()
    c = build_model(ModelConfig(), 114, 3, seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.W_E"], c["embed.W_E"])


def reference_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """A plain, independent re-implementation: every position, explicit causal attention loop."""
    cfg = model.cfg
    sd = model.state_dict()
    x = sd["embed.W_E"][tokens] + sd["pos_embed.W_pos"][: tokens.shape[1]]
    n = tokens.shape[1]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        h = (
            torch.nn.functional.layer_norm(x, (cfg.d_model,), sd[f"{b}.ln1.w"], sd[f"{b}.ln1.b"])
            if cfg.layernorm
            else x
        )
        out = torch.zeros_like(x)
        for head in range(cfg.n_heads):
            q = h @ sd[f"{b}.attn.W_Q"][head]
            k = h @ sd[f"{b}.attn.W_K"][head]
            v = h @ sd[f"{b}.attn.W_V"][head]
            s = q @ k.transpose(1, 2) / math.sqrt(cfg.d_head)
            s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), -1e30)
            out = out + (s.softmax(-1) @ v) @ sd[f"{b}.attn.W_O"][head]
        x = x + out
        h = (
            torch.nn.functional.layer_norm(x, (cfg.d_model,), sd[f"{b}.ln2.w"], sd[f"{b}.ln2.b"])
            if cfg.layernorm
            else x
        )
        act = torch.relu if cfg.act == "relu" else torch.nn.functional.gelu
        x = (
            x
            + act(h @ sd[f"{b}.mlp.W_in"] + sd[f"{b}.mlp.b_in"]) @ sd[f"{b}.mlp.W_out"]
            + sd[f"{b}.mlp.b_out"]
        )
    last = x[:, -1]
    if cfg.layernorm:
        last = torch.nn.functional.layer_norm(
            last, (cfg.d_model,), sd["ln_final.w"], sd["ln_final.b"]
        )
    return last @ sd["unembed.W_U"]


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_layers": 2},
        {"layernorm": True},
        {"n_layers": 2, "layernorm": True, "act": "gelu"},
    ],
)
def test_fast_and_full_pass_equal_reference(kw):
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64, **kw)
    model = build_model(cfg, d_vocab=24, n_ctx=3, seed=3)
    if cfg.layernorm:  # make the LayerNorm parameters non-trivial
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".ln" in n or n.startswith("ln_"):
                    p.add_(0.1 * torch.randn_like(p))
    tokens = torch.randint(0, 24, (50, 3))
    ref = reference_logits(model, tokens)
    fast = model(tokens)
    full = model.forward_full(tokens)
    assert fast.shape == (50, 24)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full, ref, rtol=1e-4, atol=1e-5)


def test_cache_names_and_shapes():
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64)
    model = build_model(cfg, d_vocab=24, n_ctx=3, seed=0)
    tokens = torch.randint(0, 24, (7, 3))
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (7, 3, 24)  # every position, as TransformerLens
    torch.testing.assert_close(logits[:, -1], model(tokens), rtol=1e-5, atol=1e-5)
    # every position's logits: the residual stream at that position through W_U
    torch.testing.assert_close(
        logits, cache["blocks.0.hook_resid_post"] @ model.state_dict()["unembed.W_U"]
    )
    assert set(cache) == set(model.hook_names())
    assert cache["blocks.0.attn.hook_pattern"].shape == (7, 4, 3, 3)
    assert cache["blocks.0.mlp.hook_post"].shape == (7, 3, 64)
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(7, 4, 3))
    assert torch.all(pattern[:, :, 0, 1:] == 0)  # causal
    # the neurons at the last position reproduce the logits through W_out and W_U
    sd = model.state_dict()
    resid = (
        cache["blocks.0.hook_resid_mid"][:, -1]
        + cache["blocks.0.mlp.hook_post"][:, -1] @ sd["blocks.0.mlp.W_out"]
        + sd["blocks.0.mlp.b_out"]
    )
    torch.testing.assert_close(resid @ sd["unembed.W_U"], logits[:, -1], rtol=1e-5, atol=1e-5)
    _, only = model.run_with_cache(tokens, names=["hook_embed"])
    assert list(only) == ["hook_embed"]


def test_patching_neurons_changes_logits_as_predicted():
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64)
    model = build_model(cfg, d_vocab=24, n_ctx=3, seed=0)
    tokens = torch.randint(0, 24, (9, 3))
    zeroed = model.run_with_hooks(tokens, [("blocks.0.mlp.hook_post", lambda x, n: x * 0)])
    _, cache = model.run_with_cache(tokens)
    sd = model.state_dict()
    want = (cache["blocks.0.hook_resid_mid"][:, -1] + sd["blocks.0.mlp.b_out"]) @ sd["unembed.W_U"]
    assert zeroed.shape == (9, 3, 24)
    torch.testing.assert_close(zeroed[:, -1], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError):
        model.run_with_hooks(tokens, [("blocks.9.nothing", lambda x, n: x)])


@pytest.mark.parametrize("d_embed", [0, 16])
def test_mlp_matches_explicit_computation(d_embed):
    cfg = ModelConfig(kind="mlp", d_embed=d_embed, d_mlp=40, n_layers=2, act="quad", bias=True)
    model = build_model(cfg, d_vocab=12, n_ctx=3, seed=0)
    assert isinstance(model, MLP)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith((".b", "b_U")):
                p.normal_()
    tokens = torch.randint(0, 12, (20, 3))
    sd = model.state_dict()
    ops = tokens[:, :2]
    if d_embed:
        x = sd["embed.W_E"][ops].flatten(1)
    else:
        x = torch.nn.functional.one_hot(ops, 12).float().flatten(1)
    h = (x @ sd["layers.0.W"] + sd["layers.0.b"]) ** 2
    h = (h @ sd["layers.1.W"] + sd["layers.1.b"]) ** 2
    want = h @ sd["unembed.W_U"] + sd["unembed.b_U"]
    torch.testing.assert_close(model(tokens), want, rtol=1e-4, atol=1e-4)
    logits, cache = model.run_with_cache(tokens)
    assert cache[model.neuron_hook].shape == (20, 40)
    assert logits.shape == (20, 1, 12)  # one readout position
    torch.testing.assert_close(logits[:, 0], want, rtol=1e-4, atol=1e-4)


def test_mlp_without_bias_has_no_bias_parameters():
    cfg = ModelConfig(kind="mlp", d_embed=0, d_mlp=16, act="quad", bias=False)
    names = [n for n, _ in build_model(cfg, 12, 3, 0).named_parameters()]
    assert names == ["layers.0.W", "unembed.W_U"]


@pytest.mark.parametrize(
    "kw", [{}, {"n_layers": 2}, {"layernorm": True}, {"n_layers": 2, "layernorm": True}]
)
def test_answer_pass_reads_the_answer_position_as_the_full_cached_pass_does(kw):
    """One fast pass gives the logits, the last MLP's neurons and the residual stream entering
    the unembedding at the answer position: equal to the full pass's cache read there, to
    float32 rounding (the same sums in another order)."""
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64, **kw)
    model = build_model(cfg, d_vocab=24, n_ctx=3, seed=3)
    last = cfg.n_layers - 1
    names = [f"blocks.{last}.mlp.hook_post", f"blocks.{last}.hook_resid_post"]
    tokens = torch.randint(0, 24, (50, 3))
    logits, got = model.answer_pass(tokens, names)
    full, cache = model.run_with_cache(tokens, names)
    torch.testing.assert_close(logits, full[:, -1], rtol=1e-4, atol=1e-5)
    for n in names:
        assert got[n].shape == (50, cache[n].shape[-1])
        torch.testing.assert_close(got[n], cache[n][:, -1], rtol=1e-4, atol=1e-5)
    assert model._last is None  # nothing is recorded outside answer_pass


def test_answer_pass_falls_back_to_the_cache_for_other_names_and_models():
    model = build_model(ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64), 24, 3, seed=3)
    tokens = torch.randint(0, 24, (20, 3))
    logits, got = model.answer_pass(tokens, ["blocks.0.hook_resid_mid"])
    full, cache = model.run_with_cache(tokens, ["blocks.0.hook_resid_mid"])
    torch.testing.assert_close(
        got["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_mid"][:, -1]
    )
    mlp = build_model(ModelConfig(kind="mlp", d_embed=8, d_mlp=16), 24, 3, seed=1)
    logits, got = mlp.answer_pass(tokens, [mlp.neuron_hook])
    _, cache = mlp.run_with_cache(tokens, [mlp.neuron_hook])
    torch.testing.assert_close(logits, mlp(tokens))
    torch.testing.assert_close(got[mlp.neuron_hook], cache[mlp.neuron_hook])
