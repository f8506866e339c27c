"""The one training core: K seeds of one config trained as one computation (K = 1 for one run).

Settings follow Nanda et al. (2023): AdamW (betas 0.9 / 0.98), weight decay 1.0 applied to every
parameter, learning rate lr * min(step / warmup_steps, 1) (so the very first update has learning
rate 0, as in their code), full-batch steps, cross-entropy in float64.

Parameters are stacked along a leading seed axis, shape (K, *shape). With K = 1 the model's own
training pass runs on the unstacked views (``p[0]``), so one run computes exactly what a plain
``model(x)`` training loop computes. With K > 1 the MLP and the one-layer transformer compute on
the stacked weights directly (the same code as one model's pass,
:mod:`grokscope.models.stacked_ops`); any other model's forward is mapped over the seed axis
with ``torch.vmap`` + ``torch.func.functional_call``. Every seed is initialised by
``build_model`` with its own seed.

Equal to training each seed alone? One AdamW suffices because every operation of AdamW is
elementwise (moments, bias correction, decoupled decay), as are the Grokfast EMA and MA filters
(Lee et al. 2024) and decay toward the init; perp-Grad (Prieto et al. 2025) and the weight-norm
sphere (Liu et al. 2023, Omnigrok) reduce per seed. So each seed of a batch computes the same
function as the seed alone, but not necessarily with the same rounding: a stacked product or
embedding backward may be summed in another order than the unstacked one, depending on the CPU's
kernels (``ATEN_CPU_CAPABILITY``, BLAS dispatch). Batched and single training therefore agree to
rounding, which grows with the epochs as any float32 training amplifies rounding; they are bit for
bit equal only where the kernels happen to sum alike (tests/test_batched.py measures the noise
floor and tests against it). A resumed run repeats the uninterrupted one bit for bit on the same
machine: the same code runs the same kernels on the same values.

What may differ within a batch (:data:`BATCH_FIELDS`): ``train.seed`` (the model seed, which also
orders mini-batches) and ``task.data_seed`` (the split: each seed gets its own stacked copy of its
train and test examples; all splits of one task have the same sizes). Every other field must be
equal, because the K runs share one schedule, one optimizer and one network shape.

Each seed keeps its own history: its own evaluation rows, its own t_mem / t_grok, its own early
stop, and its own divergence (a seed whose loss turns non-finite is finished as ``diverged`` while
the others go on). Finished seeds are dropped from the batch. The loop knows nothing about files:
it reports evaluations, checkpoint moments and finished seeds through callbacks, and its whole
state (weights, optimizer moments, filter, counters) is saved per seed in the format of a single
run, so that any seed resumes alone or in any batch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import torch
from torch.func import functional_call

from grokscope import config as config_mod
from grokscope.config import Config, ConfigError, OptimConfig
from grokscope.events import reached
from grokscope.models import HookedModule, build_model
from grokscope.tasks import Dataset
from grokscope.train.interventions import (
    GradFilter,
    clip_gradients,
    decay_toward,
    orthogonalize_gradients,
    project_to_norm,
    total_norm,
)
from grokscope.train.losses import (
    per_example_loss,
    softmax_collapsed,
    stablemax_collapsed,
)

# Examples per evaluation chunk (all seeds together when batched): the float64 logits of ~4k
# examples stay in the 4 MB L2 cache; larger chunks ran up to 2.5x slower per example (p = 97).
EVAL_ROWS = 4096


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, then Apple MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def run_device(cfg: Config) -> torch.device:
    """The device a run trains on: the CPU in portable mode (``train.portable``), else
    ``train.device`` (:func:`resolve_device`)."""
    return resolve_device("cpu" if cfg.train.portable else cfg.train.device)


def check_device(name: str) -> torch.device:
    """The device ``name`` names, or a ConfigError saying why it cannot be used here (a CPU-only
    build of torch, no such GPU index, no MPS): checked before anything is written."""
    try:
        device = resolve_device(name)
    except RuntimeError as e:
        raise ConfigError(f"train.device={name!r} is not a device torch knows ({e})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU found"
            raise ConfigError(f"train.device={name!r} is not available: {why}; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device={name!r} is not available: "
                f"{torch.cuda.device_count()} CUDA device(s) here"
            )
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"train.device={name!r} is not available: no Apple MPS; use cpu or auto")
    return device


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


def lr_at(step: int, lr: float, warmup_steps: int, decay: str = "none", total: int = 0) -> float:
    """Linear warmup, lr * min(step / warmup_steps, 1), then (``decay = linear``) a linear fall
    to zero at step ``total``."""
    rate = lr if warmup_steps <= 0 else lr * min(step / warmup_steps, 1.0)
    if decay == "linear" and total > 0:
        rate *= max(0.0, 1.0 - step / total)
    return rate


def step_lr(o: OptimConfig, state: TrainState) -> float:
    """The learning rate of the state's next step under the config's schedule."""
    return lr_at(state.step, o.lr, o.warmup_steps, o.lr_decay, state.total_steps)


def _set_lr(o: OptimConfig, state: TrainState) -> float:
    """Give the optimizer the learning rate of the next step; return it."""
    lr = step_lr(o, state)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    return lr


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


def is_finished(r: config_mod.TrainConfig, meta: dict) -> bool:
    """Whether a seed at ``meta`` (epoch, t_grok_epoch) has nothing left to train: the budget is
    spent, or it stopped ``early_stop_after`` epochs after t_grok."""
    if meta["epoch"] >= r.epochs:
        return True
    t_grok = meta.get("t_grok_epoch")
    stop = r.early_stop_after
    return stop >= 0 and t_grok is not None and meta["epoch"] >= t_grok + stop


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


@torch.no_grad()
def evaluate_split(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_name: str,
    chunk: int = EVAL_ROWS,
) -> list[dict]:
    """Loss (float64), accuracy and collapse shares over the examples of x (..., n, n_ctx) and
    y (..., n), chunk by chunk; a dict per leading index (one for a single model, K for stacked
    seeds). The loss is the mean of the per-example losses of the whole split, so the numbers do
    not depend on the chunk size: batched evaluation uses smaller chunks per seed.

    ``collapse`` holds the shares of examples in softmax collapse (Prieto et al. 2025) at the
    loss's float64 precision (``softmax_collapse``) and in float32 (``softmax_collapse_f32``, the
    paper's setting), and for StableMax runs the StableMax analogue (``stablemax_collapse``)."""
    each = per_example_loss(loss_name)
    n = y.shape[-1]
    losses, correct, collapsed = [], 0, {}
    for start in range(0, n, chunk):
        logits = logits_of(x[..., start : start + chunk, :])
        yb = y[..., start : start + chunk]
        losses.append(each(logits, yb))
        correct = correct + (logits.argmax(dim=-1) == yb).sum(dim=-1)
        flags = {
            "softmax_collapse": softmax_collapsed(logits),
            "softmax_collapse_f32": softmax_collapsed(logits, torch.float32),
        }
        if loss_name == "stablemax":
            flags["stablemax_collapse"] = stablemax_collapsed(logits)
        for col, flag in flags.items():
            collapsed[col] = collapsed.get(col, 0) + flag.sum(dim=-1)
    loss = torch.cat(losses, dim=-1).mean(dim=-1).reshape(-1).tolist()
    correct = correct.reshape(-1).tolist()
    shares = {col: (v.reshape(-1).double() / n).tolist() for col, v in collapsed.items()}
    return [
        {"loss": v, "acc": c / n, "collapse": {col: sh[i] for col, sh in shares.items()}}
        for i, (v, c) in enumerate(zip(loss, correct, strict=True))
    ]


