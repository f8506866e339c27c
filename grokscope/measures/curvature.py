"""Curvature of the training loss at one checkpoint: Hessian spectrum, trace, scale-aware
sharpness and the local learning coefficient.

Every measure takes a scalar ``loss_fn(params)`` of a dict of parameter tensors (name -> tensor)
and the point ``params`` to measure at; :func:`training_loss` and :func:`model_params` make both
from a model and its training examples. The Hessian is never formed: it is reached through
Hessian-vector products (HVPs) by double backward (Pearlmutter 1994, "Fast exact multiplication
by the Hessian"), linearised once per point and reused for every vector.

* :func:`top_hessian_eigenvalues`: Lanczos with full reorthogonalisation (Lanczos 1950; Golub &
  Van Loan, "Matrix Computations", ch. 10). Lanczos rather than deflated power iteration: for the
  same number of HVPs it converges much faster (Kaniel-Paige theory: its error falls with the
  Chebyshev polynomial of the gap, power iteration's with the plain ratio), it gives all k Ritz
  values from one Krylov basis, and it finds the largest *algebraic* eigenvalues even where a
  negative eigenvalue is larger in magnitude (power iteration finds the largest magnitude). Full
  reorthogonalisation keeps the basis orthogonal (no spurious copies of converged eigenvalues);
  it costs a basis of ``iters`` vectors, cheap next to the HVPs for the few dozen steps that k <= 5
  needs. :func:`power_iteration` is kept as an independent check.
* :func:`hessian_trace`: Hutchinson's estimator with Rademacher probes, E[z^T H z] = tr H
  (Hutchinson 1990; Avron & Toledo 2011, "Randomized algorithms for estimating the trace of an
  implicit symmetric positive semi-definite matrix"), with its standard error over the probes.
* Scale-aware sharpness, so that a shrinking weight norm (weight decay) does not read as rising
  curvature. Two definitions:

  - :func:`scaled_hessian_sharpness` = lambda_max(D H D), D = diag(|theta| + eta) (ours; the
    column ``sharpness_scaled_hessian``): the top Hessian eigenvalue in the coordinates
    theta = (|theta| + eta) * u. It is not the elementwise adaptive sharpness of Kwon, Kim,
    Park & Choi (2021, ASAM) and Andriushchenko, Croce, Mueller, Hein & Flammarion (2023),
    max over |delta / (|theta| + eta)|_2 <= rho of L(theta + delta) - L(theta), which needs a
    radius rho and an inner maximisation. It is that quantity's curvature coefficient at a
    minimum: where the gradient g vanishes the maximum is rho^2 / 2 lambda_max(D H D) +
    O(rho^3); where it does not, rho |D g| + rho^2 / 2 lambda_max(D H D) is only an upper bound
    (the two terms are maximised by different delta). No rho to choose. With eta = 0 it is
    *exactly* invariant under every elementwise rescaling symmetry theta -> s * theta (s > 0)
    of the loss: the Hessian becomes S^-1 H S^-1 and D
    becomes S D, so D H D is unchanged. The one-layer transformer has many: per ReLU neuron
    (W_in column and b_in entry times a, W_out row times 1/a), per head W_Q times a and W_K times
    1/a, W_V times a and W_O times 1/a, and any global rescaling of a scale-invariant loss.
    Weights that are exactly zero (biases at initialisation) get no perturbation unless eta > 0.
  - :func:`norm_scaled_sharpness` = lambda_max(H) |theta|^2: the same idea with one scalar
    scale, the curvature for perturbations measured relative to the whole weight norm. It is
    exactly invariant under theta -> alpha theta when the loss is scale-invariant,
    L(alpha theta) = L(theta) (then H(alpha theta) = H(theta) / alpha^2; e.g. a network with a
    normalisation before its read-out). A positively homogeneous network (logits
    f(alpha theta) = alpha^L f(theta), e.g. a bias-free ReLU MLP) is not scale-invariant: global
    rescaling sharpens or softens its softmax, so no Hessian sharpness is invariant to it there,
    and its exact symmetries are the rebalancings of one layer against the next (the ReLU neuron
    or Q/K symmetries above), under which |theta|^2 and lambda_max change differently. So (a) is
    a normalisation, not an invariant, for the Nanda et al. transformer (not homogeneous at all,
    through the attention softmax); prefer the scaled-Hessian one.

* :func:`local_learning_coefficient`: the SGLD estimator of Lau, Furman, Wang, Murfet & Wei
  (2023), "Quantifying degeneracy in singular models via the learning coefficient":
  lambda_hat = n beta (E_w[L_n(w)] - L_n(w*)), beta = 1 / log n, the expectation over the
  localised tempered posterior exp(-n beta L_n(w) - gamma / 2 |w - w*|^2) sampled by SGLD
  (Welling & Teh 2011). Larger for sharper, less degenerate minima: d / 2 for a regular model in d
  parameters, less for singular ones (Watanabe 2009).

The measures are deterministic functions of their seed (torch's CPU generators): the same call
gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vjp

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params], torch.Tensor]
MatVec = Callable[[torch.Tensor], torch.Tensor]
# step_loss_fn(params, chain, step): the loss whose gradient drives SGLD step ``step`` of chain
# ``chain`` (a mini-batch loss, or None for the full loss_fn)
StepLossFn = Callable[[Params, int, int], torch.Tensor]


# -- parameters and losses -------------------------------------------------------------------------


def model_params(model: nn.Module, dtype: torch.dtype | None = None) -> Params:
    """Detached copies of ``model``'s parameters (name -> tensor), cast to ``dtype`` if given
    (float64 for exact-arithmetic checks; the model's own float32 for speed)."""
    return {name: p.detach().to(dtype or p.dtype).clone() for name, p in model.named_parameters()}


def training_loss(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> LossFn:
    """``params -> L(params)``: the mean cross-entropy of ``model`` run with ``params`` on
    ``tokens`` against ``labels``, the log-softmax taken in float64 over all output logits (as
    Nanda et al. 2023 and training compute it). Plain torch ops, so torch.func can differentiate
    it twice."""

    def loss_fn(params: Params) -> torch.Tensor:
        logits = functional_call(model, params, (tokens,))
        return F.cross_entropy(logits.to(torch.float64), labels)

    return loss_fn


def minibatch_loss(
    model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0
) -> StepLossFn:
    """A ``step_loss_fn`` for :func:`local_learning_coefficient`: the loss of
    :func:`training_loss` on ``batch_size`` examples drawn without replacement, a fixed function
    of (seed, chain, step), so the chains are reproducible."""

    def step_loss(params: Params, chain: int, step: int) -> torch.Tensor:
        rng = np.random.default_rng((seed, chain, step))
        idx = torch.as_tensor(rng.choice(len(labels), size=batch_size, replace=False))
        logits = functional_call(model, params, (tokens[idx],))
        return F.cross_entropy(logits.to(torch.float64), labels[idx])

    return step_loss


def flatten(params: Params) -> torch.Tensor:
    """All parameters as one vector, in the dict's order."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """The vector ``vec`` cut into tensors shaped as the values of ``like``."""
    sizes = [p.numel() for p in like.values()]
    parts = vec.split(sizes)
    return {name: part.view(p.shape) for (name, p), part in zip(like.items(), parts, strict=True)}


def _n_params(params: Params) -> int:
    return sum(p.numel() for p in params.values())


def _dtype(params: Params) -> torch.dtype:
    return next(iter(params.values())).dtype


# -- Hessian-vector products -----------------------------------------------------------------------


def hvp_fn(loss_fn: LossFn, params: Params) -> MatVec:
    """``v -> H v`` for the Hessian H of ``loss_fn`` at ``params``, on flat vectors (the order
    of :func:`flatten`, any float dtype; the product is returned in float64).

    Reverse over reverse (Pearlmutter 1994): the gradient's graph is built once here
    (torch.func.vjp of torch.func.grad) and each product is one backward pass through it, which
    saves the forward and backward pass that a fresh jvp-of-grad would redo for every vector.
    The products are as exact as the dtype of ``params``."""
    _, pullback = vjp(grad(loss_fn), params)
    dtype = _dtype(params)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        (out,) = pullback(unflatten(v.to(dtype), params))
        return flatten(out).to(torch.float64)

    return hvp


def _scaled(matvec: MatVec, d: torch.Tensor) -> MatVec:
    """``v -> d * A (d * v)``: the operator diag(d) A diag(d)."""
    return lambda v: d * matvec(d * v)


# -- eigenvalues -----------------------------------------------------------------------------------


def _random_unit(dim: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(dim, generator=gen, dtype=torch.float64)
    return q / q.norm()


def lanczos(
    matvec: MatVec, dim: int, k: int = 3, iters: int = 100, seed: int = 0, tol: float = 1e-5
) -> np.ndarray:
    """The ``k`` largest (algebraic) eigenvalues of the symmetric operator ``matvec`` on R^dim,
    by Lanczos with full reorthogonalisation, in descending order.

    Stops when each of the top k Ritz pairs has residual |A y - theta y| = |beta_m s_m| at most
    ``tol`` times max(|theta|, |theta_1|) (for a symmetric A the eigenvalue error is at most the
    residual, and typically its square over the gap), after ``iters`` products, or when the
    Krylov space fills R^dim. A breakdown (an invariant subspace) restarts from a fresh random
    vector orthogonal to the basis, so repeated eigenvalues are found with their multiplicity.
    The start vector is Gaussian from ``seed``: same seed, same numbers.

    Why not ``scipy.sparse.linalg.eigsh`` (ARPACK) on a ``LinearOperator``: it agrees (tested)
    but spends about three times the products here, since its implicitly restarted Lanczos
    keeps at least 20 vectors and checks convergence only at restarts (top 3 of a planted
    3,000-dimensional spectrum at tolerance 1e-3: 21 products against 7), and a product is a
    Hessian-vector product, the cost of this whole measure."""
    if k < 1 or k > dim:
        raise ValueError(f"k must be in [1, {dim}], got {k}")
    m_max = min(iters, dim)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.empty(m_max, dim, dtype=torch.float64)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples basis vectors j and j + 1
    q = _random_unit(dim, gen)
    for j in range(m_max):
        basis[j] = q
        w = matvec(q)
        block = basis[: j + 1]
        coef = block @ w
        alphas.append(float(coef[j]))
        w = w - block.T @ coef
        w = w - block.T @ (block @ w)  # twice is enough (Kahan, Parlett)
        beta = float(w.norm())
        theta, s = np.linalg.eigh(_tridiagonal(alphas, betas))
        top = theta[::-1][:k]
        scale = max(float(np.max(np.abs(theta))), np.finfo(float).tiny)
        broke = beta <= 1e-12 * scale
        if j + 1 == m_max:
            break
        if j + 1 >= k and not broke:
            resid = np.abs(beta * s[-1, ::-1][:k])
            if np.all(resid <= tol * np.maximum(np.abs(top), abs(top[0]))):
                break
        if broke:  # invariant subspace: continue from a new direction
            q = _random_unit(dim, gen)
            for _ in range(2):
                q = q - block.T @ (block @ q)
            q = q / q.norm()
            betas.append(0.0)
        else:
            q = w / beta
            betas.append(beta)
    return np.sort(np.linalg.eigvalsh(_tridiagonal(alphas, betas)))[::-1][:k].copy()


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    m = len(alphas)
    off = np.asarray(betas[: m - 1], dtype=np.float64)
    return np.diag(np.asarray(alphas)) + np.diag(off, 1) + np.diag(off, -1)


def top_hessian_eigenvalues(
    loss_fn: LossFn,
    params: Params,
    k: int = 3,
    iters: int = 100,
    seed: int = 0,
    tol: float = 1e-5,
) -> np.ndarray:
    """The ``k`` largest (algebraic) eigenvalues of the Hessian of ``loss_fn`` at ``params``,
    descending: :func:`lanczos` on :func:`hvp_fn` (see there for ``iters``, ``seed``, ``tol``).
    The top eigenvalue is the "sharpness" of Cohen, Kaur, Li, Kolter & Talwalkar (2021, edge of
    stability)."""
    return lanczos(hvp_fn(loss_fn, params), _n_params(params), k, iters, seed, tol)


def power_iteration(
    matvec: MatVec, dim: int, iters: int = 1000, seed: int = 0, tol: float = 1e-10
) -> float:
    """The eigenvalue of largest magnitude of the symmetric operator ``matvec`` (its Rayleigh
    quotient after repeated multiplication), stopping when it changes by at most ``tol``
    relative. Slow where the top two magnitudes are close; kept as a check on :func:`lanczos`."""
    gen = torch.Generator().manual_seed(seed)
    q = _random_unit(dim, gen)
    theta = math.nan
    for _ in range(iters):
        w = matvec(q)
        new = float(q @ w)
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0
        q = w / norm
        if abs(new - theta) <= tol * abs(new):
            return new
        theta = new
    return theta


# -- trace -----------------------------------------------------------------------------------------


def hutchinson(matvec: MatVec, dim: int, n_samples: int = 50, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr A from ``n_samples`` Rademacher probes z (entries +-1):
    (mean of z^T A z, its standard error std / sqrt(n_samples)). Unbiased; the variance of one
    probe is 2 sum_{i != j} A_ij^2 (Hutchinson 1990; Avron & Toledo 2011)."""
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 for a standard error")
    gen = torch.Generator().manual_seed(seed)
    values = np.empty(n_samples)
    for i in range(n_samples):
        z = torch.randint(0, 2, (dim,), generator=gen, dtype=torch.float64) * 2 - 1
        values[i] = float(z @ matvec(z))
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n_samples))


