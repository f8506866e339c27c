"""K seeds of one small config: batched in one process vs the same K runs one after another.

Both sides write ordinary run directories (train_run vs train_runs), so the times include
evaluation and checkpoints. Also prints whether the two sides'
metrics are bit-identical (the batched trainer computes the same function; where a batched matrix
product rounds differently from the single one, as for large full batches, the runs drift apart
slowly, as any two float32 implementations do) and the largest differences.

    nice -n 19 python benchmarks/bench_batched.py                      # default threads
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_batched.py --threads 1
    nice -n 19 python benchmarks/bench_batched.py --config tf23-full     # another config

On a CPU the gain comes from sharing the per-step overhead (Python, dispatch, optimizer calls)
among the seeds, so it is large for small per-seed work (mini-batches, small models) and small
when each seed's step is already dominated by arithmetic on tensors larger than the cache.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from grokscope.config import apply_overrides, preset
from grokscope.orchestrate.train import train_run, train_runs
from grokscope.store import rundir

MLP97 = ["task.p=97", "task.train_fraction=0.3", "model.kind=mlp", "model.d_embed=32"]
SCHEDULE = ["train.epochs=200", "train.eval_every=20", "train.checkpoint_every=100"]
CONFIGS = {
    # an MLP on p = 97 with Power et al.'s mini-batches of 512 (6 steps per epoch)
    "mlp97-mb512": MLP97 + ["model.d_mlp=128", "optim.batch_size=512"] + SCHEDULE,
    # the same with a narrower MLP and mini-batches of 128 (23 steps per epoch)
    "mlp97-mb128": MLP97 + ["model.d_mlp=64", "optim.batch_size=128"] + SCHEDULE,
    # the same MLP full batch (one step of 2,823 examples per epoch)
    "mlp97-full": MLP97
    + ["model.d_mlp=128", "train.epochs=600", "train.eval_every=20", "train.checkpoint_every=200"],
    # the test suite's tiny transformer (p = 23, d_model 32), full batch
    "tf23-full": [
        "task.p=23",
        "task.train_fraction=0.5",
        "model.d_model=32",
        "model.d_head=8",
        "model.d_mlp=64",
        "optim.lr=3e-3",
        "train.epochs=1000",
        "train.eval_every=20",
        "train.checkpoint_every=200",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8, help="number of seeds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--config", default="mlp97-mb128", choices=sorted(CONFIGS))
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = CONFIGS[args.config] + args.set

    def cfg(seed: int):
        return apply_overrides(preset("default"), overrides + [f"train.seed={seed}"])

    print(f"config {args.config}: {' '.join(overrides)}")
    print(f"K = {args.k} seeds, torch threads = {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        for s in range(args.k):
            train_run(cfg(s), root / f"seq-{s}", threads=args.threads)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_runs(
            [cfg(s) for s in range(args.k)],
            [root / f"bat-{s}" for s in range(args.k)],
            threads=args.threads,
        )
        batched = time.perf_counter() - t0
        loss_diff, acc_diff, identical = 0.0, 0.0, True
        for s in range(args.k):
            a, b = rundir.read_metrics(root / f"seq-{s}"), rundir.read_metrics(root / f"bat-{s}")
            for col in ("train_loss", "test_loss", "train_acc", "test_acc"):
                x, y = a[col].to_numpy(), b[col].to_numpy()
                identical &= bool(np.array_equal(x, y))
                if col.endswith("loss"):
                    loss_diff = max(loss_diff, float(np.max(np.abs(x - y) / np.abs(x))))
                else:
                    acc_diff = max(acc_diff, float(np.max(np.abs(x - y))))
    print(f"sequential: {sequential:8.2f} s  ({args.k} runs one after another)")
    print(f"batched:    {batched:8.2f} s  (one process, one batched computation)")
    print(f"throughput ratio: {sequential / batched:.2f}x")
    print(
        f"batched vs sequential metrics: bit-identical {identical}; largest relative loss "
        f"difference {loss_diff:.1e}, largest accuracy difference {acc_diff:.1e}"
    )


if __name__ == "__main__":
    main()
