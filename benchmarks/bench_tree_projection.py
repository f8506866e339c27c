"""Wall time of a tree projection (Murty et al., ICLR 2023) of a random causal transformer.

6 layers, d_model 256, 8 heads, d_ff 1024, pre-LN, learned positions indexed by the position ids,
float32, torch.nn.functional.scaled_dot_product_attention with is_causal=True; 200 random
sentences of 8..20 words; one torch thread. Target: at most 30 s on a 2-core machine.

Run: python benchmarks/bench_tree_projection.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from grokscope.measures.tree_projection import tree_projection

N_SENTENCES, MIN_WORDS, MAX_WORDS = 200, 8, 20
D_MODEL, N_HEADS, N_LAYERS, D_FF, VOCAB, MAX_POS = 256, 8, 6, 1024, 100, 64


class CausalEncoder(torch.nn.Module):
    """A random pre-LN causal transformer returning its last-layer states."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, D_MODEL)
        self.pos = torch.nn.Embedding(MAX_POS, D_MODEL)
        self.ln1 = torch.nn.ModuleList(torch.nn.LayerNorm(D_MODEL) for _ in range(N_LAYERS))
        self.ln2 = torch.nn.ModuleList(torch.nn.LayerNorm(D_MODEL) for _ in range(N_LAYERS))
        self.qkv = torch.nn.ModuleList(
            torch.nn.Linear(D_MODEL, 3 * D_MODEL) for _ in range(N_LAYERS)
        )
        self.out = torch.nn.ModuleList(torch.nn.Linear(D_MODEL, D_MODEL) for _ in range(N_LAYERS))
        self.mlp = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(D_MODEL, D_FF), torch.nn.GELU(), torch.nn.Linear(D_FF, D_MODEL)
            )
            for _ in range(N_LAYERS)
        )
        self.ln_final = torch.nn.LayerNorm(D_MODEL)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens) + self.pos(positions)
        B, T, d = x.shape
        for l in range(N_LAYERS):
            q, k, v = (
                self.qkv[l](self.ln1[l](x)).view(B, T, 3, N_HEADS, -1).transpose(1, 3).unbind(2)
            )
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out[l](z.transpose(1, 2).reshape(B, T, d))
            x = x + self.mlp[l](self.ln2[l](x))
        return self.ln_final(x)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = CausalEncoder().eval()
    rng = np.random.default_rng(0)
    lengths = rng.integers(MIN_WORDS, MAX_WORDS + 1, size=N_SENTENCES)
    sentences = [rng.integers(1, VOCAB, size=n) for n in lengths]
    tokens = int(sum(n * (n + 1) // 2 for n in lengths))
    start = time.perf_counter()
    res = tree_projection(model, sentences)
    wall = time.perf_counter() - start
    print(
        f"{N_SENTENCES} sentences of {MIN_WORDS}..{MAX_WORDS} words, {tokens} tokens in all runs: "
        f"tree_projection {wall:.2f} s (1 thread); mean tree score {res['tree_score']:.3f}"
    )


if __name__ == "__main__":
    main()
