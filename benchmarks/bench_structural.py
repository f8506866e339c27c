"""Speed of structural-grokking runs: LM training tokens per second against a straightforward
padded implementation, and the tree-score time of a checkpoint.

Training (question formation, the ``structural_cpu`` model: 4 post-LN layers, d_model 128,
4 heads, d_ff 512, dropout 0.1, batch 32, AdamW), same sentences, one process, one thread:

- ``grokscope``: the training core's step (:func:`grokscope.train.core.sequence_step`):
  bucketed batches padded to their own longest line, fused attention;
- ``grokscope, random batches``: the same step on random batches (padding as the baseline has),
  which separates the two effects;
- ``padded baseline``: ``torch.nn.TransformerEncoder`` (post-LN, causal mask, key-padding mask),
  embedding + sinusoidal positions + linear read-out, random batches padded to the batch maximum,
  cross-entropy ignoring pads, AdamW.

Tokens are the real (non-pad) tokens trained on. The three are timed in interleaved blocks so
that a busy neighbour slows them alike; the figure is the median block.

Tree score: :func:`grokscope.measures.tree_projection.tree_projection` of a 6-layer d_model 256
(8 heads) language model on 200 question-formation sentences with their gold parses.

    OMP_NUM_THREADS=1 python benchmarks/bench_structural.py
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
from torch import nn

from grokscope import config as config_mod
from grokscope.kinds import build_dataset
from grokscope.measures.tree_projection import tree_projection
from grokscope.models import build_model
from grokscope.models.lm import sinusoidal_table
from grokscope.train import core
from grokscope.train.lm_data import pass_batches

STEPS_PER_BLOCK, BLOCKS = 25, 6


class PaddedBaseline(nn.Module):
    """The same model written the plain way with torch's encoder layers."""

    def __init__(self, d_vocab: int, n_ctx: int, cfg: config_mod.ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(d_vocab, cfg.d_model)
        self.register_buffer("pos", sinusoidal_table(n_ctx, cfg.d_model))
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.dropout, batch_first=True, norm_first=False
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.out = nn.Linear(cfg.d_model, d_vocab)
        self.scale = math.sqrt(cfg.d_model)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        x = self.embed(tokens) * self.scale + self.pos[:n]
        causal = nn.Transformer.generate_square_subsequent_mask(n)
        return self.out(self.encoder(x, mask=causal, src_key_padding_mask=pad, is_causal=True))


def random_batches(n: int, bs: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + bs] for i in range(0, n, bs)]


def data_times() -> None:
    """Build time of each sequence task at the published sizes (100k / 1k / 10k / 10k)."""
    for name, extra in (("question_formation", {}), ("tense_inflection", {}), ("dyck", {})):
        t = config_mod.TaskConfig(name=name, **extra)
        t0 = time.perf_counter()
        ds = build_dataset(t)
        lines = sum(len(s) for s in ds.splits.values())
        print(f"  {name:20s} {lines} lines in {time.perf_counter() - t0:.1f} s")


def main() -> None:
    torch.set_num_threads(1)
    print("data, published sizes:")
    data_times()
    cfg = config_mod.preset("structural_cpu")
    cfg.task.n_train, cfg.task.n_test, cfg.task.n_gen = 20000, 200, 200
    config_mod.resolve(cfg)
    ds = build_dataset(cfg.task)
    dev = torch.device("cpu")
    state = core.new_state([cfg], [ds], dev)
    data = core.make_data([cfg], [ds], dev)
    train = data.train
    bs = cfg.optim.batch_size
    rand = random_batches(len(train), bs, 0)

    state_r = core.new_state([cfg], [ds], dev)
    data_r = core.make_data([cfg], [ds], dev)
    data_r.batch_rows = lambda step: rand[step % len(rand)]  # same step, random batches

    base = PaddedBaseline(ds.d_vocab, ds.n_ctx, cfg.model)
    opt = torch.optim.AdamW(base.parameters(), lr=cfg.optim.lr, weight_decay=0.0, foreach=True)
    base_step = {"i": 0}

    def baseline_step() -> int:
        rows = rand[base_step["i"] % len(rand)]
        base_step["i"] += 1
        tokens, lengths = train.padded(rows, dev)
        pad = torch.arange(tokens.shape[1])[None, :] >= lengths[:, None]
        logits = base(tokens, pad)
        target = tokens[:, 1:].masked_fill(pad[:, 1:], -100)
        loss = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return int(lengths.sum())

    def ours(st, d) -> int:
        rows = d.batch_rows(st.step)
        core.sequence_step(cfg, st, d)
        return int(train.lengths[rows].sum())

    runners = {
        "grokscope": lambda: ours(state, data),
        "grokscope, random batches": lambda: ours(state_r, data_r),
        "padded baseline": baseline_step,
    }
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(BLOCKS):
        for name, fn in runners.items():
            t0, tokens = time.perf_counter(), 0
            for _ in range(STEPS_PER_BLOCK):
                tokens += fn()
            rates[name].append(tokens / (time.perf_counter() - t0))
    print(f"LM training, {cfg.model.n_layers} layers d_model {cfg.model.d_model}, batch {bs}, "
          f"1 thread, median of {BLOCKS} blocks of {STEPS_PER_BLOCK} steps")  # fmt: skip
    ref = statistics.median(rates["padded baseline"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:28s} {med:9.0f} tokens/s   x{med / ref:.2f} vs padded baseline")
    bucketed = pass_batches(train.lengths, bs, cfg.train.seed, 0)
    pad_ours = sum(len(b) * int(train.lengths[b].max()) for b in bucketed)
    real = int(train.lengths.sum())
    pad_rand = sum(len(b) * int(train.lengths[b].max()) for b in rand)
    print(f"  padded tokens per real token: bucketed {pad_ours / real:.3f}, "
          f"random {pad_rand / real:.3f}")  # fmt: skip

    big = config_mod.preset("structural_cpu")
    big.model.n_layers, big.model.d_model, big.model.n_heads, big.model.d_head = 6, 256, 8, 32
    model = build_model(big.model, ds.d_vocab, ds.n_ctx, 0).eval()
    test = ds.splits["test"]
    sentences = [test.sequence(i)[: int(test.sentence_len[i])] for i in range(200)]
    gold = [test.trees[i] for i in range(200)]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = tree_projection(model.final_states, sentences, gold)
        times.append(time.perf_counter() - t0)
    words = sum(len(s) for s in sentences)
    print(
        f"tree projection, 6 layers d_model 256, 200 sentences ({words} words), 1 thread: "
        f"median {statistics.median(times):.2f} s (goal <= 30 s); tree score "
        f"{out['tree_score']:.3f}, bracketing F1 {out['f1']:.3f} (random weights)"
    )


if __name__ == "__main__":
    main()