def hessian_trace(
    loss_fn: LossFn, params: Params, n_samples: int = 50, seed: int = 0
) -> tuple[float, float]:
    """(Hutchinson estimate of the trace of the Hessian of ``loss_fn`` at ``params``, its
    standard error): :func:`hutchinson` on :func:`hvp_fn`. The trace is the sum of all
    curvatures, the "flatness" of the basin in every direction at once."""
    return hutchinson(hvp_fn(loss_fn, params), _n_params(params), n_samples, seed)


# -- scale-aware sharpness -------------------------------------------------------------------------


def scaled_hessian_sharpness(
    loss_fn: LossFn,
    params: Params,
    eta: float = 0.0,
    iters: int = 100,
    seed: int = 0,
    tol: float = 1e-5,
) -> float:
    """lambda_max(D H D), D = diag(|theta| + eta): the top Hessian eigenvalue in the elementwise
    relative coordinates theta = (|theta| + eta) * u (ours: the curvature coefficient, at a
    minimum, of the adaptive sharpness of Kwon et al. 2021 and Andriushchenko et al. 2023; the
    definition and its invariance in the module docstring). Lanczos on v -> D H (D v)."""
    d = flatten(params).detach().to(torch.float64).abs() + eta
    op = _scaled(hvp_fn(loss_fn, params), d)
    return float(lanczos(op, d.numel(), 1, iters, seed, tol)[0])


