"""Wall time of the per-level measures of one tree-language checkpoint, with the exact references
computed once (as the analysis does) against recomputing them for the checkpoint.

The `levels_cpu` preset's grammar (L = 3, v = 32, m = 4, s = 2, two units with a boundary: 18
tokens) and model (4 layers, d_model 64, random weights: the cost does not depend on them),
2,000 test sequences, one torch thread. Per checkpoint: the model's log-probabilities, the
scores against every level's predictor (KL, plateaus, per-level losses), the per-position loss,
and the perturbation cascade on 200 sequences per level. Target: at most 10 s per checkpoint.
The grammar at L = 4, s = 3 (81 tokens a unit) shows how the exact references scale.

Run: python benchmarks/bench_levels.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from grokscope.config import preset, resolve
from grokscope.kinds import build_dataset
from grokscope.measures.levels import (
    perturbation_cascade,
    perturbed_pairs,
    score_levels,
    tree_logprobs,
)
from grokscope.models import build_model
from grokscope.tasks.tree_language import level_references


def measures(model, ds, tokens, refs, pairs) -> None:
    def logp_fn(toks: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return tree_logprobs(model, toks, torch.device("cpu"), ds.d_vocab)

    logp = logp_fn(tokens)
    score_levels(logp, tokens, refs, ds.info["layout"].need, ds.info["grammar"].levels)
    np.take_along_axis(logp, tokens[:, 1:, None], -1).mean(0)
    perturbation_cascade(logp_fn, ds, pairs)


def main() -> None:
    torch.set_num_threads(1)
    cfg = resolve(preset("levels_cpu"))
    t0 = time.perf_counter()
    ds = build_dataset(cfg.task)
    build_s = time.perf_counter() - t0
    split = ds.splits["test"]
    tokens = split.tokens.reshape(len(split), -1)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, 0).eval()

    t0 = time.perf_counter()
    refs = level_references(ds, tokens)
    refs_s = time.perf_counter() - t0
    pairs = {k: perturbed_pairs(ds, k, 200) for k in (1, 2, 3)}
    measures(model, ds, tokens, refs, pairs)  # warm-up; fills the cascade's exact responses

    t0 = time.perf_counter()
    measures(model, ds, tokens, refs, pairs)
    cached_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    fresh_pairs = {k: perturbed_pairs(ds, k, 200) for k in (1, 2, 3)}
    measures(model, ds, tokens, level_references(ds, tokens), fresh_pairs)
    fresh_s = time.perf_counter() - t0

    print(
        f"dataset (64k train, 2k test, 2k gen sequences of {tokens.shape[1]} tokens): "
        f"{build_s:.2f} s"
    )
    print(f"exact references, 4 levels x 2000 sequences: {refs_s:.2f} s (once per analysis)")
    print(
        f"per-level measures of one checkpoint, references cached: {cached_s:.2f} s (target 10 s)"
    )
    print(f"the same, references recomputed: {fresh_s:.2f} s  ratio {fresh_s / cached_s:.1f}x")

    big = resolve(preset("levels_cpu"))
    big.task.tree_levels, big.task.tree_branching, big.task.tree_units = 4, 3, 1
    big.task.n_train, big.task.n_test, big.task.n_gen = 100, 500, 1
    ds_big = build_dataset(big.task)
    sb = ds_big.splits["test"]
    t0 = time.perf_counter()
    level_references(ds_big, sb.tokens.reshape(len(sb), -1))
    print(
        f"exact references, L=4 s=3 (81 tokens), 5 levels x 500 sequences: "
        f"{time.perf_counter() - t0:.2f} s"
    )


if __name__ == "__main__":
    main()
