"""Attention sparsity: the entropy of attention rows, one of the rival predictors of the best
depth that Murty, Sharma, Andreas & Manning (ACL 2023) test against tree-structuredness.

For every layer, head and query position of every sequence, the attention row over the keys the
query may see (itself and the positions before it) is a distribution; its Shannon entropy (nats)
is low when attention is sparse. Rows of the first position (one key, entropy 0 by construction)
are left out, and so are pad positions. Reported per layer and as the mean over all rows.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.models import HookedModule


@torch.no_grad()
def attention_entropy(
    model: HookedModule, sequences: list[np.ndarray], batch_size: int = 256
) -> dict[str, float | list[float]]:
    """Mean attention-row entropy (nats): ``mean`` over every layer, head and query row (position
    >= 1, pads excluded) of ``sequences``, and ``per_layer``. ``model`` is a causal language model
    with ``blocks.i.attn.hook_pattern`` hooks (batch, head, query, key)."""
    n_layers = len(model.blocks)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(n_layers)]
    sums = np.zeros(n_layers)
    count = 0
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        rows = [sequences[i] for i in order[start : start + batch_size]]
        width = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.int64)
        for j, r in enumerate(rows):
            tokens[j, : len(r)] = torch.as_tensor(r)
        lengths = torch.as_tensor([len(r) for r in rows])
        _, cache = model.run_with_cache(tokens.to(device), names)
        real = torch.arange(width)[None, :] < lengths[:, None]
        real[:, 0] = False  # one key: entropy 0 by construction
        real = real.to(device)
        for i, name in enumerate(names):
            pat = cache[name].double()
            ent = -(pat * torch.log(pat.clamp_min(1e-300))).sum(-1)  # (batch, head, query)
            sums[i] += float((ent * real[:, None, :]).sum()) / pat.shape[1]
        count += int(real.sum())
    per_layer = (sums / max(count, 1)).tolist()
    return {
        "mean": float(np.mean(per_layer)) if per_layer else float("nan"),
        "per_layer": per_layer,
    }