def norm_scaled_sharpness(top_eigenvalue: float, params: Params) -> float:
    """lambda_max(H) |theta|^2: the top eigenvalue for perturbations measured relative to the
    whole weight norm (invariant under global rescaling only for a scale-invariant loss; see the
    module docstring)."""
    sq = sum(float(p.detach().to(torch.float64).square().sum()) for p in params.values())
    return float(top_eigenvalue) * sq


# -- local learning coefficient --------------------------------------------------------------------


def _chain_generator(seed: int, chain: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, chain]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def local_learning_coefficient(
    loss_fn: LossFn,
    params: Params,
    n: int,
    *,
    step_loss_fn: StepLossFn | None = None,
    epsilon: float = 1e-4,
    gamma: float = 100.0,
    nbeta: float | None = None,
    num_chains: int = 4,
    num_steps: int = 200,
    num_burnin: int = 50,
    seed: int = 0,
    keep_last: bool = False,
) -> dict:
    """The SGLD estimate of the local learning coefficient at w* = ``params`` (Lau et al. 2023),
    at the given settings (:func:`calibrated_llc` chooses them from the checkpoint and says
    whether the estimate is in its regime).

    lambda_hat = n beta (E_w[L_n(w)] - L_n(w*)), beta = 1 / log n (``nbeta`` overrides n beta),
    the expectation over the localised tempered posterior
    p(w) ~ exp(-n beta L_n(w) - gamma / 2 |w - w*|^2), sampled by ``num_chains`` SGLD chains
    started at w*, each step
    w <- w - epsilon / 2 (n beta grad L(w) + gamma (w - w*)) + N(0, epsilon I),
    where L is ``step_loss_fn(w, chain, step)`` (a mini-batch loss) or ``loss_fn`` (full batch).
    E_w[L_n] is the mean of that same loss at the visited points after ``num_burnin`` steps, as
    Lau et al. do (with a mini-batch loss it is an unbiased but noisier estimate of L_n).

    Hyperparameters matter (Lau et al.: keep them fixed when comparing checkpoints): the chain is
    stable only for epsilon < 4 / (n beta lambda_max(H) + gamma), and gamma must be small against
    n beta times the curvatures for the localisation not to bias the estimate downwards.

    Returns a dict: ``llc`` (mean over chains), ``llc_se`` (their standard error; nan for one
    chain), ``llc_per_chain``, ``loss_trace`` (chains x steps, the loss at each visited point,
    burn-in included), ``init_loss`` L_n(w*), ``nbeta``, ``epsilon``, ``gamma``, ``diverged``
    (a chain met a non-finite loss; its estimate and so ``llc`` are then nan); with
    ``keep_last`` also ``last``, the last chain's final point."""
    if n < 2:
        raise ValueError("n must be at least 2 (beta = 1 / log n)")
    if not 0 <= num_burnin < num_steps:
        raise ValueError("need 0 <= num_burnin < num_steps")
    nb = float(n / math.log(n) if nbeta is None else nbeta)
    center = {k: v.detach().clone() for k, v in params.items()}
    with torch.no_grad():
        init_loss = float(loss_fn(center))

    def full_loss(w: Params, chain: int, step: int) -> torch.Tensor:
        return loss_fn(w)

    step_loss = step_loss_fn or full_loss
    trace = np.full((num_chains, num_steps), np.nan)
    sd = math.sqrt(epsilon)
    for c in range(num_chains):
        gen = _chain_generator(seed, c)
        # plain autograd on leaf copies: for small models torch.func.grad's per-call overhead
        # (~0.3 ms) would dominate a step
        w = {k: v.clone().requires_grad_(True) for k, v in center.items()}
        for t in range(num_steps):
            value = step_loss(w, c, t)
            trace[c, t] = float(value.detach())
            if not math.isfinite(trace[c, t]):
                break
            grads = torch.autograd.grad(value, list(w.values()), allow_unused=True)
            with torch.no_grad():
                for (name, p), g in zip(w.items(), grads, strict=True):
                    drift = gamma * (p - center[name])
                    if g is not None:
                        drift.add_(g, alpha=nb)
                    noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                    p.add_(drift, alpha=-epsilon / 2).add_(noise, alpha=sd)
    last = {k: v.detach().clone() for k, v in w.items()} if keep_last else None
    per_chain = nb * (trace[:, num_burnin:].mean(axis=1) - init_loss)
    se = per_chain.std(ddof=1) / math.sqrt(num_chains) if num_chains > 1 else math.nan
    return {
        "llc": float(per_chain.mean()),
        "llc_se": float(se),
        "llc_per_chain": per_chain,
        "loss_trace": trace,
        "init_loss": init_loss,
        "nbeta": nb,
        "epsilon": epsilon,
        "gamma": gamma,
        "diverged": bool(not np.all(np.isfinite(trace))),
        **({"last": last} if keep_last else {}),
    }


