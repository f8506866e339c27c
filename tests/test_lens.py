"""A grokscope model as a TransformerLens HookedTransformer (grokscope.models.lens).

Equal here means: logits and every cached activation within float32 rounding, 1e-5 of the
tensor's largest magnitude (the two compute the same sums in different orders, a few ulps per
layer; the bound holds on any CPU). TransformerLens is in the test extra, so these run in CI."""

from __future__ import annotations

import sys

import pytest
import torch

import grokscope
from grokscope.config import ModelConfig
from grokscope.models import build_model
from grokscope.models.lens import LensError, to_hooked_transformer
from grokscope.orchestrate.train import train_run
from tests.test_sequence_train import seq_config

pytestmark = pytest.mark.equality


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    a = a.expand_as(b)  # grokscope keeps the position embedding unbatched, (1, pos, d_model)
    finite = torch.isfinite(a)
    assert torch.equal(finite, torch.isfinite(b))  # masked scores are -inf in both
    scale = float(a[finite].abs().max()) if finite.any() else 1.0
    torch.testing.assert_close(a[finite], b[finite], rtol=0, atol=1e-5 * max(scale, 1.0))


def check_same(model, tokens: torch.Tensor) -> None:
    lens = to_hooked_transformer(model)
    ours, cache = model.run_with_cache(tokens)
    theirs, lens_cache = lens.run_with_cache(tokens)
    close(ours, theirs)
    assert set(cache) <= set(lens_cache.cache_dict), set(cache) - set(lens_cache.cache_dict)
    for name, act in cache.items():
        try:
            close(act, lens_cache[name])
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


@pytest.fixture(scope="module")
def nanda_run(tmp_path_factory):
    from tests.conftest import tiny_config

    path = tmp_path_factory.mktemp("lens") / "r"
    train_run(tiny_config("train.epochs=40"), path)
    return grokscope.load_run(path)


def test_a_trained_nanda_run_equals_its_hooked_transformer(nanda_run):
    """The run's own model on the run's data, every example: logits at the answer position and
    every hook grokscope caches."""
    run = nanda_run
    lens = run.to_transformer_lens()
    model, tokens = run.model(), run.tokens()
    with torch.no_grad():
        close(model(tokens), lens(tokens)[:, -1])
    check_same(model, tokens)
    early = run.to_transformer_lens(run.epochs[0])
    assert not torch.equal(early.W_E, lens.W_E)  # the checkpoint asked for, not the last


def test_a_trained_language_model_run_equals_its_hooked_transformer(tmp_path):
    """The post-LayerNorm, sinusoidal-position language model of structural runs (Murty et
    al. 2023's), trained briefly, on its own sentences."""
    path = tmp_path / "qf"
    train_run(seq_config("question_formation", "train.epochs=20"), path)
    run = grokscope.load_run(path)
    assert run.config.model.ln_position == "post" and run.config.model.positions == "sinusoidal"
    check_same(run.model(), run.tokens()[:64])


def perturbed(cfg: ModelConfig, d_vocab: int, n_ctx: int):
    """A model whose every parameter, biases and LayerNorm gains included, is non-trivial, so
    that a weight mapped to the wrong place cannot hide behind a zero or a one."""
    model = build_model(cfg, d_vocab, n_ctx, seed=3)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model.requires_grad_(False).eval()


SMALL = dict(d_model=32, n_heads=4, d_head=8, d_mlp=64)


@pytest.mark.parametrize(
    "shape",
    [
        dict(kind="transformer", n_layers=2, layernorm=True, act="gelu"),
        dict(kind="lm", n_layers=2, ln_position="post"),
        dict(kind="lm", n_layers=3, ln_position="pre", positions="learned", act="gelu"),
        dict(kind="lm", n_layers=1, ln_position="pre", positions="sinusoidal"),
    ],
    ids=["transformer-ln-gelu", "lm-post-ln", "lm-pre-ln-learned", "lm-pre-ln-sinusoidal"],
)
def test_every_variant_equals_its_hooked_transformer(shape):
    model = perturbed(ModelConfig(**SMALL, **shape), d_vocab=19, n_ctx=9)
    tokens = torch.randint(0, 19, (40, 9), generator=torch.Generator().manual_seed(5))
    check_same(model, tokens)


def test_a_transformer_lens_patch_is_grokscope_patch(nanda_run):
    """Activation patching in TransformerLens (its hooks, on its model) gives the logits
    grokscope's ``run_with_hooks`` gives with the same edit: zero the readout's strongest
    neuron and mean-ablate head 0's output."""
    run = nanda_run
    model, lens, tokens = run.model(), run.to_transformer_lens(), run.tokens("test")

    def kill_neuron(act, hook=None):
        act = act.clone()
        act[..., 7] = 0
        return act

    def mean_head(act, hook=None):
        act = act.clone()
        act[:, :, 0] = act[:, :, 0].mean(0, keepdim=True)
        return act

    ours = model.run_with_hooks(
        tokens,
        [
            ("blocks.0.mlp.hook_post", lambda a, n: kill_neuron(a)),
            ("blocks.0.attn.hook_z", lambda a, n: mean_head(a)),
        ],
    )
    theirs = lens.run_with_hooks(
        tokens,
        fwd_hooks=[("blocks.0.mlp.hook_post", kill_neuron), ("blocks.0.attn.hook_z", mean_head)],
    )
    close(ours, theirs)
    with torch.no_grad():
        assert (ours[:, -1] - model(tokens)).abs().max() > 1e-3  # the patch did something


def test_models_transformer_lens_cannot_express_are_one_clear_error():
    mlp = build_model(ModelConfig(kind="mlp", d_model=16, d_mlp=32), 11, 2, seed=0)
    with pytest.raises(LensError, match="model.kind=mlp .* cannot express it"):
        to_hooked_transformer(mlp)
    quad = build_model(ModelConfig(act="quad", **SMALL), 11, 3, seed=0)
    with pytest.raises(LensError, match="no activation 'quad'"):
        to_hooked_transformer(quad)


def test_a_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import fails as if absent
    model = build_model(ModelConfig(**SMALL), 11, 3, seed=0)
    with pytest.raises(LensError, match=r"pip install 'grokscope\[lens\]'"):
        to_hooked_transformer(model)
