"""Wall time of ``analyze_run`` on a nanda2023-sized run (p = 113, 250 checkpoints).

Usage:
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_analyze.py            # fake run
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_analyze.py --run runs/nanda2023

Without ``--run`` it writes a throw-away run directory with the nanda2023 config and 250
checkpoints (epochs 100, 200, ..., 25000) of a randomly initialised model, each perturbed a
little so that no two are equal, and analyses all of them. With ``--run`` it analyses the
given run's checkpoints (``--every`` as on the command line). Prints which columns were
computed (and which were left null), the figures written, the wall time and the time per
analysed checkpoint. The target: at most 40 s for the 257 checkpoints of a nanda2023 run, on
one thread, figures included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from grokscope import config as config_mod
from grokscope.kinds import build_dataset
from grokscope.models import build_model
from grokscope.orchestrate.analyze import analyze_run
from grokscope.store import rundir


def fake_run(folder: Path, n_checkpoints: int = 250, every: int = 100) -> Path:
    """A nanda2023 run directory with ``n_checkpoints`` perturbed random-init checkpoints."""
    cfg = config_mod.resolve(config_mod.preset("nanda2023"))
    run = folder / "fake_nanda2023"
    run.mkdir(parents=True)
    rundir.write_config(run, cfg)
    ds = build_dataset(cfg.task)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, cfg.train.seed)
    gen = torch.Generator().manual_seed(1)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i in range(1, n_checkpoints + 1):
        weights = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        rundir.save_checkpoint(run, i * every, weights, {}, {"epoch": i * every})
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="analyse this run instead")
    parser.add_argument("--every", type=int, default=1, help="analyse every k-th checkpoint")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or fake_run(Path(tmp))
        t0 = time.perf_counter()
        summary = analyze_run(run, every=args.every, figures=not args.no_figures)
        wall = time.perf_counter() - t0
        table = pd.read_parquet(run / "analysis.parquet")
    n = summary["checkpoints_analysed"]
    measured = [c for c in table.columns if c != "epoch" and table[c].notna().any()]
    empty = [c for c in table.columns if c != "epoch" and not table[c].notna().any()]
    print(f"run: {'fake nanda2023 (random init)' if args.run is None else args.run}")
    print(f"checkpoints analysed: {n}  (p = {summary['p']}, figures: {not args.no_figures})")
    print(f"columns computed at every checkpoint ({len(measured)}): {', '.join(measured)}")
    print(f"columns left null ({len(empty)}): {', '.join(empty) or '-'}")
    print(f"figures written: {len(summary['figures'])}")
    print(f"wall time: {wall:.1f} s   per checkpoint: {1000 * wall / n:.0f} ms")


if __name__ == "__main__":
    main()