BATCH_FIELDS = ("train.seed", "task.data_seed")


def check_batch(cfgs: list[Config]) -> None:
    """Raise ConfigError unless the configs differ only in :data:`BATCH_FIELDS`."""
    if not cfgs:
        raise ConfigError("a batch needs at least one config")

    def rest(cfg: Config) -> dict:
        d = config_mod.to_dict(cfg)
        for key in BATCH_FIELDS:
            section, name = key.split(".")
            d[section].pop(name)
        d.pop("preset")
        return d

    first = rest(cfgs[0])
    for cfg in cfgs[1:]:
        other = rest(cfg)
        if other != first:
            diff = sorted(
                f"{s}.{n}"
                for s in config_mod.SECTIONS
                for n in first[s]
                if first[s][n] != other[s][n]
            )
            raise ConfigError(
                f"configs in one batch may differ only in {', '.join(BATCH_FIELDS)}; "
                f"these differ: {', '.join(diff)}"
            )


class CoreData(Protocol):
    """What the core trains on: the data of one kind of study for the seeds of a batch.

    The core owns the loop (epochs, evaluations, checkpoints, events, early stop, divergence,
    the optimizer and the interventions); the data says what one step's losses and one
    evaluation are, as a LightningDataModule / LightningModule pair would. Implementations:
    :class:`grokscope.train.examples.ExampleData` (fixed-length examples, stacked seeds) and
    :class:`grokscope.train.lm_data.SeqData` (language modelling on variable-length lines); a
    kind of study picks one or brings its own (:mod:`grokscope.kinds`)."""

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch of the loop (1: full batch, or one step per epoch)."""
        ...

    def losses(self, cfgs: list[Config], state: TrainState, index: int) -> torch.Tensor:
        """Each seed's training loss (K,) at step ``index`` of the state's epoch."""
        ...

    def eval_rows(self, cfgs: list[Config], state: TrainState, lr: float) -> list[dict]:
        """One metrics row per seed of ``state`` (``lr``: the learning rate of the next step)."""
        ...

    def select(self, slots: list[int]) -> CoreData:
        """The data of the seeds in ``slots`` only."""
        ...


@dataclass
class TrainState:
    """Stacked training state of the seeds still training; ``runs[slot]`` is the index (into
    the caller's list of configs) of the run held in slot ``slot``."""

    model: HookedModule  # the template whose forward runs on (or is mapped over) the seeds
    names: list[str]
    params: list[torch.Tensor]  # leaves of shape (K, *param shape)
    optimizer: torch.optim.AdamW
    grad_filter: GradFilter
    runs: list[int]
    init_params: list[torch.Tensor] | None = None
    epoch: int = 0
    step: int = 0
    total_steps: int = 0  # the step budget (for a decaying learning rate), set by the loop
    wall_s: float = 0.0
    t_mem_epoch: list[int | None] = field(default_factory=list)
    t_grok_epoch: list[int | None] = field(default_factory=list)
    # per seed and event: [epoch at which the current run of evaluations at the threshold
    # began, its length] (an event held for ``sustain`` evaluations: see events.first_sustained)
    streaks: list[list[list[int]]] = field(default_factory=list)
    # interventions at T_mem (optim.at_mem; one seed per state): weight decay switched off, and
    # the total weight norm held at its value at memorization
    wd_off: bool = False
    frozen_norm: float | None = None

    @property
    def k(self) -> int:
        return len(self.runs)


def new_state(cfgs: list[Config], datasets: list[Dataset], device: torch.device) -> TrainState:
    """Each seed's freshly initialised model (``build_model`` with its ``train.seed``), stacked,
    and one AdamW over the stacked tensors."""
    check_batch(cfgs)
    models = [
        build_model(c.model, ds.d_vocab, ds.n_ctx, c.train.seed)
        for c, ds in zip(cfgs, datasets, strict=True)
    ]
    template = models[0].to(device)
    names = [n for n, _ in template.named_parameters()]
    params = [
        torch.stack([m.get_parameter(n).detach() for m in models]).to(device).requires_grad_()
        for n in names
    ]
    o = cfgs[0].optim
    init = [p.detach().clone() for p in params] if o.decay_to == "init" else None
    k = len(cfgs)
    return TrainState(
        model=template,
        names=names,
        params=params,
        optimizer=make_optimizer(cfgs[0].optim, params),
        grad_filter=GradFilter(o, names),
        runs=list(range(k)),
        init_params=init,
        t_mem_epoch=[None] * k,
        t_grok_epoch=[None] * k,
        streaks=[_no_streaks() for _ in range(k)],
    )


# -- per-seed views of the state: the checkpoint format of a run ---------------------------------


def seed_tensors(
    state: TrainState, slot: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, resume tensors) of one seed as flat dicts: weights by parameter name (unstacked);
    optimizer moments ``optim.<key>.<name>``, filter state ``filter.<key>`` and initial weights
    ``init.<name>``. Every seed's checkpoint has this one format, so it resumes alone or in any
    batch."""
    weights = {n: p.detach()[slot] for n, p in zip(state.names, state.params, strict=True)}
    resume: dict[str, torch.Tensor] = {}
    opt_state = state.optimizer.state_dict()["state"]
    for i, name in enumerate(state.names):
        for key, value in opt_state.get(i, {}).items():
            value = torch.as_tensor(value)
            resume[f"optim.{key}.{name}"] = value if key == "step" else value[slot]
    for key, value in state.grad_filter.state_tensors().items():
        if key.startswith("ema."):
            value = value[slot]
        elif key.startswith("history."):
            value = value[:, slot]  # (window, K, *shape)
        resume[f"filter.{key}"] = value
    if state.init_params is not None:
        for name, value in zip(state.names, state.init_params, strict=True):
            resume[f"init.{name}"] = value[slot]
    return weights, resume


def seed_meta(state: TrainState, slot: int) -> dict:
    """The scalar training state of one seed (what a checkpoint's metadata holds)."""
    return {
        "epoch": state.epoch,
        "step": state.step,
        "wall_s": state.wall_s,
        "t_mem_epoch": state.t_mem_epoch[slot],
        "t_grok_epoch": state.t_grok_epoch[slot],
        "streaks": state.streaks[slot],
        "frozen_norm": state.frozen_norm,
    }


def restore_state(
    cfgs: list[Config],
    datasets: list[Dataset],
    device: torch.device,
    snapshots: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]],
    runs: list[int] | None = None,
) -> TrainState:
    """A batched state stacked from per-seed (weights, resume, meta) snapshots, all taken at the
    same epoch and step (as every seed of one batch is checkpointed together)."""
    metas = [m for _, _, m in snapshots]
    if len({(m["epoch"], m["step"]) for m in metas}) != 1:
        got = sorted({(m["epoch"], m["step"]) for m in metas})
        raise ConfigError(f"seeds resumed as one batch must share epoch and step, got {got}")
    state = new_state(cfgs, datasets, device)
    with torch.no_grad():
        for name, p in zip(state.names, state.params, strict=True):
            p.copy_(torch.stack([w[name] for w, _, _ in snapshots]).to(device))
    resumes = [r for _, r, _ in snapshots]
    first = resumes[0]
    opt_sd = state.optimizer.state_dict()
    new_opt: dict[int, dict[str, torch.Tensor]] = {}
    for i, name in enumerate(state.names):
        entry = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            full = f"optim.{key}.{name}"
            if full not in first:
                continue
            if key == "step":
                entry[key] = first[full].clone()
            else:
                entry[key] = torch.stack([r[full] for r in resumes]).to(device)
        if entry:
            new_opt[i] = entry
    opt_sd["state"] = new_opt
    state.optimizer.load_state_dict(opt_sd)
    filt: dict[str, torch.Tensor] = {}
    for key in first:
        if not key.startswith("filter."):
            continue
        sub = key[len("filter.") :]
        if sub.startswith("ema."):
            filt[sub] = torch.stack([r[key] for r in resumes])
        elif sub.startswith("history."):
            filt[sub] = torch.stack([r[key] for r in resumes], dim=1)
        else:
            filt[sub] = first[key]
    state.grad_filter.load_state_tensors(filt, device)
    if state.init_params is not None:
        state.init_params = [
            torch.stack([r[f"init.{n}"] for r in resumes]).to(device) for n in state.names
        ]
    state.epoch, state.step = metas[0]["epoch"], metas[0]["step"]
    state.wall_s = max(m["wall_s"] for m in metas)
    state.t_mem_epoch = [m.get("t_mem_epoch") for m in metas]
    state.t_grok_epoch = [m.get("t_grok_epoch") for m in metas]
    state.streaks = [m.get("streaks") or _no_streaks() for m in metas]
    if runs is not None:
        state.runs = list(runs)
    cfg = cfgs[state.runs[0]]
    if cfg.optim.at_mem != "none" and state.t_mem_epoch[0] is not None:
        apply_at_mem(cfg, state, metas[0].get("frozen_norm"))
    return state


