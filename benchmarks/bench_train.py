"""Training speed of the nanda2023 model: grokscope's training pass against a straightforward one.

The straightforward implementation is written here the way the reference code of Nanda et al.
(2023) computes the network: every position through attention and MLP, einsum attention, the
unembedding at every position, then the last position's logits. Both start from the same weights,
use AdamW (lr 1e-3, wd 1, betas 0.9/0.98, 10-step linear warmup), full batch and float64
cross-entropy, and are trained in alternating blocks in one process so that machine noise hits
both alike.

Prints ms per epoch for both, their ratio, achieved GFLOP/s of grokscope's pass against a
measured matmul peak, and the largest relative difference of the two training loss curves. In
float32 the memorization phase amplifies rounding differences (the straightforward pass run on a
permuted batch, identical maths, drifts from itself by as much), so the curves are also compared
in float64, where they must agree to far below 1e-4.

    python benchmarks/bench_train.py [--epochs 200] [--threads 0]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from grokscope.config import preset, resolve
from grokscope.kinds import build_dataset
from grokscope.train.core import make_optimizer, new_state, train_step
from grokscope.train.examples import ExampleData


def straightforward_logits(w: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """All positions, einsum attention with a causal mask, unembed everywhere, take the last."""
    d_head = w["blocks.0.attn.W_Q"].shape[-1]
    x = w["embed.W_E"][tokens] + w["pos_embed.W_pos"][: tokens.shape[1]]
    q = torch.einsum("hde,bpd->bhpe", w["blocks.0.attn.W_Q"], x)
    k = torch.einsum("hde,bpd->bhpe", w["blocks.0.attn.W_K"], x)
    v = torch.einsum("hde,bpd->bhpe", w["blocks.0.attn.W_V"], x)
    scores = torch.einsum("bhqe,bhke->bhqk", q, k)
    n = tokens.shape[1]
    mask = torch.tril(torch.ones(n, n))
    scores = torch.tril(scores) - 1e10 * (1 - mask)
    pattern = F.softmax(scores / math.sqrt(d_head), dim=-1)
    z = torch.einsum("bhqk,bhke->bhqe", pattern, v)
    x = x + torch.einsum("bhqe,hed->bqd", z, w["blocks.0.attn.W_O"])
    pre = torch.einsum("dm,bpd->bpm", w["blocks.0.mlp.W_in"], x) + w["blocks.0.mlp.b_in"]
    post = F.relu(pre)
    x = x + torch.einsum("md,bpm->bpd", w["blocks.0.mlp.W_out"], post) + w["blocks.0.mlp.b_out"]
    logits = torch.einsum("bpd,dv->bpv", x, w["unembed.W_U"])
    return logits[:, -1]


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def fast_pass_flops(cfg, n_examples: int, d_vocab: int) -> float:
    """Multiply-adds x 2 of grokscope's pass per epoch: forward plus backward (~2x forward)."""
    m = cfg.model
    he = m.n_heads * m.d_head
    tables = (
        3 * d_vocab * m.d_model * 2 * he  # K and V tables for every position
        + d_vocab * m.d_model * he  # query table
        + d_vocab * 3 * d_vocab * he  # score table
    )
    per_example = (
        3 * he  # weighted values
        + he * m.d_model  # W_O
        + 2 * m.d_model * m.d_mlp  # W_in, W_out
        + m.d_model * d_vocab  # W_U
    )
    return 3 * 2 * (tables + n_examples * per_example)


