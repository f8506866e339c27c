"""Planted-truth tests for grokscope.measures.curvature: Hessian spectrum (Lanczos), Hutchinson
trace, scale-aware sharpness, Hessian-vector products and the SGLD local learning coefficient
(Lau et al. 2023)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokscope.config import ModelConfig
from grokscope.measures import curvature as cv
from grokscope.models import build_model
from grokscope.tasks import modular_task

F64 = torch.float64


def planted_matrix(eigs: list[float], seed: int = 0) -> torch.Tensor:
    """Symmetric A = Q diag(eigs) Q^T in a random orthogonal basis Q."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen, dtype=F64))
    return q @ torch.diag(torch.tensor(eigs, dtype=F64)) @ q.T


def quadratic(a: torch.Tensor) -> tuple[cv.LossFn, cv.Params]:
    """0.5 theta^T A theta over a parameter dict of two tensors (so flatten/unflatten are
    exercised); the Hessian is A at every point."""
    d = a.shape[0]
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(d, generator=gen, dtype=F64)
    params = {"m": theta[:12].reshape(3, 4).clone(), "v": theta[12:].clone()}

    def loss_fn(p: cv.Params) -> torch.Tensor:
        w = torch.cat([p["m"].reshape(-1), p["v"]])
        return 0.5 * w @ a @ w

    return loss_fn, params


BULK = list(np.linspace(0.4, 0.01, 25))


@pytest.mark.parametrize(
    "eigs",
    [
        [10.0, 5.0, 2.0, 1.0, 0.5, *BULK],
        [10.0, 5.0, 2.0, 1.0, -20.0, -3.0, *BULK],  # a negative eigenvalue largest in magnitude
        [-0.1, -0.5, -1.0, -2.0, *(-np.linspace(3, 9, 26))],  # negative definite
        [10.0, 10.0, 5.0, 1.0, *BULK, 0.0],  # repeated top eigenvalue
    ],
)
def test_top_eigenvalues_of_planted_spectrum(eigs) -> None:
    loss_fn, params = quadratic(planted_matrix(eigs))
    top = cv.top_hessian_eigenvalues(loss_fn, params, k=3, tol=1e-10)
    want = np.sort(eigs)[::-1][:3]
    np.testing.assert_allclose(top, want, rtol=1e-6, atol=0)


def test_power_iteration_finds_largest_magnitude() -> None:
    a = planted_matrix([10.0, 5.0, 2.0, -20.0, *BULK])
    value = cv.power_iteration(lambda v: a @ v, a.shape[0], iters=2000, tol=1e-14)
    assert value == pytest.approx(-20.0, rel=1e-6)
    assert cv.lanczos(lambda v: a @ v, a.shape[0], k=1, tol=1e-10)[0] == pytest.approx(10.0)


def test_hutchinson_trace_and_its_standard_error() -> None:
    a = planted_matrix([10.0, 5.0, 2.0, 1.0, -3.0, *BULK], seed=3)
    loss_fn, params = quadratic(a)
    # one Rademacher probe z^T A z has variance 2 sum_{i != j} A_ij^2
    sigma = math.sqrt(2 * (float((a**2).sum()) - float((torch.diagonal(a) ** 2).sum())))
    for n, rel in [(100, 0.3), (1600, 0.08)]:
        # the sample std of n nearly Gaussian values is off by ~ 1 / sqrt(2 n) relative
        # (7 % at 100, 1.8 % at 1600): tolerances are about 4 of those
        mean, se = cv.hessian_trace(loss_fn, params, n_samples=n, seed=n)
        assert abs(mean - float(torch.trace(a))) <= 4 * se
        assert se * math.sqrt(n) == pytest.approx(sigma, rel=rel)  # SE ~ sigma / sqrt(n)


def test_hessian_trace_of_diagonal_is_exact() -> None:
    # Rademacher probes: z^T D z = tr D exactly for a diagonal D, so the SE is 0
    loss_fn, params = quadratic(torch.diag(torch.linspace(-1.0, 3.0, 30, dtype=F64)))
    mean, se = cv.hessian_trace(loss_fn, params, n_samples=10)
    assert mean == pytest.approx(30.0, rel=1e-12)
    assert se == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.1])