# the calibration of :func:`calibrated_llc`: each SGLD step contracts the stiffest direction by
# STEP_CONTRACTION / 2 (5 %); the localisation is LOCALISATION times the stiffest n beta lambda;
# the estimate must move less than GAMMA_TOLERANCE when the localisation is divided by 10, and
# the second half of every chain's kept samples may differ from the first by at most
# SETTLE_TOLERANCE of the estimate (or 3 standard errors of the difference)
STEP_CONTRACTION = 0.1
LOCALISATION = 1e-3
PILOT_ROUNDS, PILOT_STEPS = 12, 50
GAMMA_TOLERANCE = 0.1
SETTLE_TOLERANCE = 0.05


def _stiffness(loss_fn: LossFn, params: Params, nbeta: float, seed: int) -> float:
    """n beta times the largest Hessian eigenvalue at ``params`` (0 when the loss is flat or
    concave there)."""
    top = float(top_hessian_eigenvalues(loss_fn, params, k=1, tol=1e-2, seed=seed)[0])
    return nbeta * max(top, 0.0)


def _settled(result: dict, num_burnin: int, batches: int = 10) -> bool:
    """Whether the kept samples show no drift: the mean loss of the second half of the chains'
    kept steps against the first half, within :data:`SETTLE_TOLERANCE` of the estimate or 3
    standard errors of the difference. The standard error comes from batch means (``batches``
    per chain, pooled over chains), which account for the autocorrelation of SGLD samples."""
    kept = result["nbeta"] * result["loss_trace"][:, num_burnin:]
    if not np.isfinite(kept).all():
        return False
    chains, length = kept.shape
    size = length // batches
    if size < 2:
        return False
    means = kept[:, : size * batches].reshape(chains, batches, size).mean(-1)
    var_batch = float(means.var(axis=1, ddof=1).mean())
    half = batches // 2
    drift = abs(float(means[:, half:].mean() - means[:, :half].mean()))
    se = math.sqrt(var_batch * (1 / half + 1 / (batches - half)) / chains)
    return bool(drift <= max(SETTLE_TOLERANCE * abs(result["llc"]), 3 * se))


