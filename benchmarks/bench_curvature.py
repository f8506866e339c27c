"""Time of every curvature measure for one checkpoint of the Nanda et al. (2023) model.

The default transformer (1 layer, d_model 128, 4 heads of 32, d_mlp 512; 226,816 parameters) on
x + y mod 113 with 30 % of the pairs for training (3,830 examples), random-initialisation weights
(the cost does not depend on the weights, only the number of Lanczos steps does, a little),
float32, one thread. The issue's goal: all measures in at most 20 s here.

- top-3 Hessian eigenvalues: Lanczos, residual tolerance 1e-3 (as ``checkpoint_curvature``);
- Hessian trace: Hutchinson, 50 Rademacher probes;
- scaled-Hessian sharpness lambda_max(diag|theta| H diag|theta|): Lanczos, tolerance 1e-3;
- norm-scaled sharpness lambda_max |theta|^2 (free once the top eigenvalue is known);
- local learning coefficient: 2 SGLD chains of 100 steps (20 burn-in) on mini-batches of 512,
  epsilon 1e-4, gamma 100, n beta = n / log n (at random initialisation w* is no minimum, so
  the LLC value printed is meaningless: this times the sampler only).

The three Hessian measures share one linearisation (as ``checkpoint_curvature`` does); an HVP
costs about 0.14 s on one free core here and up to 0.3 s when the machine's other jobs compete.

Each line gives the measure's wall time and its number of Hessian-vector products (HVPs) or
gradients; the load average is printed because the machine's other jobs slow every measure alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_curvature.py
"""

from __future__ import annotations

import os
import time

import torch

from grokscope.config import ModelConfig
from grokscope.measures import curvature as cv
from grokscope.models import build_model
from grokscope.tasks import modular_task

TOL = 1e-3
TRACE_SAMPLES = 50
LLC = dict(num_chains=2, num_steps=200, num_burnin=50)  # the analysis's (CURVATURE_LLC)
LLC_BATCH = 512


def counted(matvec: cv.MatVec) -> tuple[cv.MatVec, list[int]]:
    """``matvec`` that counts its calls."""
    calls = [0]

    def f(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return matvec(v)

    return f, calls


def main() -> None:
    torch.set_num_threads(1)
    ds = modular_task("x+y", 113, 0.3, 0)
    model = build_model(ModelConfig(), ds.d_vocab, ds.n_ctx, seed=0)
    tokens = torch.as_tensor(ds.tokens[ds.train_idx])
    labels = torch.as_tensor(ds.labels[ds.train_idx])
    loss_fn = cv.training_loss(model, tokens, labels)
    params = cv.model_params(model)
    dim = sum(p.numel() for p in params.values())
    print(f"nanda2023 model: {dim:,} parameters, {len(labels):,} training examples, 1 thread")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    cv.hvp_fn(loss_fn, params)(torch.zeros(dim))  # torch.func's one-time set-up in a process
    setup = time.perf_counter() - t0
    rows = []

    t0 = time.perf_counter()
    hvp, calls = counted(cv.hvp_fn(loss_fn, params))  # shared, as checkpoint_curvature does
    rows.append(("linearise (shared by 3 below)", time.perf_counter() - t0, "1 grad", None))

    t0 = time.perf_counter()
    top = cv.lanczos(hvp, dim, k=3, tol=TOL)
    rows.append(("top-3 eigenvalues (Lanczos)", time.perf_counter() - t0, f"{calls[0]} HVPs", top))

    t0, calls[0] = time.perf_counter(), 0
    trace = cv.hutchinson(hvp, dim, TRACE_SAMPLES)
    rows.append(("Hutchinson trace", time.perf_counter() - t0, f"{calls[0]} HVPs", trace))

    t0, calls[0] = time.perf_counter(), 0
    d = cv.flatten(params).to(torch.float64).abs()
    adaptive = cv.lanczos(lambda v: d * hvp(d * v), dim, k=1, tol=TOL)[0]
    took = time.perf_counter() - t0
    rows.append(("scaled-Hessian sharpness", took, f"{calls[0]} HVPs", adaptive))

    t0 = time.perf_counter()
    scaled = cv.norm_scaled_sharpness(top[0], params)
    rows.append(("norm-scaled sharpness", time.perf_counter() - t0, "0 HVPs", scaled))

    t0 = time.perf_counter()
    step = cv.minibatch_loss(model, tokens, labels, LLC_BATCH)
    llc = cv.calibrated_llc(loss_fn, params, len(labels), step_loss_fn=step, **LLC)
    steps = 2 * LLC["num_chains"] * LLC["num_steps"]  # the estimate and its gamma / 10 check
    verdict = "reliable" if llc["reliable"] else "not reliable"
    value = (round(llc["llc"], 2), round(llc["llc_se"], 2), verdict)
    rows.append(("LLC (calibrated SGLD)", time.perf_counter() - t0, f"{steps}+ grads", value))

    for name, seconds, work, value in rows:
        print(f"{name:30s} {seconds:6.2f} s  {work:>10s}  {'' if value is None else value}")
    total = sum(r[1] for r in rows)
    print(f"{'total':30s} {total:6.2f} s")
    print(
        f"{'one-time torch.func set-up':30s} {setup:6.2f} s  (once per process; total with it:"
        f" {total + setup:.2f} s)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