def train_pair(epochs: int, block: int, dtype: torch.dtype, permute_reference: bool = False):
    """Train grokscope's pass and the straightforward one from the same weights, alternating
    blocks of epochs; returns (loss curves, seconds) per implementation."""
    cfg = resolve(preset("nanda2023"))
    ds = build_dataset(cfg.task)
    cpu = torch.device("cpu")
    data = ExampleData.for_batch([cfg], [ds], cpu)
    fast = new_state([cfg], [ds], cpu)  # one run: a batch of one, stacked weights (1, ...)
    fast.params = [p.detach().to(dtype).requires_grad_() for p in fast.params]
    fast.optimizer = make_optimizer(cfg.optim, fast.params)
    ref_w = {
        n: p.detach()[0].clone().requires_grad_(True)
        for n, p in zip(fast.names, fast.params, strict=True)
    }
    ref_opt = torch.optim.AdamW(
        ref_w.values(), lr=0.0, betas=(0.9, 0.98), weight_decay=1.0, foreach=True
    )
    ref_x, ref_y = data.train_x[0], data.train_y[0]
    if permute_reference:  # same maths, another summation order
        perm = torch.randperm(len(ref_x), generator=torch.Generator().manual_seed(0))
        ref_x, ref_y = ref_x[perm], ref_y[perm]
    ref_step = 0

    def ref_epoch() -> float:
        nonlocal ref_step
        for g in ref_opt.param_groups:
            g["lr"] = 1e-3 * min(ref_step / 10, 1.0)
        loss = F.cross_entropy(straightforward_logits(ref_w, ref_x).double(), ref_y)
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()
        ref_step += 1
        return float(loss.detach())

    def fast_epoch() -> float:
        return train_step(cfg, fast, lambda: data.losses([cfg], fast, 0))[0]

    losses: dict[str, list[float]] = {"grokscope": [], "straightforward": []}
    seconds = {"grokscope": 0.0, "straightforward": 0.0}
    done = 0
    while done < epochs:
        n = min(block, epochs - done)
        for name, fn in (("straightforward", ref_epoch), ("grokscope", fast_epoch)):
            t = time.perf_counter()
            for _ in range(n):
                losses[name].append(fn())
            seconds[name] += time.perf_counter() - t
        done += n
    return losses, seconds, cfg, ds


def max_rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--block", type=int, default=25, help="epochs per alternating block")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)

    losses, seconds, cfg, ds = train_pair(args.epochs, args.block, torch.float32)
    ms = {k: 1e3 * v / args.epochs for k, v in seconds.items()}
    peak = matmul_peak_gflops()
    n_train = len(ds.train_idx)
    gflops = fast_pass_flops(cfg, n_train, ds.d_vocab) / (ms["grokscope"] / 1e3) / 1e9
    print(
        f"threads: {torch.get_num_threads()}  epochs: {args.epochs} (full batch, {n_train} pairs)"
    )
    print(f"straightforward: {ms['straightforward']:8.1f} ms/epoch")
    print(f"grokscope:       {ms['grokscope']:8.1f} ms/epoch")
    print(f"speed-up:        {ms['straightforward'] / ms['grokscope']:8.2f} x")
    print(
        f"throughput:      {gflops:.1f} GFLOP/s achieved, matmul peak {peak:.1f} GFLOP/s "
        f"({100 * gflops / peak:.0f} %)"
    )
    print(f"25k epochs at this rate: {25000 * ms['grokscope'] / 60e3:.1f} min of training steps")

    f32 = max_rel(losses["grokscope"], losses["straightforward"])
    first50 = max_rel(losses["grokscope"][:50], losses["straightforward"][:50])
    noise, _, _, _ = train_pair(args.epochs, args.epochs, torch.float32, permute_reference=True)
    floor = max_rel(noise["straightforward"], losses["straightforward"])
    f64, _, _, _ = train_pair(args.epochs, args.epochs, torch.float64)
    print(
        f"loss curves, float32: max relative difference {f32:.2e} over {args.epochs} epochs "
        f"({first50:.2e} over the first 50)"
    )
    print(
        f"  noise floor: the straightforward pass against itself on a permuted batch (same "
        f"maths, another summation order): {floor:.2e}"
    )
    print(
        f"loss curves, float64: max relative difference "
        f"{max_rel(f64['grokscope'], f64['straightforward']):.2e} over {args.epochs} epochs"
    )


if __name__ == "__main__":
    main()