def calibrated_llc(
    loss_fn: LossFn,
    params: Params,
    n: int,
    *,
    step_loss_fn: StepLossFn | None = None,
    nbeta: float | None = None,
    num_chains: int = 4,
    num_steps: int = 400,
    num_burnin: int = 100,
    seed: int = 0,
) -> dict:
    """The local learning coefficient with its SGLD settings chosen from the checkpoint, and a
    verdict on whether the estimate is in its regime (the calibration devinterp's guidance asks
    for: a step size the stiffest direction tolerates, a localisation small against the
    curvature, chains that have settled).

    On a regular quadratic minimum, n beta E[L] = (1/2) sum_i n beta h_i / (n beta h_i + gamma)
    exactly: d / 2 at any curvature only when gamma << n beta h_i; with a fixed gamma the
    estimate tracks curvature instead of degeneracy (0.1 ... 555 for a 1,000-dimensional
    quadratic of true coefficient 500 over curvatures 1e-4 ... 10, at the fixed settings of
    :func:`local_learning_coefficient`'s defaults). So: s = n beta lambda_max of the Hessian,
    the largest of its values at w* and along a pilot chain (:data:`PILOT_ROUNDS` rounds of
    :data:`PILOT_STEPS` steps at most, each at the step size the stiffness so far allows, until
    it grows by less than a quarter (a pilot that diverges multiplies s by 10 and tries again): a
    degenerate minimum is flat at w* but not in the posterior's typical set);
    epsilon = :data:`STEP_CONTRACTION` / (s + gamma) and gamma = :data:`LOCALISATION` s
    (directions with n beta h below about gamma are read as flat,
    which they are at this sample size up to that factor). The verdict ``reliable`` needs: no
    chain diverged, the chains settled (:func:`_settled`), and the estimate moved less than
    :data:`GAMMA_TOLERANCE` when gamma is divided by 10 (``llc_gamma_check``): a localisation
    that still matters shows there.

    Returns :func:`local_learning_coefficient`'s dict plus ``reliable``, ``settled``,
    ``gamma_stable``, ``llc_gamma_check`` and ``stiffness`` (s)."""
    nb = float(n / math.log(n) if nbeta is None else nbeta)
    center = {k: v.detach().clone() for k, v in params.items()}
    s = _stiffness(loss_fn, center, nb, seed)
    point = center
    for r in range(PILOT_ROUNDS):  # walk out to the typical set, re-reading the stiffness there
        pilot = local_learning_coefficient(
            loss_fn, point, n, step_loss_fn=step_loss_fn, nbeta=nb,
            epsilon=STEP_CONTRACTION / s if s > 0 else 1e-3 / nb, gamma=LOCALISATION * s,
            num_chains=1, num_steps=PILOT_STEPS, num_burnin=0, seed=seed + 1 + r, keep_last=True,
        )  # fmt: skip
        if pilot["diverged"]:  # the step was too long for where the chain went: shorten it
            s = 10 * s if s > 0 else 1.0
            continue
        point = pilot["last"]
        before, s = s, max(s, _stiffness(loss_fn, point, nb, seed))
        if r and s <= 1.25 * before:  # the stiffness has stopped growing: in the typical set
            break
    if s <= 0:
        raise ValueError("the loss is flat at and around the checkpoint: no curvature to calibrate")
    gamma = LOCALISATION * s
    eps = STEP_CONTRACTION / (s + gamma)
    kw = dict(step_loss_fn=step_loss_fn, nbeta=nb, epsilon=eps, num_chains=num_chains,
              num_steps=num_steps, num_burnin=num_burnin, seed=seed)  # fmt: skip
    out = local_learning_coefficient(loss_fn, center, n, gamma=gamma, **kw)
    check = local_learning_coefficient(loss_fn, center, n, gamma=gamma / 10, **kw)
    settled = not out["diverged"] and _settled(out, num_burnin)
    stable = (
        not check["diverged"]
        and math.isfinite(out["llc"])
        and abs(check["llc"] - out["llc"]) <= GAMMA_TOLERANCE * max(abs(out["llc"]), 1e-12)
    )
    out.update(
        stiffness=s,
        settled=settled,
        gamma_stable=bool(stable),
        llc_gamma_check=check["llc"],
        reliable=bool(settled and stable and not out["diverged"]),
    )
    return out


