"""grokscope's LLC sampler against devinterp's (Timaeus; ``devinterp.optim.SGMCMC.sgld``, the
sampler behind ``devinterp.slt.llc``), at the same settings.

Both implement Lau et al. (2023)'s localised SGLD step
``w <- w - eps/2 (n beta grad L(w) + gamma (w - w*)) + N(0, eps)`` and the estimate
``n beta (mean sampled loss - L(w*))``; devinterp 2.0 averages every step, burn-in included, so
grokscope is run with ``num_burnin=0`` here. The samplers draw their noise from different
generators, so the estimates agree in distribution, not bit for bit: the checks are against
the chains' standard errors.

1. A quadratic loss (linear regression with unit-variance Gaussian noise, d parameters), where
   the expectation of the estimate is known in closed form for the discrete chain: along an
   eigendirection of the Hessian with curvature h, the drift is a = n beta h + gamma, the
   chain's variance after t steps is (1 - r^(2t)) / (a (1 - eps a / 4)) with r = 1 - eps a / 2,
   and the expected estimate is n beta h / 2 times the mean variance over the steps, summed
   over directions (d / 2 in the limit of small eps and gamma, the regular model's LLC).
2. A small grokscope transformer after a short training: the two estimates agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grokscope.measures.curvature import local_learning_coefficient

devinterp_optim = pytest.importorskip("devinterp.optim", reason="devinterp is not installed")

CHAINS, STEPS = 8, 400


def devinterp_llc(model: torch.nn.Module, loss_fn, nbeta: float, eps: float, gamma: float,
                  chains: int, steps: int, seed: int) -> np.ndarray:  # fmt: skip
    """Per-chain estimates with devinterp's sampler: each chain starts at the model's weights;
    the loss recorded at a step is the one whose gradient moves it (as grokscope records)."""
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        init = float(loss_fn(model))
    out = []
    for chain in range(chains):
        model.load_state_dict(start)
        model.requires_grad_(True)
        sampler = devinterp_optim.SGMCMC.sgld(
            model.parameters(), lr=eps, localization=gamma, nbeta=nbeta
        )
        gen = torch.Generator().manual_seed(seed * 1000 + chain)
        total = 0.0
        for _ in range(steps):
            sampler.zero_grad()
            loss = loss_fn(model)
            loss.backward()
            total += float(loss.detach())
            sampler.step(noise_generator=gen)
        out.append(nbeta * (total / steps - init))
    model.load_state_dict(start)
    return np.array(out)


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


class Linear(torch.nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())


def test_both_samplers_hit_the_exact_expectation_of_a_quadratic_loss():
    gen = torch.Generator().manual_seed(0)
    n, d = 400, 6
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = X @ torch.randn(d, generator=gen, dtype=torch.float64) + torch.randn(
        n, generator=gen, dtype=torch.float64
    )
    w_star = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)

    def loss_of(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - X @ w) ** 2).mean()

    nbeta = n / math.log(n)
    h = torch.linalg.eigvalsh(X.T @ X / n).numpy()
    eps, gamma = 0.2 / (nbeta * h.max()), 1.0
    a = nbeta * h + gamma
    r = 1 - eps * a / 2
    t = np.arange(STEPS)[:, None]
    variance = (1 - r ** (2 * t)) / (a * (1 - eps * a / 4))
    exact = float((nbeta * h / 2 * variance.mean(axis=0)).sum())
    # near the regular model's d / 2: gamma and the burn-in lower it, the step size raises it
    assert abs(exact - d / 2) < 0.3

    ours = local_learning_coefficient(
        lambda p: loss_of(p["w"]), {"w": w_star}, n, epsilon=eps, gamma=gamma,
        num_chains=CHAINS, num_steps=STEPS, num_burnin=0, seed=1,
    )  # fmt: skip
    model = Linear(w_star).double()
    theirs = devinterp_llc(model, lambda m: loss_of(m.w), nbeta, eps, gamma, CHAINS, STEPS, 2)
    assert abs(ours["llc"] - exact) < 4 * ours["llc_se"], (ours["llc"], exact)
    assert abs(theirs.mean() - exact) < 4 * _se(theirs), (theirs.mean(), exact)


def test_the_samplers_agree_on_a_trained_transformer(tmp_path):
    from grokscope.orchestrate.load import load_run
    from grokscope.orchestrate.train import train_run
    from tests.conftest import tiny_config

    train_run(tiny_config("train.epochs=60"), tmp_path / "r")
    run = load_run(tmp_path / "r")
    model, x, y = run.model(), run.tokens("train"), run.labels("train")
    n = len(y)
    nbeta = n / math.log(n)
    eps, gamma = 1e-5, 100.0  # small steps: the chains stay near w* and settle

    def loss_of(m) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(x), y)

    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    template = run.model()

    def functional_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = torch.func.functional_call(template, p, (x,))
        return torch.nn.functional.cross_entropy(logits, y)

    ours = local_learning_coefficient(
        functional_loss, params, n, epsilon=eps, gamma=gamma, num_chains=CHAINS,
        num_steps=150, num_burnin=0, seed=3,
    )  # fmt: skip
    theirs = devinterp_llc(model, loss_of, nbeta, eps, gamma, CHAINS, 150, 4)
    both = math.hypot(ours["llc_se"], _se(theirs))
    assert ours["llc"] > 0 and theirs.mean() > 0
    assert abs(ours["llc"] - theirs.mean()) < 4 * both, (ours["llc"], theirs.mean(), both)