def select_slots(cfg: Config, state: TrainState, keep: list[int]) -> TrainState:
    """The same state with only the seeds in slots ``keep`` (ascending) left in the batch."""
    idx = torch.as_tensor(keep, device=state.params[0].device)

    def pick(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return t.detach().index_select(dim, idx).clone()

    params = [pick(p).requires_grad_() for p in state.params]
    optimizer = make_optimizer(cfg.optim, params)
    old = state.optimizer.state_dict()
    sd = optimizer.state_dict()
    sd["param_groups"][0]["lr"] = old["param_groups"][0]["lr"]
    sd["state"] = {
        i: {key: (v.clone() if key == "step" else pick(v)) for key, v in entry.items()}
        for i, entry in old["state"].items()
    }
    optimizer.load_state_dict(sd)
    filt = GradFilter(cfg.optim, state.names)
    filt.seen = state.grad_filter.seen
    filt.ema = {n: pick(v) for n, v in state.grad_filter.ema.items()}
    filt.history = {n: pick(v, 1) for n, v in state.grad_filter.history.items()}
    init = None if state.init_params is None else [pick(t) for t in state.init_params]
    return TrainState(
        model=state.model,
        names=state.names,
        params=params,
        optimizer=optimizer,
        grad_filter=filt,
        runs=[state.runs[s] for s in keep],
        init_params=init,
        epoch=state.epoch,
        step=state.step,
        total_steps=state.total_steps,
        wall_s=state.wall_s,
        t_mem_epoch=[state.t_mem_epoch[s] for s in keep],
        t_grok_epoch=[state.t_grok_epoch[s] for s in keep],
        streaks=[state.streaks[s] for s in keep],
    )


# -- forward, step, evaluation -------------------------------------------------------------------


def stacked_forward(state: TrainState, x: torch.Tensor) -> torch.Tensor:
    """Logits (K, batch, classes) of every seed's model on its own inputs x (K, batch, n_ctx).

    One seed (K = 1) runs the model's own training pass on the unstacked views of its weights, the
    computation of ``model(x)``. Several seeds: models with a stacked pass (the MLP, the one-layer
    transformer without LayerNorm: see :mod:`grokscope.models.stacked_ops`) compute on the stacked
    weights directly; any other model's forward is mapped over the seeds with ``torch.vmap``."""
    model, names = state.model, state.names
    stacked = getattr(model, "stacked_logits", None)
    if state.k == 1:
        params = {n: p.squeeze(0) for n, p in zip(names, state.params, strict=True)}
        logits = stacked(params, x[0]) if stacked is not None else None
        if logits is None:
            logits = functional_call(model, params, (x[0],))
        return logits.unsqueeze(0)
    if stacked is not None:
        logits = stacked(dict(zip(names, state.params, strict=True)), x)
        if logits is not None:
            return logits

    def one(params: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, params, strict=True)), (tokens,))

    return torch.vmap(one)(tuple(state.params), x)