def test_scaled_hessian_sharpness_is_top_eigenvalue_of_dad(eta: float) -> None:
    a = planted_matrix([10.0, 5.0, 2.0, 1.0, -4.0, *BULK], seed=5)
    loss_fn, params = quadratic(a)
    d = torch.diag(cv.flatten(params).abs() + eta)
    want = float(torch.linalg.eigvalsh(d @ a @ d)[-1])
    got = cv.scaled_hessian_sharpness(loss_fn, params, eta=eta, tol=1e-10)
    assert got == pytest.approx(want, rel=1e-8)


def mlp_loss(act) -> tuple[cv.LossFn, cv.Params]:
    """A 3-6-2 MLP's mean squared error on 20 fixed points, in float64."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen, dtype=F64)
    y = torch.randn(20, 2, generator=gen, dtype=F64)
    params = {
        "W1": torch.randn(6, 3, generator=gen, dtype=F64),
        "b1": torch.randn(6, generator=gen, dtype=F64) * 0.1,
        "W2": torch.randn(2, 6, generator=gen, dtype=F64),
        "b2": torch.randn(2, generator=gen, dtype=F64) * 0.1,
    }

    def loss_fn(p: cv.Params) -> torch.Tensor:
        h = act(x @ p["W1"].T + p["b1"])
        return ((h @ p["W2"].T + p["b2"] - y) ** 2).mean()

    return loss_fn, params


@pytest.mark.equality
def test_hvp_equals_dense_hessian_times_vector() -> None:
    loss_fn, params = mlp_loss(torch.tanh)
    flat = cv.flatten(params)
    dense = torch.autograd.functional.hessian(lambda w: loss_fn(cv.unflatten(w, params)), flat)
    hvp = cv.hvp_fn(loss_fn, params)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(flat.numel(), generator=gen, dtype=F64)
        torch.testing.assert_close(hvp(v), dense @ v, rtol=0, atol=1e-10)


def test_scaled_hessian_sharpness_ignores_neuron_rescaling_but_top_eigenvalue_does_not() -> None:
    # ReLU: scaling hidden neuron i's input weights and bias by s_i > 0 and its output weights
    # by 1 / s_i leaves the loss unchanged (a diagonal symmetry theta -> s * theta)
    loss_fn, params = mlp_loss(torch.relu)
    s = torch.tensor([0.2, 3.0, 1.0, 5.0, 0.5, 2.0], dtype=F64)
    scaled = {"W1": params["W1"] * s[:, None], "b1": params["b1"] * s}
    scaled |= {"W2": params["W2"] / s, "b2": params["b2"]}
    assert float(loss_fn(scaled)) == pytest.approx(float(loss_fn(params)), rel=1e-12)
    before = cv.scaled_hessian_sharpness(loss_fn, params, tol=1e-10)
    after = cv.scaled_hessian_sharpness(loss_fn, scaled, tol=1e-10)
    assert after == pytest.approx(before, rel=1e-8)
    top_before = cv.top_hessian_eigenvalues(loss_fn, params, k=1, tol=1e-10)[0]
    top_after = cv.top_hessian_eigenvalues(loss_fn, scaled, k=1, tol=1e-10)[0]
    assert abs(top_after / top_before - 1) > 0.1  # the raw sharpness is fooled


def test_norm_scaled_sharpness_invariant_for_scale_invariant_loss() -> None:
    # L(theta) = 0.5 u^T A u with u = theta / |theta|: L(alpha theta) = L(theta), so
    # H(alpha theta) = H(theta) / alpha^2 and lambda_max |theta|^2 is unchanged
    a = planted_matrix([4.0, 3.0, 1.0, *BULK], seed=7)

    def loss_fn(p: cv.Params) -> torch.Tensor:
        u = p["w"] / p["w"].norm()
        return 0.5 * u @ a @ u

    w = torch.randn(a.shape[0], generator=torch.Generator().manual_seed(0), dtype=F64)
    values = []
    for alpha in (1.0, 3.0):
        params = {"w": alpha * w}
        top = cv.top_hessian_eigenvalues(loss_fn, params, k=1, tol=1e-10)[0]
        values.append((top, cv.norm_scaled_sharpness(top, params)))
    assert values[1][0] == pytest.approx(values[0][0] / 9, rel=1e-8)
    assert values[1][1] == pytest.approx(values[0][1], rel=1e-8)


# -- local learning coefficient --------------------------------------------------------------------
#
# For L(w) = sum_i w_i^(2k) the posterior exp(-n beta L) gives n beta E[L] = d / (2k) exactly at
# every temperature, so the learning coefficient is d / 2 (quadratic), d / 4 (quartic), r / 2 for
# a quadratic in r of the d coordinates. n = 10 (n beta = 4.34) only sets the temperature; it
# keeps the quartic's flat bottom mixing as fast as the quadratic. With epsilon n beta = 0.1 an
# SGLD step contracts a quadratic coordinate by 5 %, which biases E[L] up by epsilon a / 4 = 2.5 %
# (exact for the quadratic; 2.5 % for the quartic too, measured with 400 x 20,000 steps of the
# same recursion); gamma = 0.01 biases it down by 0.1 %. The Monte Carlo error of 16 chains of
# 2,000 kept steps (integrated autocorrelation ~20 steps) is about 2 %. A 10 % tolerance is the
# bias plus about 4 standard errors.

D, N_TOY = 4, 10
NB = N_TOY / math.log(N_TOY)
LLC_TOY = dict(epsilon=0.1 / NB, gamma=0.01, num_chains=16, num_steps=2500, num_burnin=500)
ORIGIN = {"w": torch.zeros(D, dtype=F64)}


def regular(p: cv.Params) -> torch.Tensor:
    return (p["w"] ** 2).sum()


def quartic(p: cv.Params) -> torch.Tensor:
    return (p["w"] ** 4).sum()


def rank_two(p: cv.Params) -> torch.Tensor:
    return (p["w"][:2] ** 2).sum()


@pytest.fixture(scope="module")
def toy_llcs() -> dict[str, dict]:
    return {
        name: cv.local_learning_coefficient(f, ORIGIN, N_TOY, seed=0, **LLC_TOY)
        for name, f in [("regular", regular), ("quartic", quartic), ("rank_two", rank_two)]
    }


@pytest.mark.parametrize(
    "name, truth", [("regular", D / 2), ("quartic", D / 4), ("rank_two", 2 / 2)]
)
def test_llc_of_planted_models(toy_llcs, name: str, truth: float) -> None:
    out = toy_llcs[name]
    assert out["llc"] == pytest.approx(truth, rel=0.1)
    assert out["llc_se"] < 0.05 * truth  # the reported SE is of the size argued above
    assert out["nbeta"] == pytest.approx(NB)
    assert out["loss_trace"].shape == (16, 2500) and not out["diverged"]
    assert out["init_loss"] == 0.0


def test_llc_ranks_degenerate_below_regular(toy_llcs) -> None:
    reg = toy_llcs["regular"]
    for name in ("quartic", "rank_two"):
        gap = reg["llc"] - toy_llcs[name]["llc"]
        assert gap > 4 * math.hypot(reg["llc_se"], toy_llcs[name]["llc_se"])


def test_llc_with_minibatch_loss() -> None:
    # l_i(w) = 0.5 sum_j a_ij w_j^2, a_ij in [0.5, 1.5]: L_n = 0.5 sum_j abar_j w_j^2 is a
    # regular quadratic (lambda = d / 2) whose mini-batch losses are all minimised at 0
    a = torch.rand(N_TOY, D, generator=torch.Generator().manual_seed(0), dtype=F64) + 0.5
    calls = []

    def full(p: cv.Params) -> torch.Tensor:
        return 0.5 * (a * p["w"] ** 2).sum(dim=1).mean()

    def batch(p: cv.Params, chain: int, step: int) -> torch.Tensor:
        calls.append((chain, step))
        idx = torch.as_tensor(np.random.default_rng((chain, step)).choice(N_TOY, 5, False))
        return 0.5 * (a[idx] * p["w"] ** 2).sum(dim=1).mean()

    kw = dict(LLC_TOY, epsilon=0.2 / NB, num_chains=8)
    out = cv.local_learning_coefficient(full, ORIGIN, N_TOY, step_loss_fn=batch, **kw)
    assert len(calls) == 8 * 2500 and calls[-1] == (7, 2499)
    assert out["llc"] == pytest.approx(D / 2, rel=0.1)


def test_llc_divergence_is_reported() -> None:
    out = cv.local_learning_coefficient(
        quartic,
        {"w": torch.full((D,), 3.0, dtype=F64)},
        N_TOY,
        epsilon=1.0,
        num_steps=20,
        num_burnin=5,
        num_chains=2,
    )
    assert out["diverged"] and math.isnan(out["llc"])


# -- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_numbers() -> None:
    loss_fn, params = mlp_loss(torch.tanh)
    for seed in (0, 1):
        runs = [
            (
                cv.top_hessian_eigenvalues(loss_fn, params, k=3, iters=8, seed=seed),
                cv.hessian_trace(loss_fn, params, n_samples=5, seed=seed),
                cv.scaled_hessian_sharpness(loss_fn, params, iters=8, seed=seed),
                cv.local_learning_coefficient(
                    loss_fn, params, 100, num_chains=2, num_steps=30, num_burnin=5, seed=seed
                )["loss_trace"],
            )
            for _ in range(2)
        ]
        np.testing.assert_array_equal(runs[0][0], runs[1][0])
        assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]
        np.testing.assert_array_equal(runs[0][3], runs[1][3])
    other = cv.hessian_trace(loss_fn, params, n_samples=5, seed=2)
    assert other != cv.hessian_trace(loss_fn, params, n_samples=5, seed=0)


# -- a Nanda-style transformer checkpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint():
    """A one-layer transformer (d_model 32) on x + y mod 23, 50 % train, after 150 full-batch
    AdamW steps (training loss well below log 23: trained-ish)."""
    ds = modular_task("x+y", 23, 0.5, 0)
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64)
    model = build_model(cfg, ds.d_vocab, ds.n_ctx, seed=0)
    tokens = torch.as_tensor(ds.tokens[ds.train_idx])
    labels = torch.as_tensor(ds.labels[ds.train_idx])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens).double(), labels)
        loss.backward()
        opt.step()
    return model, tokens, labels


def test_transformer_lanczos_matches_power_iteration(tiny_checkpoint) -> None:
    model, tokens, labels = tiny_checkpoint
    loss_fn = cv.training_loss(model, tokens, labels)
    params = cv.model_params(model, F64)
    assert float(loss_fn(params)) < 0.5 * math.log(23)
    top = cv.top_hessian_eigenvalues(loss_fn, params, k=3, tol=1e-8)
    assert top[0] >= top[1] >= top[2] and top[0] > 0
    hvp = cv.hvp_fn(loss_fn, params)
    power = cv.power_iteration(hvp, cv.flatten(params).numel(), iters=500, tol=1e-9)
    assert power == pytest.approx(top[0], rel=1e-3)
    mean, se = cv.hessian_trace(loss_fn, params, n_samples=20)
    assert mean - 4 * se > 0


def test_checkpoint_curvature_columns(tiny_checkpoint) -> None:
    model, tokens, labels = tiny_checkpoint
    out = cv.checkpoint_curvature(
        model,
        tokens,
        labels,
        trace_samples=4,
        llc_batch_size=64,
        llc_kwargs=dict(num_chains=2, num_steps=20, num_burnin=5),
    )
    want = ["hessian_top1", "hessian_top2", "hessian_top3", "hessian_trace", "hessian_trace_se"]
    want += ["sharpness_norm_scaled", "sharpness_scaled_hessian", "llc", "llc_se"]
    want += ["llc_reliable", "llc_gamma", "llc_epsilon"]
    assert sorted(out) == sorted(want)
    assert all(math.isfinite(v) for v in out.values())
    assert out["hessian_top1"] >= out["hessian_top2"] >= out["hessian_top3"]
    sq = sum(float(p.detach().double().square().sum()) for p in model.parameters())
    assert out["sharpness_norm_scaled"] == pytest.approx(out["hessian_top1"] * sq)


def test_bad_arguments_raise() -> None:
    loss_fn, params = quadratic(planted_matrix([1.0] * 20))
    with pytest.raises(ValueError):
        cv.top_hessian_eigenvalues(loss_fn, params, k=21)
    with pytest.raises(ValueError):
        cv.hessian_trace(loss_fn, params, n_samples=1)
    with pytest.raises(ValueError):
        cv.local_learning_coefficient(loss_fn, params, 100, num_steps=10, num_burnin=10)


# -- the calibrated LLC: right where it answers, says so where it cannot ---------------------------
#
# A regular quadratic in d = 60 dimensions has coefficient d / 2 = 30 at every curvature; the
# fixed settings of the analysis before calibration (gamma 100, epsilon 1e-4) read curvature
# instead. The calibrated estimate carries the step-size bias of STEP_CONTRACTION (about +2.5 %)
# and the localisation's (-0.1 %); 10 % covers them and the Monte Carlo error (4 chains of 300
# kept steps of 60 coordinates: about 1 %).

D_BIG, N_BIG = 60, 1000
ORIGIN_BIG = {"w": torch.zeros(D_BIG, dtype=F64)}


@pytest.mark.parametrize("curvature", [1e-4, 1e-2, 1.0, 10.0])
def test_calibrated_llc_of_a_regular_quadratic_at_any_curvature(curvature):
    def loss(p: cv.Params) -> torch.Tensor:
        return 0.5 * curvature * (p["w"] ** 2).sum()

    out = cv.calibrated_llc(loss, ORIGIN_BIG, N_BIG, seed=1)
    assert out["llc"] == pytest.approx(D_BIG / 2, rel=0.1)
    assert out["reliable"] and out["settled"] and out["gamma_stable"]
    fixed = cv.local_learning_coefficient(
        loss, ORIGIN_BIG, N_BIG, epsilon=1e-4, gamma=100.0, num_chains=2, num_steps=100,
        num_burnin=20,
    )  # fmt: skip
    if curvature <= 1e-2:  # the old fixed settings were out of their regime here
        assert fixed["llc"] < 0.5 * D_BIG / 2


def test_calibrated_llc_of_degenerate_minima():
    """r / 2 for a quadratic in r of the d coordinates, d / 4 for a quartic (flat at w*: the
    pilot finds the curvature of the typical set)."""

    def rank_half(p: cv.Params) -> torch.Tensor:
        return 0.5 * (p["w"][: D_BIG // 2] ** 2).sum()

    def quart(p: cv.Params) -> torch.Tensor:
        return (p["w"] ** 4).sum()

    out = cv.calibrated_llc(rank_half, ORIGIN_BIG, N_BIG, seed=2)
    assert out["llc"] == pytest.approx(D_BIG / 4, rel=0.1) and out["reliable"]
    out = cv.calibrated_llc(quart, ORIGIN_BIG, N_BIG, seed=3, num_steps=1500, num_burnin=500)
    assert out["llc"] == pytest.approx(D_BIG / 4, rel=0.15)


def test_an_unsettled_estimate_is_flagged():
    """Chains too short to reach the posterior from a point far from the minimum: not settled,
    not reliable (the flag is what a reader checks before reading the number)."""

    def loss(p: cv.Params) -> torch.Tensor:
        return 0.5 * (p["w"] ** 2).sum()

    far = {"w": torch.full((D_BIG,), 0.0, dtype=F64)}
    out = cv.local_learning_coefficient(
        loss, far, N_BIG, epsilon=1e-6, gamma=0.0, num_chains=4, num_steps=60, num_burnin=0
    )
    assert not cv._settled(out, 0)  # still climbing from w* at the end: a drift, flagged


def test_lanczos_agrees_with_scipy_eigsh() -> None:
    """The hand-written Lanczos (kept for its fewer Hessian-vector products) gives ARPACK's
    eigenvalues on a planted spectrum."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    a = planted_matrix([5.0, 2.5, 2.0, *BULK], seed=11)
    ours = cv.lanczos(lambda v: a @ v, a.shape[0], k=3, tol=1e-10)
    op = LinearOperator(a.shape, matvec=lambda v: a.numpy() @ v, dtype=float)
    theirs = np.sort(eigsh(op, k=3, which="LA", tol=1e-12, return_eigenvectors=False))[::-1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
