"""Speed of language-model training (the ``structural_cpu`` model: question formation, 4 post-LN
layers, d_model 128, 4 heads, d_ff 512, dropout 0.1, batch 32, AdamW), one process, one thread.

Printed side by side, timed in interleaved blocks so that a busy neighbour slows them alike
(the figure is the median block):

- ``one seed, module pass``: the step as it was before seeds stacked: the model's own forward
  (fused scaled-dot-product attention, ``F.dropout`` from the global generator) on one seed's
  batches;
- ``one seed, stacked pass``: the training core's step now, a batch of one
  (:meth:`grokscope.models.lm.LMTransformer.stacked_train_logits`, per-seed dropout);
- ``K seeds batched`` (K = 4, 8): the summed tokens/s of K seeds in one process, against K runs
  one after another (whose summed rate is the one-seed rate);
- the share of this core's fp32 matrix-product peak (measured here on 1024 x 1024 products)
  that a step reaches, from the step's multiply-adds counted by hand (matrix products and
  attention; elementwise work not counted);
- the time of one evaluation of one seed (1k test and 1k generalization lines, as the preset);
- padding: padded tokens per real token under the length schedule and for random batches.

Tokens are the real (non-pad) tokens trained on.

    OMP_NUM_THREADS=1 python benchmarks/bench_structural.py
"""

from __future__ import annotations

import statistics
import time
from functools import partial

import numpy as np
import torch
from torch.func import functional_call

from grokscope import config as config_mod
from grokscope.kinds import build_dataset
from grokscope.kinds.structural.data import StructuralData
from grokscope.train import core
from grokscope.train.lm_data import lm_losses, target_mask
from grokscope.train.lm_schedule import padding_share

STEPS_PER_BLOCK, BLOCKS = 10, 5


def matmul_peak() -> float:
    """fp32 GFLOP/s of 1024 x 1024 products on one thread (best of 5)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9)
    return best


def step_flops(cfg: config_mod.Config, vocab: int, tokens: int, width: float) -> float:
    """Floating-point operations of one training step (forward + backward = 3 x forward) on
    ``tokens`` real tokens of mean padded width ``width``: matrix products and attention."""
    m = cfg.model
    he = m.n_heads * m.d_head
    per_token = m.n_layers * (3 * m.d_model * he + he * m.d_model + 2 * m.d_model * m.d_mlp)
    per_token += m.d_model * vocab
    attention = m.n_layers * 2 * width * he  # scores and the weighted sum
    return 3 * 2 * tokens * (per_token + attention)


def main() -> None:
    torch.set_num_threads(1)
    peak = matmul_peak()
    base = config_mod.preset("structural_cpu")
    base.task.n_train, base.task.n_test, base.task.n_gen = 20000, 1000, 1000
    ds = build_dataset(config_mod.resolve(base).task)
    dev = torch.device("cpu")

    def batch(k: int):
        cfgs = [config_mod.resolve(config_mod.apply_overrides(
            config_mod.preset("structural_cpu"),
            ["task.n_train=20000", "task.n_test=1000", "task.n_gen=1000", f"train.seed={s}"],
        )) for s in range(k)]  # fmt: skip
        state = core.new_state(cfgs, [ds] * k, dev)
        state.total_steps = 20_000
        return cfgs, state, StructuralData.for_batch(cfgs, [ds] * k, dev)

    def stacked(cfgs, state, data) -> int:
        tokens = sum(
            int(data.train.lengths[data.batch_rows(state.step, s)].sum()) for s in range(state.k)
        )
        core.train_step(cfgs[0], state, partial(data.losses, cfgs, state, 0))
        state.step += 1
        return tokens

    def module_loss(state, data):
        rows = data.batch_rows(state.step)
        tokens, lengths = data.train.padded(rows, dev)
        params = {n: p.squeeze(0) for n, p in zip(state.names, state.params, strict=True)}
        torch.manual_seed(state.step)
        logits = functional_call(state.model, params, (tokens,))
        each, mask = lm_losses(logits, tokens, target_mask(lengths, None, tokens.shape[1]))
        return (each.sum() / mask.sum()).reshape(1)

    def module(cfgs, state, data) -> int:
        tokens = int(data.train.lengths[data.batch_rows(state.step)].sum())
        core.train_step(cfgs[0], state, partial(module_loss, state, data))
        state.step += 1
        return tokens

    runners = {
        "one seed, module pass": partial(module, *batch(1)),
        "one seed, stacked pass": partial(stacked, *batch(1)),
        "4 seeds batched": partial(stacked, *batch(4)),
        "8 seeds batched": partial(stacked, *batch(8)),
    }
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():  # warm-up
        for _ in range(2):
            fn()
    for _ in range(BLOCKS):
        for name, fn in runners.items():
            t0, tokens = time.perf_counter(), 0
            for _ in range(STEPS_PER_BLOCK):
                tokens += fn()
            rates[name].append(tokens / (time.perf_counter() - t0))
    cfgs, state, data = batch(1)
    lengths = data.train.lengths
    mean_tokens = float(np.mean([lengths[data.batch_rows(t)].sum() for t in range(200)]))
    mean_width = float(np.mean([data.schedule.width(t) for t in range(200)]))
    flops = step_flops(cfgs[0], ds.d_vocab, mean_tokens, mean_width)
    m = cfgs[0].model
    print(
        f"LM training, question formation, {m.n_layers} layers d_model {m.d_model}, batch "
        f"{cfgs[0].optim.batch_size}, 1 thread; median of {BLOCKS} interleaved blocks of "
        f"{STEPS_PER_BLOCK} steps; this core's fp32 matmul peak {peak:.0f} GFLOP/s"
    )
    one = statistics.median(rates["one seed, module pass"])
    print(f"  {'':28s} {'tokens/s':>9s}  {'vs module pass':>14s}  {'share of peak':>13s}")
    for name, r in rates.items():
        med = statistics.median(r)
        gflops = med / mean_tokens * flops / 1e9
        print(f"  {name:28s} {med:9.0f}  x{med / one:13.2f}  {gflops / peak:13.0%}")
    t0 = time.perf_counter()
    data.eval_rows(cfgs, state, 0.0)
    print(
        f"  one evaluation of one seed (1k training-slice, 1k test, 1k generalization lines): "
        f"{time.perf_counter() - t0:.2f} s"
    )
    rand = np.random.default_rng(0).permutation(len(lengths))
    bs = cfgs[0].optim.batch_size
    batches = [rand[i : i + bs] for i in range(0, len(rand), bs)]
    padded = sum(len(b) * int(lengths[b].max()) for b in batches) / int(lengths.sum())
    ours = 1 / (1 - padding_share(data.schedule, data.schedule.steps_per_round))
    print(f"  padded tokens per real token: length schedule {ours:.3f}, random {padded:.3f}")


if __name__ == "__main__":
    main()