# -- one checkpoint --------------------------------------------------------------------------------


def checkpoint_curvature(
    model: nn.Module,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 3,
    trace_samples: int = 50,
    tol: float = 1e-3,
    llc_batch_size: int = 0,
    llc_kwargs: dict | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Every curvature measure of one checkpoint's training loss (:func:`training_loss` of
    ``model`` on ``tokens``, ``labels``) at the model's own dtype: ``hessian_top{i}`` (i = 1..k),
    ``hessian_trace`` and ``hessian_trace_se``, ``sharpness_norm_scaled``,
    ``sharpness_scaled_hessian``, ``llc`` and ``llc_se`` (:func:`calibrated_llc` with
    ``llc_kwargs`` (chains, steps, burn-in), on mini-batches of ``llc_batch_size`` examples, 0 =
    full batch; n = the number of training examples), ``llc_reliable`` (1.0 when the estimate
    is in its regime, 0.0 when not: read ``llc`` only where it is 1), ``llc_gamma`` and
    ``llc_epsilon`` (the settings the calibration chose).

    The three Hessian measures share one linearisation. ``tol`` 1e-3 (Lanczos residual relative
    to lambda_max) suffices for columns: a Ritz value's error is about the residual squared over
    the gap (on the nanda2023 model at initialisation, tol 1e-3 and 1e-5 give top-3 eigenvalues
    that agree to 1e-6 relative, for 31 instead of 37 HVPs)."""
    loss_fn = training_loss(model, tokens, labels)
    params = model_params(model)
    hvp, dim = hvp_fn(loss_fn, params), _n_params(params)  # one linearisation for all three
    top = lanczos(hvp, dim, k, seed=seed, tol=tol)
    out = {f"hessian_top{i + 1}": float(v) for i, v in enumerate(top)}
    out["hessian_trace"], out["hessian_trace_se"] = hutchinson(hvp, dim, trace_samples, seed)
    out["sharpness_norm_scaled"] = norm_scaled_sharpness(top[0], params)
    d = flatten(params).to(torch.float64).abs()
    out["sharpness_scaled_hessian"] = float(lanczos(_scaled(hvp, d), dim, 1, seed=seed, tol=tol)[0])
    step = minibatch_loss(model, tokens, labels, llc_batch_size, seed) if llc_batch_size else None
    llc = calibrated_llc(
        loss_fn, params, len(labels), step_loss_fn=step, seed=seed, **(llc_kwargs or {})
    )
    out["llc"], out["llc_se"] = llc["llc"], llc["llc_se"]
    out["llc_reliable"] = float(llc["reliable"])
    out["llc_gamma"], out["llc_epsilon"] = llc["gamma"], llc["epsilon"]
    return out
