"""The training loop: AdamW with linear warmup, full or mini batch, periodic evaluation.

Settings follow Nanda et al. (2023): AdamW (betas 0.9 / 0.98), weight decay 1.0 applied to every
parameter, learning rate lr * min(step / warmup_steps, 1) (so the very first update has
learning rate 0, as in their code), full-batch steps, cross-entropy in float64.

The loop knows nothing about files: it reports evaluations and checkpoint moments through
callbacks, and its whole state (model, optimizer, filter, counters) can be saved and restored
exactly, so that a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from grokscope.config import Config, OptimConfig
from grokscope.models import HookedModule, build_model
from grokscope.tasks import Dataset
from grokscope.train.interventions import (
    GradFilter,
    decay_toward,
    orthogonalize_gradients,
    project_to_norm,
)
from grokscope.train.losses import loss_function, per_example_loss, softmax_collapsed

# Examples per evaluation chunk (all seeds together when batched): the float64 logits of ~4k
# examples stay in the 4 MB L2 cache; larger chunks ran up to 2.5x slower per example (p = 97).
EVAL_ROWS = 4096


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, then Apple MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def set_determinism(on: bool, device: torch.device) -> None:
    """Deterministic kernels where torch offers them (same config + seed -> same numbers)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms also sets a torch.compile option, importing the
    # compiler stack (1.3 s per process, every run and sweep worker); we never compile, so set
    # the flag it wraps directly where torch has it.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(on, warn_only=True)
    else:
        setter(on, warn_only=True)