def train_step(
    cfg: Config, state: TrainState, losses_of: Callable[[], torch.Tensor]
) -> list[float]:
    """The one step function: the learning rate of this step, each seed's loss (K,) from
    ``losses_of()`` (called after the learning rate is set, so a loss that draws dropout seeds
    its generator there), one backward pass through their sum and the update every run gets;
    returns each seed's loss before the step.

    A seed whose loss is non-finite is left out of the backward pass (its slot then holds
    garbage); the caller finishes it as diverged, as ``run_training`` does.
    """
    o = cfg.optim
    lr = _set_lr(o, state)
    losses = losses_of()
    values = losses.detach().tolist()
    finite = [s for s, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return values
    state.optimizer.zero_grad(set_to_none=True)
    if len(finite) < len(values):
        losses = losses[torch.as_tensor(finite, device=losses.device)]
    losses.sum().backward()
    apply_update(o, state, lr)
    return values


def apply_update(o: OptimConfig, state: TrainState, lr: float) -> None:
    """After backward: gradient clipping (on the raw gradient, as a training loop clips right
    after backward), gradient filter, perp-Grad, decay toward init, the AdamW step and the norm
    constraint, in that order."""
    params = state.params
    if o.grad_clip > 0:
        clip_gradients(params, o.grad_clip)
    state.grad_filter.apply(params)
    if o.orthograd:
        orthogonalize_gradients(params)
    if o.decay_to == "init" and o.weight_decay > 0 and not state.wd_off:
        decay_toward(params, state.init_params, lr * o.weight_decay)
    state.optimizer.step()
    if o.weight_norm > 0:
        project_to_norm(params, o.weight_norm)
    elif state.frozen_norm is not None:
        project_to_norm(params, state.frozen_norm)
    state.step += 1


def apply_at_mem(cfg: Config, state: TrainState, frozen_norm: float | None = None) -> None:
    """Switch on the run's intervention at memorization (``optim.at_mem``): weight decay off, or
    the norm frozen at ``frozen_norm`` (default: the weights' norm now). One seed per state."""
    if cfg.optim.at_mem == "drop_wd":
        state.wd_off = True
        for group in state.optimizer.param_groups:
            group["weight_decay"] = 0.0
    elif cfg.optim.at_mem == "freeze_norm":
        state.frozen_norm = (
            float(total_norm(state.params)) if frozen_norm is None else float(frozen_norm)
        )


def evaluate_stacked(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, loss_name: str
) -> list[dict]:
    """Per seed: loss (float64), accuracy and softmax-collapse share, by
    :func:`evaluate_split` on chunks of
    ``EVAL_ROWS / K`` examples per seed."""
    chunk = max(1, EVAL_ROWS // state.k)
    return evaluate_split(lambda xb: stacked_forward(state, xb), x, y, loss_name, chunk)


# -- the loop ----------------------------------------------------------------------------------


def _train_epoch(
    cfgs: list[Config], state: TrainState, data: CoreData, loop: _Loop, t0: float
) -> tuple[TrainState, CoreData] | None:
    """One epoch: ``data.steps_per_epoch`` optimizer steps of every seed (one for full-batch and
    sequence data); seeds whose loss turns non-finite are finished as diverged. None when no
    seed is left."""
    cfg = cfgs[state.runs[0]]
    for index in range(data.steps_per_epoch):
        step_before = state.step
        losses = train_step(cfg, state, partial(data.losses, cfgs, state, index))
        bad = [s for s, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            state.wall_s = time.perf_counter() - t0
            rest = loop.drop(state, data, bad, "diverged", step_before, state.epoch)
            if rest is None:
                return None
            state, data = rest
    return state, data


def _no_streaks() -> list[list[int]]:
    return [[0, 0], [0, 0]]


def _held(streak: list[int], ok: bool, sustain: int, epoch: int) -> bool:
    """Extend (or break) the run of evaluations at the threshold with this one; whether it has
    now held for ``sustain`` evaluations (the event then dates from ``streak[0]``)."""
    if not ok:
        streak[1] = 0
        return False
    if streak[1] == 0:
        streak[0] = epoch
    streak[1] += 1
    return streak[1] >= sustain


@dataclass
class _Loop:
    """Callbacks and bookkeeping of :func:`run_training`."""

    cfgs: list[Config]
    on_eval: Callable[[int, dict], None]
    on_checkpoint: Callable[[TrainState, list[int]], None]
    on_finish: Callable[[int, dict], None]

    def track(
        self, state: TrainState, slot: int, row: dict, events: tuple[tuple[str, int], ...]
    ) -> None:
        """Update the seed's two events with one evaluation row: ``events`` gives each event's
        metrics column and the evaluations in a row it must hold (1: the first crossing)."""
        cfg = self.cfgs[state.runs[slot]]
        r = cfg.train
        (mem, mem_hold), (grok, grok_hold) = events
        streaks, epoch = state.streaks[slot], row["epoch"]
        if state.t_mem_epoch[slot] is None and _held(
            streaks[0], reached(row[mem], r.mem_threshold), mem_hold, epoch
        ):
            state.t_mem_epoch[slot] = streaks[0][0]
            if cfg.optim.at_mem != "none":
                apply_at_mem(cfg, state)
        if state.t_grok_epoch[slot] is None and _held(
            streaks[1], reached(row[grok], r.grok_threshold), grok_hold, epoch
        ):
            state.t_grok_epoch[slot] = streaks[1][0]

    def finish(
        self, state: TrainState, slot: int, name: str, step: int, diverged_epoch: int | None
    ) -> None:
        self.on_finish(
            state.runs[slot],
            {
                "state": name,
                "epochs_done": state.epoch,
                "step": step,
                "wall_s": round(state.wall_s, 3),
                "t_mem_epoch": state.t_mem_epoch[slot],
                "t_grok_epoch": state.t_grok_epoch[slot],
                "diverged_epoch": diverged_epoch,
            },
        )

    def drop(
        self,
        state: TrainState,
        data: CoreData,
        slots: list[int],
        name: str,
        step: int,
        diverged_epoch: int | None = None,
    ) -> tuple[TrainState, CoreData] | None:
        """Finish the seeds in ``slots`` as ``name`` and return the state and data of the others,
        or None when no seed is left."""
        for s in slots:
            self.finish(state, s, name, step, diverged_epoch)
        keep = [s for s in range(state.k) if s not in slots]
        if not keep:
            return None
        return select_slots(self.cfgs[state.runs[keep[0]]], state, keep), data.select(keep)


def run_training(
    cfgs: list[Config],
    state: TrainState,
    data: CoreData,
    events: tuple[tuple[str, int], tuple[str, int]],
    on_eval: Callable[[int, dict], None],
    on_checkpoint: Callable[[TrainState, list[int]], None],
    on_finish: Callable[[int, dict], None],
    stop_requested: Callable[[], bool] = lambda: False,
) -> str:
    """Train every seed of ``state`` to the budget (or its early stop), as a batch of one would
    train each seed alone; returns ``done`` or ``interrupted``.

    ``events``: the metrics column of each of the two events (t_mem, t_grok) and how many
    evaluations in a row it must hold (:func:`grokscope.events.first_sustained`; 1 = the first
    crossing); the kind says (``Kind.event_rules``). Callbacks get run indices (positions in
    ``cfgs``): ``on_eval(run, row)`` for every metrics
    row; ``on_checkpoint(state, slots)`` after the evaluation at a checkpoint epoch (or at a
    seed's last epoch) for the slots to save; ``on_finish(run, status)`` once per run with its
    final status fields (state done or diverged, epochs_done, step, wall_s, t_mem_epoch,
    t_grok_epoch, diverged_epoch). On ``interrupted`` every unfinished seed has just been
    checkpointed and none was finished.
    """
    check_batch([cfgs[r] for r in state.runs])
    cfg = cfgs[state.runs[0]]
    r = cfg.train
    ckpts = set(checkpoint_epochs(r.epochs, r.checkpoint_every))
    loop = _Loop(cfgs, on_eval, on_checkpoint, on_finish)
    state.model.train()
    state.total_steps = r.epochs * data.steps_per_epoch
    if state.epoch == 0:
        for slot, row in enumerate(data.eval_rows(cfgs, state, step_lr(cfg.optim, state))):
            loop.track(state, slot, row, events)
            on_eval(state.runs[slot], row)
        on_checkpoint(state, list(range(state.k)))
    # seeds resumed at their final checkpoint: finished as they are, not trained one epoch more
    done = [s for s in range(state.k) if is_finished(r, seed_meta(state, s))]
    if done:
        rest = loop.drop(state, data, done, "done", state.step)
        if rest is None:
            return "done"
        state, data = rest
    t0 = time.perf_counter() - state.wall_s
    while state.k and state.epoch < r.epochs:
        rest = _train_epoch(cfgs, state, data, loop, t0)
        if rest is None:
            return "done"
        state, data = rest
        state.epoch += 1
        state.wall_s = time.perf_counter() - t0
        last = [is_finished(r, seed_meta(state, s)) for s in range(state.k)]
        regular = state.epoch % r.eval_every == 0 or state.epoch in ckpts
        if regular or any(last):
            for s, row in enumerate(data.eval_rows(cfgs, state, step_lr(cfg.optim, state))):
                if regular or last[s]:
                    loop.track(state, s, row, events)
                    on_eval(state.runs[s], row)
            # an event found by this evaluation may end a seed now (early_stop_after = 0)
            last = [is_finished(r, seed_meta(state, s)) for s in range(state.k)]
        to_save = [s for s in range(state.k) if state.epoch in ckpts or last[s]]
        if to_save:
            on_checkpoint(state, to_save)
        ended = [s for s in range(state.k) if last[s]]
        if ended:
            rest = loop.drop(state, data, ended, "done", state.step)
            if rest is None:
                return "done"
            state, data = rest
        if stop_requested():
            on_checkpoint(state, list(range(state.k)))
            return "interrupted"
    return "done"
