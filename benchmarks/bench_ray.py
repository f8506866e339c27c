"""A small sweep on a local 2-CPU Ray instance vs the local executor: times, and whether every
run's metrics are identical.

    pip install 'grokscope[ray]'
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_ray.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from grokscope.store import rundir
from grokscope.sweep.executor import run_sweep
from grokscope.sweep.spec import parse_sweep

SWEEP = {
    "name": "bench_ray",
    "preset": "default",
    "seeds": [0, 1, 2],
    "set": {
        "task.p": 31,
        "model.d_model": 64,
        "model.d_head": 16,
        "model.d_mlp": 256,
        "optim.lr": 3e-3,
        "train.epochs": 300,
        "train.eval_every": 10,
        "train.checkpoint_every": 100,
    },
    "grid": {"task.train_fraction": [0.3, 0.5], "optim.weight_decay": [0.5, 1.0]},
}


def metrics(root: Path) -> dict[str, object]:
    """Every run's metrics without the wall-clock column."""
    return {
        run.name: rundir.read_metrics(run).drop(columns=["wall_s"])
        for run in sorted((root / "runs").iterdir())
        if run.is_dir()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="parallel cells (Ray CPUs)")
    args = parser.parse_args()
    spec = parse_sweep(SWEEP)
    n_runs = len(spec.cells()) * len(spec.seeds)
    print(
        f"sweep: {len(spec.cells())} cells x {len(spec.seeds)} seeds = {n_runs} runs, "
        f"{args.workers} workers x 1 thread"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        run_sweep(spec, out / "local", "local", workers=args.workers, threads=1)
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_sweep(spec, out / "ray", "ray", workers=args.workers, threads=1)
        ray_s = time.perf_counter() - t0
        a, b = metrics(out / "local" / spec.name), metrics(out / "ray" / spec.name)
        same_runs = a.keys() == b.keys() and len(a) == n_runs
        identical = same_runs and all(a[k].equals(b[k]) for k in a)
        worst = 0.0
        if same_runs:
            for k in a:
                for col in ("train_loss", "test_loss"):
                    x, y = a[k][col].to_numpy(), b[k][col].to_numpy()
                    worst = max(worst, float(np.max(np.abs(x - y))))
    print(f"local executor: {local_s:7.1f} s")
    print(f"ray executor:   {ray_s:7.1f} s  (includes starting and stopping the Ray instance)")
    print(
        f"same run directories: {same_runs}; metrics identical: {identical} "
        f"(largest loss difference {worst:.1e})"
    )


if __name__ == "__main__":
    main()
