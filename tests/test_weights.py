"""Planted-value tests for grokscope.measures.weights (Hu et al., TMLR 2023 statistics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grokscope.measures.weights import (
    WEIGHT_STAT_COLUMNS,
    is_bias_name,
    matrix_stats,
    split_params,
    weight_stats,
)


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
    assert s["w_sv_var"] == pytest.approx(0.25)


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


def test_checkpoint_pooling_and_layernorm_scale_ignored() -> None:
    params = {
        "embed.W_E": np.diag([3.0, 4.0]),
        "blocks.0.mlp.W_in": np.array([[1.0, 0.0, 5.0], [0.0, -2.0, 0.0]]),
        "blocks.0.mlp.b_in": np.array([1.0, 2.0, 3.0]),
        "blocks.0.ln1.w": np.array([100.0, 100.0]),
        "blocks.0.ln1.b": np.array([-1.0]),
        "unembed.b_U": np.array([0.0]),
    }
    stats = weight_stats(params)
    assert tuple(stats) == WEIGHT_STAT_COLUMNS
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["w_l1"] == pytest.approx((7.0 + 8.0) / 2)
    assert stats["w_spectral"] == pytest.approx((4.0 + math.sqrt(26.0)) / 2)
    # Pooled weights: [3,0,0,4, 1,0,5,0,-2,0]; the LayerNorm scale (100s) must not appear.
    pooled = np.array([3, 0, 0, 4, 1, 0, 5, 0, -2, 0], dtype=float)
    assert stats["w_mean"] == pytest.approx(pooled.mean())
    assert stats["w_median"] == pytest.approx(0.0)
    assert stats["w_var"] == pytest.approx(pooled.var())
    # Pooled biases: [1,2,3,-1,0] -> mean 1, median 1, variance 2.
    assert stats["b_mean"] == pytest.approx(1.0)
    assert stats["b_median"] == pytest.approx(1.0)
    assert stats["b_var"] == pytest.approx(2.0)


def test_no_biases_gives_zero_bias_stats() -> None:
    stats = weight_stats({"layers.0.W": np.diag([3.0, 4.0])})
    assert stats["b_mean"] == stats["b_median"] == stats["b_var"] == 0.0
    assert stats["w_mean"] == pytest.approx(7.0 / 4)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="no weight matrix"):
        weight_stats({"layers.0.b": np.ones(3)})
    with pytest.raises(ValueError, match="layers.0.W"):
        weight_stats({"layers.0.W": np.array([[np.nan, 1.0], [0.0, 1.0]])})