def lr_at(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warmup: lr * min(step / warmup_steps, 1)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(step / warmup_steps, 1.0)


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """Dense early, then regular: 0, the 1-2-5 series below ``every``, multiples of ``every``,
    and the last epoch."""
    out = {0, epochs}
    for decade in range(12):
        for m in (1, 2, 5):
            e = m * 10**decade
            if e < every and e <= epochs:
                out.add(e)
    out.update(range(every, epochs + 1, every))
    return sorted(out)


@dataclass
class TaskTensors:
    """The dataset's train and test parts on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: Dataset, device: torch.device) -> TaskTensors:
        def t(a):
            return torch.as_tensor(a, dtype=torch.int64).to(device)

        return cls(
            t(ds.tokens[ds.train_idx]),
            t(ds.labels[ds.train_idx]),
            t(ds.tokens[ds.test_idx]),
            t(ds.labels[ds.test_idx]),
        )


@dataclass
class TrainState:
    """Everything that changes during training; saved whole in a resume checkpoint."""

    model: HookedModule
    optimizer: torch.optim.AdamW
    grad_filter: GradFilter
    init_params: list[torch.Tensor] | None = None
    epoch: int = 0
    step: int = 0
    wall_s: float = 0.0
    t_mem_epoch: int | None = None
    t_grok_epoch: int | None = None
    names: list[str] = field(default_factory=list)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.model.named_parameters()]


def make_optimizer(o: OptimConfig, params: list[torch.Tensor]) -> torch.optim.AdamW:
    """AdamW with the config's betas, eps and (for decay toward zero) decoupled weight decay.

    Every operation of AdamW is elementwise, which is why one AdamW over stacked seeds equals one
    AdamW per seed, bit for bit, with the multi-tensor (foreach) implementation used here.
    torch's fused CPU kernel is 2-3x faster per step but rounds the scalar tail of a tensor
    differently from its vectorised body, so a seed's parameters would drift apart by 1 ulp
    between batched and single training after some hundred steps; we keep the exact one.
    """
    return torch.optim.AdamW(
        params,
        lr=lr_at(0, o.lr, o.warmup_steps),
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay if o.decay_to == "zero" else 0.0,
        foreach=True,
    )


def new_state(cfg: Config, ds: Dataset, device: torch.device) -> TrainState:
    """Freshly initialised model (seed ``cfg.train.seed``) and optimizer."""
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, cfg.train.seed).to(device)
    names = [n for n, _ in model.named_parameters()]
    o = cfg.optim
    optimizer = make_optimizer(o, list(model.parameters()))
    init = [p.detach().clone() for p in model.parameters()] if o.decay_to == "init" else None
    return TrainState(model, optimizer, GradFilter(o, names), init, names=names)


def state_tensors(state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model weights, resume state: optimizer moments, filter and init weights) as flat dicts."""
    weights = {n: p.detach() for n, p in state.model.named_parameters()}
    resume: dict[str, torch.Tensor] = {}
    opt_state = state.optimizer.state_dict()["state"]
    for i, name in enumerate(state.names):
        for key, value in opt_state.get(i, {}).items():
            resume[f"optim.{key}.{name}"] = torch.as_tensor(value)
    for key, value in state.grad_filter.state_tensors().items():
        resume[f"filter.{key}"] = value
    if state.init_params is not None:
        for name, value in zip(state.names, state.init_params, strict=True):
            resume[f"init.{name}"] = value
    return weights, resume


def state_meta(state: TrainState) -> dict:
    """The scalar part of the training state."""
    return {
        "epoch": state.epoch,
        "step": state.step,
        "wall_s": state.wall_s,
        "t_mem_epoch": state.t_mem_epoch,
        "t_grok_epoch": state.t_grok_epoch,
    }


def restore_state(
    state: TrainState, weights: dict[str, torch.Tensor], resume: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of :func:`state_tensors` / :func:`state_meta` on a freshly built state."""
    device = next(state.model.parameters()).device
    state.model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=True)
    opt_sd = state.optimizer.state_dict()
    new_state_: dict[int, dict[str, torch.Tensor]] = {}
    for i, name in enumerate(state.names):
        entry = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = resume.get(f"optim.{key}.{name}")
            if t is not None:
                entry[key] = t.clone() if key == "step" else t.to(device)
        if entry:
            new_state_[i] = entry
    opt_sd["state"] = new_state_
    state.optimizer.load_state_dict(opt_sd)
    state.grad_filter.load_state_tensors(
        {k[len("filter.") :]: v for k, v in resume.items() if k.startswith("filter.")}, device
    )
    if state.init_params is not None:
        state.init_params = [resume[f"init.{n}"].to(device) for n in state.names]
    state.epoch, state.step, state.wall_s = meta["epoch"], meta["step"], meta["wall_s"]
    state.t_mem_epoch, state.t_grok_epoch = meta.get("t_mem_epoch"), meta.get("t_grok_epoch")


@torch.no_grad()
def evaluate_split(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_name: str,
    chunk: int = EVAL_ROWS,
) -> list[dict]:
    """Loss (float64), accuracy and softmax-collapse share over the examples of x (..., n, n_ctx)
    and y (..., n), chunk by chunk; a dict per leading index (one for a single model, K for
    stacked seeds). The loss is the mean of the per-example losses of the whole split, so the
    numbers do not depend on the chunk size: batched evaluation uses smaller chunks per seed."""
    each = per_example_loss(loss_name)
    n = y.shape[-1]
    losses, correct, collapsed = [], 0, 0
    for start in range(0, n, chunk):
        logits = logits_of(x[..., start : start + chunk, :])
        yb = y[..., start : start + chunk]
        losses.append(each(logits, yb))
        correct = correct + (logits.argmax(dim=-1) == yb).sum(dim=-1)
        collapsed = collapsed + softmax_collapsed(logits).sum(dim=-1)
    loss = torch.cat(losses, dim=-1).mean(dim=-1).reshape(-1).tolist()
    correct, collapsed = correct.reshape(-1).tolist(), collapsed.reshape(-1).tolist()
    return [
        {"loss": v, "acc": c / n, "collapse": s / n}
        for v, c, s in zip(loss, correct, collapsed, strict=True)
    ]


def evaluate(model: HookedModule, x: torch.Tensor, y: torch.Tensor, loss_name: str) -> dict:
    """Loss (float64), accuracy and softmax-collapse share of ``model`` on (x, y)."""
    return evaluate_split(model, x, y, loss_name)[0]


def eval_row(cfg: Config, state: TrainState, data: TaskTensors) -> dict:
    """One metrics row: losses, accuracies, weight norm, lr and wall time at ``state.epoch``."""
    model = state.model
    model.eval()
    tr = evaluate(model, data.train_x, data.train_y, cfg.optim.loss)
    te = evaluate(model, data.test_x, data.test_y, cfg.optim.loss)
    model.train()
    wn = float(sum(torch.sum(p.detach().double() ** 2) for p in model.parameters()))
    return {
        "epoch": state.epoch,
        "step": state.step,
        "train_loss": tr["loss"],
        "train_acc": tr["acc"],
        "test_loss": te["loss"],
        "test_acc": te["acc"],
        "weight_norm_sq": wn,
        "lr": lr_at(state.step, cfg.optim.lr, cfg.optim.warmup_steps),
        "softmax_collapse": tr["collapse"],
        "wall_s": state.wall_s,
    }


def _batches(cfg: Config, data: TaskTensors, epoch: int):
    n, bs = len(data.train_x), cfg.optim.batch_size
    if bs == 0 or bs >= n:
        yield data.train_x, data.train_y
        return
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen).to(data.train_x.device)
    for start in range(0, n, bs):
        idx = order[start : start + bs]
        yield data.train_x[idx], data.train_y[idx]


def train_step(cfg: Config, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step; returns the loss before the step (NaN/inf are returned, not raised)."""
    o = cfg.optim
    lr = lr_at(state.step, o.lr, o.warmup_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    loss = loss_function(o.loss)(state.model(x), y)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    apply_update(o, state, lr)
    return value


def apply_update(
    o: OptimConfig,
    state,
    lr: float,
    orthogonalize=orthogonalize_gradients,
    project=project_to_norm,
) -> None:
    """After backward: gradient filter, perp-Grad, decay toward init, the AdamW step and the norm
    constraint, in that order. Shared by single and batched training, which pass per-seed
    versions of the two per-tensor interventions."""
    params = state.params
    state.grad_filter.apply(params)
    if o.orthograd:
        orthogonalize(params)
    if o.decay_to == "init" and o.weight_decay > 0:
        decay_toward(params, state.init_params, lr * o.weight_decay)
    state.optimizer.step()
    if o.weight_norm > 0:
        project(params, o.weight_norm)
    state.step += 1


def run_training(
    cfg: Config,
    state: TrainState,
    data: TaskTensors,
    on_eval: Callable[[dict], None],
    on_checkpoint: Callable[[TrainState], None],
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict:
    """Train from ``state.epoch`` to the budget; returns {'state': done | diverged | interrupted,
    'diverged_epoch': epoch or None}.

    Evaluates at epoch 0 (when starting fresh), every ``eval_every`` epochs and at every checkpoint
    epoch; calls ``on_checkpoint`` after the evaluation at each checkpoint epoch.
    """
    r = cfg.train
    ckpts = set(checkpoint_epochs(r.epochs, r.checkpoint_every))
    state.model.train()
    if state.epoch == 0:
        row = eval_row(cfg, state, data)
        _track_events(cfg, state, row)
        on_eval(row)
        on_checkpoint(state)
    t0 = time.perf_counter() - state.wall_s
    while state.epoch < r.epochs:
        for x, y in _batches(cfg, data, state.epoch):
            loss = train_step(cfg, state, x, y)
            if not math.isfinite(loss):
                state.wall_s = time.perf_counter() - t0
                return {"state": "diverged", "diverged_epoch": state.epoch}
        state.epoch += 1
        state.wall_s = time.perf_counter() - t0
        stop_early = (
            r.early_stop_after >= 0
            and state.t_grok_epoch is not None
            and state.epoch >= state.t_grok_epoch + r.early_stop_after
        )
        last = state.epoch == r.epochs or stop_early
        if state.epoch % r.eval_every == 0 or state.epoch in ckpts or last:
            row = eval_row(cfg, state, data)
            _track_events(cfg, state, row)
            on_eval(row)
        if state.epoch in ckpts or last:
            on_checkpoint(state)
        if last:
            break
        if stop_requested():
            return {"state": "interrupted", "diverged_epoch": None}
    return {"state": "done", "diverged_epoch": None}


def _track_events(cfg: Config, state: TrainState, row: dict) -> None:
    if state.t_mem_epoch is None and row["train_acc"] >= cfg.train.mem_threshold:
        state.t_mem_epoch = row["epoch"]
    if state.t_grok_epoch is None and row["test_acc"] >= cfg.train.grok_threshold:
        state.t_grok_epoch = row["epoch"]
