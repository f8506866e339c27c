"""Progress measures and ablations on planted logit tables and hand-built weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokscope.config import ModelConfig
from grokscope.measures import ablations as ab
from grokscope.measures import progress as pr
from grokscope.models import Transformer
from grokscope.tasks import modular_task, permutation_task


def grid(p: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return a.ravel(), b.ravel()


def planted_logits(p: int, keys: list[int], scale: float, sign: int = 1) -> np.ndarray:
    """(p^2, p + 1) logits scale * sum_k cos(w_k (a + s b - c)) and a constant '=' logit."""
    a, b = grid(p)
    c = np.arange(p)
    s = (a + sign * b)[:, None] - c[None]
    z = sum(np.cos(2 * np.pi * k * s / p) for k in keys) * scale
    return np.concatenate([z, np.full((p * p, 1), -5.0)], axis=1)


# -- Gini -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 113])
def test_gini_one_hot_and_constant(n):
    one_hot = np.zeros(n)
    one_hot[n // 2] = 3.0
    assert pr.gini(one_hot) == pytest.approx(1 - 1 / n)
    assert pr.gini(np.full(n, 2.5)) == pytest.approx(0.0, abs=1e-12)


def test_gini_equals_mean_absolute_difference_form():
    rng = np.random.default_rng(0)
    c = rng.exponential(size=31)
    brute = sum(abs(x - y) for x, y in itertools.product(c, c)) / (2 * len(c) * c.sum())
    assert pr.gini(c) == pytest.approx(brute, rel=1e-12)
    assert pr.gini(5 * c) == pytest.approx(pr.gini(c))  # scale invariant
    assert pr.gini([0.0, 1.0, 1.0, 2.0]) == pytest.approx(0.375)  # by hand
    assert np.isnan(pr.gini(np.zeros(4)))


# -- losses -----------------------------------------------------------------------------------


def test_cross_entropy_matches_torch_float64():
    rng = np.random.default_rng(1)
    z = rng.normal(scale=30, size=(50, 12))
    y = rng.integers(0, 12, size=50)
    expected = F.cross_entropy(torch.tensor(z), torch.tensor(y)).item()
    assert pr.cross_entropy(z, y) == pytest.approx(expected, rel=1e-13)
    assert pr.accuracy(z, y) == np.mean(z.argmax(1) == y)


@pytest.mark.parametrize("op, sign", [("x+y", 1), ("x-y", -1)])
def test_planted_logits_restricted_equals_full_and_excluded_is_uniform(op, sign):
    p, keys = 23, [3, 8]
    ds = modular_task(op, p, 0.3, 0)
    z = planted_logits(p, keys, scale=4.0, sign=sign)
    assert pr.fourier_sign(ds) == sign
    full = pr.cross_entropy(z, ds.labels)
    assert pr.restricted_loss(z, ds.labels, p, keys, sign) == pytest.approx(full, rel=1e-10)
    # Without the key directions classes 0..p-1 all get 0 and '=' keeps -5.
    expected = np.log(p + np.exp(-5.0))
    ex = pr.excluded_loss(z, ds.labels, ds.train_idx, p, keys, sign)
    assert ex == pytest.approx(expected, rel=1e-10)
    assert pr.logit_variance_explained(z, p, keys, sign) == pytest.approx(1.0)
    assert pr.logit_variance_explained(z, p, [keys[0]], sign) == pytest.approx(0.5)
    row = pr.fourier_row(z, ds, keys)
    assert row["restricted_loss"] == pytest.approx(full, rel=1e-10)
    assert row["excluded_loss"] == pytest.approx(expected, rel=1e-10)


def test_restricted_removes_planted_noise_and_parts_reconstruct_centred_logits():
    p, keys = 19, [2, 5]
    ds = modular_task("x+y", p, 0.3, 0)
    rng = np.random.default_rng(3)
    clean = planted_logits(p, keys, scale=3.0)
    z = clean + rng.normal(scale=0.5, size=clean.shape)
    restricted = pr.restricted_logits(z, p, keys)
    excluded = pr.excluded_logits(z, p, keys)
    mean = z.mean(axis=0)
    centred = z - mean
    # identity: key part + excluded part = centred logits, and the two parts are orthogonal
    np.testing.assert_allclose((restricted - mean) + (excluded - mean), centred, atol=1e-12)
    inner = np.einsum("nc,nc->c", restricted - mean, excluded - mean)
    np.testing.assert_allclose(inner, 0, atol=1e-9)
    # the noise is gone from the key part: it is the planted signal up to noise's projection
    assert pr.restricted_loss(z, ds.labels, p, keys) < pr.cross_entropy(z, ds.labels)
    assert pr.excluded_loss(z, ds.labels, ds.train_idx, p, keys) > 2.5


def test_per_example_constant_does_not_change_the_losses():
    # "mean logit per example" is a softmax no-op; the per-class mean is what is kept.
    p, keys = 13, [4]
    ds = modular_task("x+y", p, 0.5, 0)
    rng = np.random.default_rng(4)
    z = rng.normal(size=(p * p, p + 1))
    shifted = z + rng.normal(size=(p * p, 1)) * 10
    for fn in (pr.cross_entropy,):
        assert fn(shifted, ds.labels) == pytest.approx(fn(z, ds.labels))
    a = pr.restricted_loss(z, ds.labels, p, keys)
    b = pr.restricted_loss(z + np.arange(p + 1), ds.labels, p, keys)
    assert a != pytest.approx(b)  # a per-class offset is kept, and it matters


def test_fourier_measures_do_not_apply_to_other_tasks():
    assert pr.fourier_reason(modular_task("x+y", 7, 0.5, 0)) is None
    assert pr.fourier_reason(modular_task("x*y", 7, 0.5, 0)) is None  # over discrete logs
    assert pr.fourier_reason(modular_task("x/y", 7, 0.5, 0)) is None
    assert "not a function of a + b" in pr.fourier_reason(modular_task("x^2+y^2", 7, 0.5, 0))
    assert "needs a prime p" in pr.fourier_reason(modular_task("x*y", 8, 0.5, 0))
    assert "not modular" in pr.fourier_reason(permutation_task("x*y", 3, 0.5, 0))
    z = np.zeros((36, 7))
    ds = permutation_task("x*y", 3, 0.5, 0)
    assert pr.fourier_row(z, ds, [1]) == {
        "restricted_loss": None,
        "excluded_loss": None,
        "logit_var_explained": None,
    }
    assert pr.gini_row({}, ds) == {"gini_embed": None, "gini_unembed": None}


# -- weights ----------------------------------------------------------------------------------


def planted_params(p: int, keys: list[int], d_mlp: int = 16) -> dict[str, np.ndarray]:
    """W_E with equal-norm cos / sin components at ``keys`` only, W_out @ W_U likewise."""
    x = np.arange(p)
    cols = []
    for k in keys:
        cols += [np.cos(2 * np.pi * k * x / p), np.sin(2 * np.pi * k * x / p)]
    basis = np.stack(cols, axis=1)  # (p, 2K), all columns with norm sqrt(p / 2)
    d_model = 2 * len(keys)
    W_E = np.concatenate([basis, np.ones((1, d_model)) * 7.0])  # '=' row is ignored
    W_out = np.zeros((d_mlp, d_model))
    W_out[:d_model, :d_model] = np.eye(d_model)
    W_U = np.concatenate([basis.T, np.full((d_model, 1), 9.0)], axis=1)
    return {
        "embed.W_E": W_E,
        "blocks.0.mlp.W_out": W_out,
        "blocks.0.mlp.b_out": np.ones(d_model),
        "unembed.W_U": W_U,
    }


def test_planted_fourier_weights_have_gini_one_minus_2k_over_p():
    p, keys = 23, [2, 9]
    params = planted_params(p, keys)
    # 2K of the p Fourier components carry equal norm, the rest zero -> 1 - (2K)^2 / (2K p)
    expected = 1 - 2 * len(keys) / p
    assert pr.gini_embed(params, p) == pytest.approx(expected, rel=1e-10)
    assert pr.gini_unembed(params, p) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(
        pr.neuron_logit_matrix(params), params["blocks.0.mlp.W_out"] @ params["unembed.W_U"]
    )
    rng = np.random.default_rng(0)
    dense = {k: rng.normal(size=v.shape) for k, v in params.items()}
    assert pr.gini_embed(dense, p) < 0.4


def test_mlp_w_l_is_w_u_and_weight_norm_is_sum_of_squares():
    rng = np.random.default_rng(2)
    params = {"layers.0.W": rng.normal(size=(10, 4)), "unembed.W_U": rng.normal(size=(4, 6))}
    np.testing.assert_array_equal(pr.neuron_logit_matrix(params), params["unembed.W_U"])
    np.testing.assert_array_equal(pr.embedding_matrix(params, 3), params["layers.0.W"][:3])
    expected = sum(float((v**2).sum()) for v in params.values())
    assert pr.weight_norm_sq(params) == pytest.approx(expected, rel=1e-14)


# -- ablations --------------------------------------------------------------------------------


def test_filter_grid_keep_and_remove_are_complementary():
    p = 11
    rng = np.random.default_rng(6)
    v = rng.normal(size=(p * p, 5))
    kept = ab.keep_frequencies(v, p, [2, 3])
    others = [k for k in range(1, p // 2 + 1) if k not in (2, 3)]
    removed = v.copy()
    for k in others:
        removed = ab.remove_frequency(removed, p, k)
    # removing every other frequency leaves the kept part plus the cross-frequency terms
    cross = v - ab.keep_frequencies(v, p, range(1, p // 2 + 1))
    np.testing.assert_allclose(removed, kept + cross, atol=1e-10)
    a, b = grid(p)
    single = np.cos(2 * np.pi * 2 * a / p)[:, None] + 1.5
    np.testing.assert_allclose(ab.keep_frequencies(single, p, [2]), single, atol=1e-12)
    np.testing.assert_allclose(ab.remove_frequency(single, p, 2), 1.5, atol=1e-12)


def planted_transformer(
    p: int, key: list[int], d_mlp: int = 48, alpha: float = 10.0, op: str = "x+y"
):
    """A hand-built one-layer transformer running the Fourier algorithm of Nanda et al. (2023)
    on the key frequencies only.

    Attention is uniform (W_Q = 0) with identity value / output maps, so the answer position
    holds W_E[a] + W_E[b]; W_E holds cos / sin of the key frequencies; every neuron reads one
    key frequency at a random phase (ReLU(cos(w a - phi) + cos(w b - phi) + 0.5)); W_U reads
    cos / sin(w_k c); W_out is the least-squares fit making the logits
    ~ alpha * sum_k cos(w_k (a + b - c)) (the fit is imperfect: ReLU neurons of this form do
    not span cos(w (a + b)) exactly, which leaves some non-key noise in the logits).

    With ``op="x*y"`` the same algorithm runs on discrete logs: W_E holds cos / sin(w_k log a)
    over Z_(p-1) (a zero row for residue 0), and the fit is over the nonzero operands.
    """
    d_model = 2 * len(key)
    cfg = ModelConfig(d_model=d_model, n_heads=1, d_head=d_model, d_mlp=d_mlp)
    model = Transformer(cfg, d_vocab=p + 1, n_ctx=3)
    rng = np.random.default_rng(0)
    x, n = np.arange(p), p
    if op == "x*y":
        g, n = pr.primitive_root(p), p - 1
        x = np.zeros(p)
        x[[pow(g, i, p) for i in range(n)]] = np.arange(n)
    cols = []
    for k in key:
        cols += [np.cos(2 * np.pi * k * x / n), np.sin(2 * np.pi * k * x / n)]
    W_E = np.concatenate([np.stack(cols, 1), np.zeros((1, d_model))])
    if op == "x*y":
        W_E[0] = 0.0
    W_in = np.zeros((d_model, d_mlp))
    for n in range(d_mlp):
        j = n % len(key)
        phi = rng.uniform(0, 2 * np.pi)
        W_in[2 * j, n], W_in[2 * j + 1, n] = np.cos(phi), np.sin(phi)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    sd["embed.W_E"] = torch.tensor(W_E, dtype=torch.float32)
    sd["blocks.0.attn.W_V"] = torch.eye(d_model)[None]
    sd["blocks.0.attn.W_O"] = 3 * torch.eye(d_model)[None]  # undo the 1/3 of uniform attention
    sd["blocks.0.mlp.W_in"] = torch.tensor(W_in, dtype=torch.float32)
    sd["blocks.0.mlp.b_in"] = torch.full((d_mlp,), 0.5)
    sd["unembed.W_U"] = torch.tensor(np.concatenate([W_E[:p].T, np.zeros((d_model, 1))], 1))
    sd["unembed.W_U"] = sd["unembed.W_U"].float()
    model.load_state_dict(sd)
    model.eval()
    # Fit W_out, b_out: MLP output + direct path (W_E[a] + W_E[b]) = alpha * cos / sin(w(a+b)).
    ds = modular_task(op, p, 0.5, 0)
    acts = np.concatenate([pr.neuron_activations(model, ds.tokens), np.ones((p * p, 1))], 1)
    a, b = grid(p)
    answer = (a * b) % p if op == "x*y" else (a + b) % p
    targets = alpha * np.stack([col[answer] for col in cols], 1) - W_E[a] - W_E[b]
    on = (a > 0) & (b > 0) if op == "x*y" else np.ones(p * p, dtype=bool)
    sol = np.linalg.lstsq(acts[on], targets[on], rcond=None)[0]
    sd["blocks.0.mlp.W_out"] = torch.tensor(sol[:-1], dtype=torch.float32)
    sd["blocks.0.mlp.b_out"] = torch.tensor(sol[-1], dtype=torch.float32)
    model.load_state_dict(sd)
    return model


def test_planted_transformer_key_frequencies_progress_and_ablations():
    from grokscope.measures import neurons as nu

    p, key = 17, [2, 5]
    ds = modular_task("x+y", p, 0.3, 0)
    model = planted_transformer(p, key)
    acts = pr.neuron_activations(model, ds.tokens)
    logits = pr.model_logits(model, ds.tokens)
    fr = nu.neuron_frequency_fractions(acts, p)
    assert nu.key_frequencies(fr) == key
    np.testing.assert_array_equal(nu.dominant_frequencies(fr), [key[n % 2] for n in range(48)])
    full = pr.basic_row(logits, ds)
    assert full["test_acc"] > 0.8
    four = pr.fourier_row(logits, ds, key)
    # the key directions alone do the task better than the full (noisy) logits
    assert four["restricted_loss"] < 0.2 * full["test_loss"]
    assert four["excluded_loss"] > 5 * full["train_loss"]
    # patching in the unchanged activations reproduces the logits (the hook path is exact)
    np.testing.assert_allclose(ab.patched_logits(model, ds.tokens, acts), logits, atol=1e-4)
    rows = ab.ablation_rows(logits, acts, model, ds, key)
    by = {(r["target"], r["ablation"], r["freq"]): r["loss"] for r in rows}
    assert set(by) == {
        ("logits", "none", None),
        ("logits", "keep_key", None),
        ("logits", "remove", 2),
        ("logits", "remove", 5),
        ("neurons", "keep_key", None),
        ("neurons", "remove", 2),
        ("neurons", "remove", 5),
    }
    base = by[("logits", "none", None)]
    assert base == pytest.approx(pr.cross_entropy(logits, ds.labels))
    assert by[("logits", "keep_key", None)] == pytest.approx(
        pr.restricted_loss(logits, ds.labels, p, key)
    )
    # keeping the key-frequency terms of the neurons is as good as keeping the key logit part;
    # removing either key frequency (from logits or from neurons) breaks the model
    assert by[("neurons", "keep_key", None)] == pytest.approx(by[("logits", "keep_key", None)], 0.1)
    for k in key:
        assert by[("logits", "remove", k)] > 5 * base
        assert by[("neurons", "remove", k)] > 5 * base


# -- x*y and x/y: the circuit over discrete logarithms --------------------------------------------


@pytest.mark.parametrize("p, g", [(7, 3), (23, 5), (97, 5), (113, 3)])
def test_primitive_root_generates_every_unit(p, g):
    assert pr.primitive_root(p) == g
    assert sorted(pow(g, i, p) for i in range(p - 1)) == list(range(1, p))


@pytest.mark.parametrize("op, sign", [("x*y", 1), ("x/y", -1)])
def test_log_view_turns_products_into_sums_of_logs(op, sign):
    p = 13
    ds = modular_task(op, p, 0.5, 0)
    view = pr.fourier_view(ds)
    assert view.n == p - 1 and view.sign == sign and view.basis == "discrete log base 2"
    log = {int(r): i for i, r in enumerate(view.order)}
    a, b = ds.operands[view.rows].T
    i, j = np.array([log[int(x)] for x in a]), np.array([log[int(x)] for x in b])
    assert (a == view.order[np.repeat(np.arange(p - 1), p - 1)]).all()  # log-major grid
    # the label's discrete log is i + s j (mod p - 1): the circuit of Nanda et al. over logs
    assert [log[int(c)] for c in ds.labels[view.rows]] == list((i + sign * j) % (p - 1))


@pytest.mark.parametrize("op, sign", [("x*y", 1), ("x/y", -1)])
def test_planted_log_circuit_gives_the_published_loss_pattern(op, sign):
    """Logits built from cos(w_k (log a + s log b - log c)) on the nonzero operands: keeping the
    key directions keeps the loss; removing them leaves chance-level logits on the training
    pairs; the key frequencies of planted neurons are found in the log basis."""
    p, keys = 23, [3, 7]
    ds = modular_task(op, p, 0.5, 0)
    view = pr.fourier_view(ds)
    n = p - 1
    log_of = np.zeros(p, dtype=int)
    log_of[view.order] = np.arange(n)
    a, b = ds.operands.T
    s = (log_of[a] + sign * log_of[b])[:, None] - log_of[np.arange(p)][None]
    z = 6.0 * sum(np.cos(2 * np.pi * k * s / n) for k in keys)
    z[:, 0] = -30.0  # class 0 is never the answer for nonzero operands
    z = np.concatenate([z, np.full((len(z), 1), -30.0)], axis=1)
    on = view.rows
    row = pr.fourier_row(z, ds, keys)
    full = pr.cross_entropy(z[on], ds.labels[on])
    assert row["restricted_loss"] == pytest.approx(full, rel=1e-9)
    assert row["logit_var_explained"] > 0.95
    # without the key directions each class's logit is its grid mean: chance among p - 1
    assert row["excluded_loss"] > np.log(n) - 0.1
    assert pr.fourier_row(z, ds, [5])["restricted_loss"] > full + 1.0  # wrong keys fail
    # neurons tuned to the key frequencies over logs
    acts = np.stack(
        [
            np.cos(2 * np.pi * k * (log_of[a] + sign * log_of[b]) / n + ph)
            for k in keys
            for ph in (0.0, 1.0)
        ],
        axis=1,
    )
    from grokscope.measures import neurons as nu

    fractions = nu.neuron_frequency_fractions(acts[view.rows], n)
    assert nu.key_frequencies(fractions) == keys
    # the same neurons over residues look like noise: no key frequency stands out
    if op == "x*y":
        residue = nu.neuron_frequency_fractions(acts, p)
        assert residue.max() < 0.5


def test_gini_of_a_log_tuned_embedding_is_taken_over_logs():
    """An embedding / unembedding that writes one frequency of log a is sparse in the log basis
    (Gini near 1, what gini_row reports for x*y) and spread out over residues."""
    p, k = 23, 4
    ds = modular_task("x*y", p, 0.5, 0)
    view = pr.fourier_view(ds)
    n = p - 1
    log_of = np.zeros(p, dtype=int)
    log_of[view.order] = np.arange(n)
    angle = 2 * np.pi * k * log_of / n
    E = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    E[0] = 0.0  # residue 0 has no logarithm
    params = {
        "embed.W_E": np.concatenate([E, np.zeros((1, 2))]),
        "unembed.W_U": np.concatenate([E.T, np.zeros((2, 1))], axis=1),
    }
    row = pr.gini_row(params, ds)
    assert row["gini_embed"] > 0.9 and row["gini_unembed"] > 0.9
    assert pr.gini_embed(params, p) < 0.6 and pr.gini_unembed(params, p) < 0.6  # over residues
    # x + y keeps the residue basis
    plus = pr.gini_row(params, modular_task("x+y", p, 0.5, 0))
    assert plus["gini_embed"] == pytest.approx(pr.gini_embed(params, p))


def test_planted_log_transformer_key_frequencies_and_ablations():
    """The hand-built Fourier transformer run on discrete logs, evaluated on x*y mod 17: its
    key frequencies are found over Z_16, and the ablations show the paper's pattern."""
    from grokscope.measures import neurons as nu

    p, key = 17, [3, 5]
    ds = modular_task("x*y", p, 0.3, 0)
    view = pr.fourier_view(ds)
    model = planted_transformer(p, key, op="x*y")
    acts = pr.neuron_activations(model, ds.tokens)
    logits = pr.model_logits(model, ds.tokens)
    fr = nu.neuron_frequency_fractions(acts[view.rows], view.n)
    assert nu.key_frequencies(fr) == key
    on = view.rows
    assert pr.accuracy(logits[on], ds.labels[on]) > 0.8
    four = pr.fourier_row(logits, ds, key)
    assert four["restricted_loss"] < 0.5 * pr.cross_entropy(logits[on], ds.labels[on])
    rows = ab.ablation_rows(logits, acts, model, ds, key)
    by = {(r["target"], r["ablation"], r["freq"]): r["loss"] for r in rows}
    base = by[("logits", "none", None)]
    assert base == pytest.approx(pr.cross_entropy(logits[on], ds.labels[on]))
    assert by[("neurons", "keep_key", None)] == pytest.approx(by[("logits", "keep_key", None)], 0.1)
    for k in key:
        assert by[("logits", "remove", k)] > 5 * base
        assert by[("neurons", "remove", k)] > 5 * base
