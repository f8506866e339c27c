"""Whether a batch of seeds fits in memory, checked before anything is written.

An estimate, not a measurement: per seed, the parameters four times over (weights, gradients,
AdamW's two moments) plus one more copy for a gradient filter or the initial weights, and the
activations one training step keeps for its backward pass,

    rows x positions x (layers x (8 d_model + 3 d_mlp + 3 heads x positions) + 2 vocabulary)

float32 values (rows: the batch size, or the training set for full-batch steps; the terms are
the residual stream and its LayerNorm / attention / MLP inputs and outputs, the MLP hidden
layer before and after the non-linearity and its dropout mask, the attention scores, pattern
and mask, and the logits with their float64 softmax). It errs high by design: a refused batch
can be split into smaller ones, a batch that runs out of memory loses its work. The available
memory is the kernel's MemAvailable on Linux (free and reclaimable memory), the physical memory
elsewhere, and the free memory of the GPU for CUDA.
"""

from __future__ import annotations

import os

import torch

from grokscope.config import Config, ConfigError
from grokscope.models import build_model
from grokscope.tasks import Dataset

FLOAT = 4
PARAM_COPIES = 5


def seed_bytes(cfg: Config, ds: Dataset) -> int:
    """Estimated training memory of one seed of ``cfg`` on ``ds`` (module docstring)."""
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, 0)
    n_params = sum(p.numel() for p in model.parameters())
    m = cfg.model
    n = ds.n_ctx
    per_position = m.n_layers * (8 * m.d_model + 3 * m.d_mlp + 3 * m.n_heads * n) + 2 * ds.d_vocab
    rows = cfg.optim.batch_size if cfg.optim.batch_size > 0 else _train_rows(ds)
    return FLOAT * (PARAM_COPIES * n_params + rows * n * per_position)


def _train_rows(ds: Dataset) -> int:
    split = getattr(ds, "splits", None)
    if split is not None:
        return len(split["train"])
    return len(ds.train_idx)


def available_bytes(device: torch.device) -> int:
    """Memory a new batch can use on ``device`` (module docstring)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_batch_memory(cfgs: list[Config], ds: Dataset, device: torch.device) -> None:
    """ConfigError, in one line, when ``len(cfgs)`` seeds of ``cfgs[0]`` would not fit."""
    need = len(cfgs) * seed_bytes(cfgs[0], ds)
    have = available_bytes(device)
    if need > have:
        gib = 2**30
        raise ConfigError(
            f"{len(cfgs)} seeds trained together need about {need / gib:.1f} GiB and "
            f"{have / gib:.1f} GiB is available on {device.type}: train fewer seeds at once "
            f"(about {max(have // max(need // len(cfgs), 1), 1)} fit)"
        )
