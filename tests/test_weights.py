"""Planted-value tests for grokscope.measures.weights (Hu et al., TMLR 2023 statistics, as the
authors' released code computes them)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.measures.weights import (
    WEIGHT_STAT_COLUMNS,
    is_bias_name,
    matrix_stats,
    pooled_stats,
    split_params,
    weight_stats,
)
from grokscope.models import build_model


def test_diagonal_matrix_hand_computed() -> None:
    # diag(3, 4): singular values {4, 3}, L1 7, Frobenius 5, trace 7.
    s = matrix_stats(np.diag([3.0, 4.0]))
    assert s["w_l1"] == pytest.approx(7.0)
    assert s["w_l2"] == pytest.approx(5.0)
    assert s["w_trace"] == pytest.approx(7.0)
    assert s["w_spectral"] == pytest.approx(4.0)
    assert s["w_code_sparsity"] == pytest.approx(7.0 / 5.0)
    assert s["w_comp_sparsity"] == pytest.approx(7.0 / 4.0)
    assert s["w_sv_mean"] == pytest.approx(3.5)
    assert s["w_sv_var"] == pytest.approx(0.5)  # sample variance of {4, 3}: ddof = 1


def test_non_square_trace_uses_leading_square_block() -> None:
    w = np.array([[1.0, 0.0, 5.0], [0.0, -2.0, 0.0]])
    s = matrix_stats(w)
    assert s["w_trace"] == pytest.approx(-1.0)  # 1 + (-2); the 5 is off the diagonal
    # Singular values of [[1,0,5],[0,-2,0]]: sqrt(26) and 2.
    assert s["w_spectral"] == pytest.approx(math.sqrt(26.0))
    assert s["w_sv_mean"] == pytest.approx((math.sqrt(26.0) + 2.0) / 2)
    assert s["w_comp_sparsity"] == pytest.approx(-1.0 / math.sqrt(26.0))
    assert s["w_code_sparsity"] == pytest.approx(8.0 / math.sqrt(30.0))


def test_rotation_has_unit_singular_values() -> None:
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    s = matrix_stats(rot)
    assert s["w_spectral"] == pytest.approx(1.0)
    assert s["w_sv_var"] == pytest.approx(0.0, abs=1e-12)
    assert s["w_trace"] == pytest.approx(2 * np.cos(theta))
    assert s["w_comp_sparsity"] == pytest.approx(2 * np.cos(theta))


def test_zero_matrix_ratios_are_zero() -> None:
    s = matrix_stats(np.zeros((3, 2)))
    assert s["w_code_sparsity"] == 0.0
    assert s["w_comp_sparsity"] == 0.0


def test_bias_naming_rule() -> None:
    assert is_bias_name("blocks.0.mlp.b_in")
    assert is_bias_name("unembed.b_U")
    assert is_bias_name("blocks.0.ln1.b")
    assert is_bias_name("layers.0.b")
    assert not is_bias_name("blocks.0.ln1.w")
    assert not is_bias_name("blocks.0.attn.W_Q")
    assert not is_bias_name("embed.W_E")


def test_attention_weights_split_per_head_and_averaged() -> None:
    heads = np.stack([np.diag([3.0, 4.0]), np.diag([1.0, 1.0])])  # (n_heads=2, 2, 2)
    matrices, biases = split_params({"blocks.0.attn.W_Q": heads})
    assert len(matrices) == 2 and biases == []
    stats = weight_stats({"blocks.0.attn.W_Q": heads})
    # Per head: spectral 4 and 1, trace 7 and 2, L2 5 and sqrt(2).
    assert stats["w_spectral"] == pytest.approx(2.5)
    assert stats["w_trace"] == pytest.approx(4.5)
    assert stats["w_l2"] == pytest.approx((5.0 + math.sqrt(2.0)) / 2)
    assert stats["w_comp_sparsity"] == pytest.approx((7 / 4 + 2 / 1) / 2)


def test_all_set_pools_every_matrix_and_bias_but_not_layernorm_scales() -> None:
    params = {
        "embed.W_E": np.diag([3.0, 4.0]),
        "blocks.0.mlp.W_in": np.array([[1.0, 0.0, 5.0], [0.0, -2.0, 0.0]]),
        "blocks.0.mlp.b_in": np.array([1.0, 2.0, 3.0]),
        "blocks.0.ln1.w": np.array([100.0, 100.0]),
        "blocks.0.ln1.b": np.array([-1.0]),
        "unembed.b_U": np.array([0.0]),
    }
    stats = weight_stats(params, matrices="all")
    assert tuple(stats) == WEIGHT_STAT_COLUMNS
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["w_l1"] == pytest.approx((7.0 + 8.0) / 2)
    assert stats["w_spectral"] == pytest.approx((4.0 + math.sqrt(26.0)) / 2)
    # Pooled weights: [3,0,0,4, 1,0,5,0,-2,0]; the LayerNorm scale (100s) must not appear.
    pooled = np.array([3, 0, 0, 4, 1, 0, 5, 0, -2, 0], dtype=float)
    assert stats["w_mean"] == pytest.approx(pooled.mean())
    assert stats["w_median"] == pytest.approx(0.0)
    assert stats["w_var"] == pytest.approx(pooled.var(ddof=1))
    # Pooled biases: [1,2,3,-1,0] -> mean 1, median 1, sample variance 10 / 4.
    assert stats["b_mean"] == pytest.approx(1.0)
    assert stats["b_median"] == pytest.approx(1.0)
    assert stats["b_var"] == pytest.approx(2.5)
    # The released set keeps only the MLP block here: W_in and b_in.
    released = weight_stats(params)
    assert released["w_l1"] == pytest.approx(8.0)
    assert released["b_mean"] == pytest.approx(2.0)
    assert released["b_var"] == pytest.approx(1.0)


def tiny_transformer() -> dict[str, np.ndarray]:
    """A 1-block, 2-head transformer (d_model 2, d_head 2, d_mlp 3) in TransformerLens layout,
    with hand-made matrices whose statistics are known by hand, plus embedding, unembedding and
    LayerNorm parameters with large entries that the released set must leave out."""
    return {
        "embed.W_E": np.full((4, 2), 100.0),
        "pos_embed.W_pos": np.full((3, 2), -50.0),
        "blocks.0.ln1.w": np.full(2, 7.0),
        "blocks.0.ln1.b": np.full(2, 9.0),
        "blocks.0.attn.W_Q": np.stack([np.diag([3.0, 4.0]), np.eye(2)]),
        "blocks.0.attn.W_K": np.stack([np.diag([2.0, 0.0]), np.array([[0.0, 1.0], [1.0, 0.0]])]),
        "blocks.0.attn.W_V": np.stack([np.diag([2.0, 6e-6]), np.zeros((2, 2))]),
        "blocks.0.attn.W_O": np.stack([np.eye(2), np.zeros((2, 2))]),  # merged: (4, 2)
        "blocks.0.mlp.W_in": np.array([[1.0, 0.0, 5.0], [0.0, -2.0, 0.0]]),
        "blocks.0.mlp.b_in": np.array([1.0, 2.0, 3.0]),
        "blocks.0.mlp.W_out": np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 6.0]]),
        "blocks.0.mlp.b_out": np.array([-1.0, 0.0]),
        "unembed.W_U": np.full((2, 4), 30.0),
        "unembed.b_U": np.full(4, 40.0),
    }


def test_released_set_on_a_tiny_transformer_hand_computed() -> None:
    r2, r26, r30 = math.sqrt(2.0), math.sqrt(26.0), math.sqrt(30.0)
    v0_l1, v0_l2 = 2.0 + 6e-6, math.sqrt(4.0 + 36e-12)
    # Per matrix, by hand: (l1, l2, trace, spectral, sv_mean, sv_var with ddof = 1).
    # Q0 = diag(3, 4); Q1 = I; K0 = diag(2, 0); K1 = swap; V0 = diag(2, 6e-6) whose small singular
    # value is zeroed; V1 = 0; W_O merged = [I; 0] (4 x 2); W_in (2 x 3); W_out (3 x 2), sv {6, 0}.
    rows = [
        (7.0, 5.0, 7.0, 4.0, 3.5, 0.5),
        (2.0, r2, 2.0, 1.0, 1.0, 0.0),
        (2.0, 2.0, 2.0, 2.0, 1.0, 2.0),
        (2.0, r2, 0.0, 1.0, 1.0, 0.0),
        (v0_l1, v0_l2, v0_l1, 2.0, 1.0, 2.0),
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        (2.0, r2, 2.0, 1.0, 1.0, 0.0),
        (8.0, r30, -1.0, r26, (r26 + 2.0) / 2, (r26 - 2.0) ** 2 / 2),
        (6.0, 6.0, 0.0, 6.0, 3.0, 18.0),
    ]
    l1, l2, tr, spec, sv_mean, sv_var = (np.array(c) for c in zip(*rows, strict=True))
    code = np.divide(l1, l2, out=np.zeros(9), where=l2 > 0)
    comp = np.divide(tr, spec, out=np.zeros(9), where=spec > 0)
    stats = weight_stats(tiny_transformer())
    assert len(split_params(tiny_transformer())[0]) == 9
    expected = {
        "w_l1": l1.mean(),
        "w_l2": l2.mean(),
        "w_trace": tr.mean(),
        "w_spectral": spec.mean(),
        "w_code_sparsity": code.mean(),
        "w_comp_sparsity": comp.mean(),
        "w_sv_mean": sv_mean.mean(),
        "w_sv_var": sv_var.mean(),
    }
    for col, value in expected.items():
        assert stats[col] == pytest.approx(value, rel=1e-12, abs=1e-15), col
    # Pooled weights: 44 entries, 29 of them zero, summing to 27 + 6e-6.
    entries = [3, 4, 1, 1, 2, 1, 1, 2, 6e-6, 1, 1, 1, 5, -2, 6] + [0.0] * 29
    assert stats["w_mean"] == pytest.approx((27 + 6e-6) / 44, rel=1e-12)
    assert stats["w_median"] == 0.0
    assert stats["w_var"] == pytest.approx(np.var(entries, ddof=1), rel=1e-12)
    # Biases: b_in and b_out only, [1, 2, 3, -1, 0]: mean 1, median 1, sample variance 10 / 4.
    assert (stats["b_mean"], stats["b_median"]) == (1.0, 1.0)
    assert stats["b_var"] == pytest.approx(2.5, rel=1e-12)


def test_all_set_on_the_tiny_transformer_adds_embeddings_and_splits_w_o() -> None:
    params = tiny_transformer()
    mats, biases = split_params(params, matrices="all")
    # W_E, W_pos, 3 x 2 heads, W_O per head (2), W_in, W_out, W_U
    assert len(mats) == 13
    assert sum(b.size for b in biases) == 2 + 3 + 2 + 4  # ln1.b, b_in, b_out, b_U
    stats = weight_stats(params, matrices="all")
    assert stats["w_mean"] > weight_stats(params)["w_mean"] + 10  # the 100s and 30s of W_E, W_U
    assert stats["b_mean"] == pytest.approx((18 + 6 - 1 + 160) / 11)


def released_reference(
    W_Q: torch.Tensor,
    W_K: torch.Tensor,
    W_V: torch.Tensor,
    W_O: torch.Tensor,
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    biases: list[torch.Tensor],
) -> dict[str, float]:
    """The statistics written directly from the paper's definitions with torch's conventions
    (torch.var ddof 1, torch.median lower median, torch.linalg norms), for matrices in the
    layouts of the released modular-addition model: W_Q / W_K / W_V (n_heads, d_head, d_model),
    W_O (d_model, n_heads * d_head), W_in (d_mlp, d_model), W_out (d_model, d_mlp)."""
    mats = [*W_Q, *W_K, *W_V, W_O, W_in, W_out]
    per = []
    for X in mats:
        sv = torch.linalg.svdvals(X)
        sv = torch.where(sv < 1e-5, torch.zeros_like(sv), sv)
        l1 = torch.linalg.vector_norm(X, ord=1).item()
        l2 = torch.linalg.vector_norm(X, ord=2).item()
        spectral = torch.linalg.matrix_norm(X, ord=2).item()
        trace = torch.trace(X).item()
        per.append(
            [l1, l2, trace, spectral, l1 / l2, trace / spectral, sv.mean().item(), sv.var().item()]
        )
    means = np.mean(np.array(per), axis=0)
    out = dict(zip(WEIGHT_STAT_COLUMNS[:8], means.tolist(), strict=True))
    w = torch.cat([X.flatten() for X in (W_Q, W_K, W_V, W_O, W_in, W_out)])
    b = torch.cat(biases)
    for prefix, x in (("w", w), ("b", b)):
        out[f"{prefix}_mean"] = x.mean().item()
        out[f"{prefix}_median"] = x.median().item()
        out[f"{prefix}_var"] = x.var().item()
    return out


def test_released_set_matches_a_torch_reference_in_the_released_layouts() -> None:
    # Transposed layouts change no statistic; W_O's heads are merged into one matrix.
    gen = torch.Generator().manual_seed(0)
    n_heads, d_head, d_model, d_mlp = 4, 3, 8, 16

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    W_Q, W_K, W_V = (randn(n_heads, d_head, d_model) for _ in range(3))
    W_O, W_in = randn(d_model, n_heads * d_head), randn(d_mlp, d_model)
    W_out = randn(d_model, d_mlp)
    b_in, b_out = randn(d_mlp), randn(d_model)  # 24 biases: an even count, lower median
    ref = released_reference(W_Q, W_K, W_V, W_O, W_in, W_out, [b_in, b_out])
    ours = {
        "blocks.0.attn.W_Q": W_Q.transpose(1, 2).numpy(),
        "blocks.0.attn.W_K": W_K.transpose(1, 2).numpy(),
        "blocks.0.attn.W_V": W_V.transpose(1, 2).numpy(),
        "blocks.0.attn.W_O": W_O.T.reshape(n_heads, d_head, d_model).numpy(),
        "blocks.0.mlp.W_in": W_in.T.numpy(),
        "blocks.0.mlp.b_in": b_in.numpy(),
        "blocks.0.mlp.W_out": W_out.T.numpy(),
        "blocks.0.mlp.b_out": b_out.numpy(),
        "embed.W_E": randn(10, d_model).numpy(),
        "unembed.W_U": randn(d_model, 10).numpy(),
    }
    stats = weight_stats(ours)
    for col in WEIGHT_STAT_COLUMNS:
        assert stats[col] == pytest.approx(ref[col], rel=1e-9, abs=1e-12), col
    assert stats["b_median"] != pytest.approx(float(np.median(np.concatenate([b_in, b_out]))))


def test_singular_values_below_the_floor_are_zeroed_not_dropped() -> None:
    below = matrix_stats(np.diag([9e-6, 0.0, 1.0]))
    assert below["w_spectral"] == 1.0
    assert below["w_sv_mean"] == pytest.approx(1 / 3, rel=1e-12)  # {1, 0, 0}: three values
    assert below["w_sv_var"] == pytest.approx(1 / 3, rel=1e-12)
    kept = matrix_stats(np.diag([2e-5, 0.0, 1.0]))
    assert kept["w_sv_mean"] == pytest.approx((1 + 2e-5) / 3, rel=1e-12)


def test_lower_median_and_sample_variance_pooling() -> None:
    assert pooled_stats(np.array([4.0, 1.0, 3.0, 2.0])) == (2.5, 2.0, pytest.approx(5 / 3))
    assert pooled_stats(np.array([7.0])) == (7.0, 7.0, 0.0)
    assert pooled_stats(np.empty(0)) == (0.0, 0.0, 0.0)


def test_single_singular_value_has_no_variance_and_is_left_out_of_the_mean() -> None:
    assert math.isnan(matrix_stats(np.array([[3.0, 4.0]]))["w_sv_var"])
    params = {"layers.0.W": np.diag([3.0, 4.0]), "unembed.W_U": np.array([[3.0], [4.0]])}
    assert weight_stats(params)["w_sv_var"] == pytest.approx(0.5)  # diag(3, 4) alone
    assert weight_stats({"unembed.W_U": np.array([[3.0], [4.0]])})["w_sv_var"] == 0.0


def test_mlp_model_default_uses_every_linear_layer_but_not_the_embedding() -> None:
    params = {
        "embed.W_E": np.full((5, 2), 100.0),
        "layers.0.W": np.diag([3.0, 4.0]),
        "layers.0.b": np.array([1.0, 3.0]),
        "layers.1.W": np.eye(2),
        "layers.1.b": np.array([0.0, 0.0]),
        "unembed.W_U": np.array([[0.0, 6.0], [0.0, 0.0]]),
        "unembed.b_U": np.array([4.0, 2.0]),
    }
    mats, biases = split_params(params)
    assert len(mats) == 3 and sum(b.size for b in biases) == 6
    stats = weight_stats(params)
    assert stats["w_l1"] == pytest.approx((7 + 2 + 6) / 3)
    assert stats["w_spectral"] == pytest.approx((4 + 1 + 6) / 3)
    assert stats["w_mean"] == pytest.approx(15 / 12)
    assert stats["b_mean"] == pytest.approx(10 / 6)
    assert stats["b_median"] == 1.0  # lower median of [0, 0, 1, 2, 3, 4]
    assert weight_stats(params, matrices="all")["w_l1"] == pytest.approx((1000 + 15) / 4)


@pytest.mark.parametrize("kind", ["transformer", "mlp"])
def test_released_set_on_the_project_models(kind: str) -> None:
    cfg = ModelConfig(kind=kind, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_embed=8, n_layers=2)
    model = build_model(cfg, d_vocab=11, n_ctx=3, seed=0)
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    mats, biases = split_params(params)
    if kind == "transformer":
        # per block: 3 x 4 heads + W_O + W_in + W_out
        assert len(mats) == 2 * (3 * 4 + 3)
        assert sum(b.size for b in biases) == 2 * (32 + 16)
    else:
        # hidden layers and output layer; not the embedding
        assert len(mats) == 2 + 1
        assert sum(b.size for b in biases) == 2 * 32 + 11
    assert len(split_params(params, matrices="all")[0]) > len(mats)


def test_no_biases_gives_zero_bias_stats() -> None:
    stats = weight_stats({"layers.0.W": np.diag([3.0, 4.0])})
    assert stats["b_mean"] == stats["b_median"] == stats["b_var"] == 0.0
    assert stats["w_mean"] == pytest.approx(7.0 / 4)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="no weight matrix"):
        weight_stats({"layers.0.b": np.ones(3)})
    with pytest.raises(ValueError, match="no weight matrix"):
        weight_stats({"embed.W_E": np.ones((3, 2))})  # an embedding alone is not a layer
    with pytest.raises(ValueError, match="layers.0.W"):
        weight_stats({"layers.0.W": np.array([[np.nan, 1.0], [0.0, 1.0]])})
    with pytest.raises(ValueError, match="matrices must be one of"):
        weight_stats({"layers.0.W": np.eye(2)}, matrices="some")
