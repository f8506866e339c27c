"""Batched multi-seed training: K seeds of one config trained as one computation.

The K models' parameters are stacked along a leading seed dimension. The MLP and the one-layer
transformer compute their training pass on stacked weights directly (the same code as one model's
pass, :mod:`grokscope.models.stacked_ops`); any other model's forward is mapped over the seed
dimension with ``torch.vmap`` + ``torch.func.functional_call``. Either way every seed computes
exactly the function the sequential trainer (:mod:`grokscope.train.loop`) computes, with the same
initialisation (each seed's model is built by ``build_model``).

Why one optimizer suffices: every operation of AdamW is elementwise (moments, bias correction,
decoupled decay), so one AdamW over the stacked tensors equals K independent AdamWs; all seeds
take their steps together, so the shared step counter is right for each. The Grokfast EMA and MA
filters (Lee et al. 2024) are elementwise too, so :class:`GradFilter` runs on the stacked
gradients unchanged; decay toward the init is elementwise. The two interventions that reduce over
a tensor or the whole model, perp-Grad (Prieto et al. 2025) and the weight-norm sphere (Liu et al.
2023, Omnigrok), are done per seed here (reductions over every dimension but the first).

What may differ within a batch (:data:`BATCH_FIELDS`): ``train.seed`` (the model seed, which also
orders mini-batches) and ``task.data_seed`` (the split: each seed gets its own stacked copy of
its train and test examples; all splits of one task have the same sizes). Every other field must
be equal, because the K runs share one schedule, one optimizer and one network shape.

Each seed keeps its own history: its own evaluation rows (the same rows and columns as
:func:`grokscope.train.loop.eval_row`), its own t_mem / t_grok, its own early stop, and its own
divergence (a seed whose loss turns non-finite is finished as ``diverged`` while the others go
on). Finished seeds are dropped from the batch. The loop knows nothing about files: it reports
through callbacks, like :func:`grokscope.train.loop.run_training`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.func import functional_call

from grokscope import config as config_mod
from grokscope.config import Config, ConfigError
from grokscope.models import HookedModule, build_model
from grokscope.tasks import Dataset
from grokscope.train.interventions import GradFilter
from grokscope.train.loop import (
    EVAL_ROWS,
    apply_update,
    checkpoint_epochs,
    evaluate_split,
    lr_at,
    make_optimizer,
)
from grokscope.train.losses import loss_function

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


@dataclass
class BatchData:
    """Each seed's train and test examples, stacked: x (K, n, n_ctx), y (K, n)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @classmethod
    def from_datasets(cls, datasets: list[Dataset], device: torch.device) -> BatchData:
        def stack(get) -> torch.Tensor:
            return torch.stack([torch.as_tensor(get(ds), dtype=torch.int64) for ds in datasets])

        try:
            parts = [
                stack(lambda ds: ds.tokens[ds.train_idx]),
                stack(lambda ds: ds.labels[ds.train_idx]),
                stack(lambda ds: ds.tokens[ds.test_idx]),
                stack(lambda ds: ds.labels[ds.test_idx]),
            ]
        except RuntimeError as e:
            raise ConfigError(f"the seeds' datasets have different sizes: {e}") from None
        return cls(*(p.to(device) for p in parts))

    def select(self, slots: list[int]) -> BatchData:
        """The data of the given slots only."""
        idx = torch.as_tensor(slots, device=self.train_x.device)
        return BatchData(*(t.index_select(0, idx) for t in vars(self).values()))


@dataclass
class BatchedState:
    """Stacked training state of the seeds still training; ``runs[slot]`` is the index (into
    the caller's list of configs) of the run held in slot ``slot``."""

    model: HookedModule  # the template whose forward is mapped over the seeds
    names: list[str]
    params: list[torch.Tensor]  # leaves of shape (K, *param shape)
    optimizer: torch.optim.AdamW
    grad_filter: GradFilter
    runs: list[int]
    init_params: list[torch.Tensor] | None = None
    epoch: int = 0
    step: int = 0
    wall_s: float = 0.0
    t_mem_epoch: list[int | None] = field(default_factory=list)
    t_grok_epoch: list[int | None] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.runs)


def new_batched_state(
    cfgs: list[Config], datasets: list[Dataset], device: torch.device
) -> BatchedState:
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
    return BatchedState(
        model=template,
        names=names,
        params=params,
        optimizer=make_optimizer(cfgs[0].optim, params),
        grad_filter=GradFilter(o, names),
        runs=list(range(k)),
        init_params=init,
        t_mem_epoch=[None] * k,
        t_grok_epoch=[None] * k,
    )


# -- per-seed views of the state: the checkpoint format of grokscope.train.loop ---------------


def seed_tensors(
    state: BatchedState, slot: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights, resume tensors) of one seed, in exactly the format of
    :func:`grokscope.train.loop.state_tensors`, so a batched run's checkpoint resumes alone."""
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


def seed_meta(state: BatchedState, slot: int) -> dict:
    """The scalar training state of one seed (the format of ``loop.state_meta``)."""
    return {
        "epoch": state.epoch,
        "step": state.step,
        "wall_s": state.wall_s,
        "t_mem_epoch": state.t_mem_epoch[slot],
        "t_grok_epoch": state.t_grok_epoch[slot],
    }


def restore_batched_state(
    cfgs: list[Config],
    datasets: list[Dataset],
    device: torch.device,
    snapshots: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]],
    runs: list[int] | None = None,
) -> BatchedState:
    """A batched state stacked from per-seed (weights, resume, meta) snapshots, all taken at the
    same epoch and step (as every seed of one batch is checkpointed together)."""
    metas = [m for _, _, m in snapshots]
    if len({(m["epoch"], m["step"]) for m in metas}) != 1:
        got = sorted({(m["epoch"], m["step"]) for m in metas})
        raise ConfigError(f"seeds resumed as one batch must share epoch and step, got {got}")
    state = new_batched_state(cfgs, datasets, device)
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
    if runs is not None:
        state.runs = list(runs)
    return state


def select_slots(cfg: Config, state: BatchedState, keep: list[int]) -> BatchedState:
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
    return BatchedState(
        model=state.model,
        names=state.names,
        params=params,
        optimizer=optimizer,
        grad_filter=filt,
        runs=[state.runs[s] for s in keep],
        init_params=init,
        epoch=state.epoch,
        step=state.step,
        wall_s=state.wall_s,
        t_mem_epoch=[state.t_mem_epoch[s] for s in keep],
        t_grok_epoch=[state.t_grok_epoch[s] for s in keep],
    )


# -- forward, step, evaluation -------------------------------------------------------------------


def batched_logits(state: BatchedState, x: torch.Tensor) -> torch.Tensor:
    """Logits (K, batch, classes) of every seed's model on its own inputs x (K, batch, n_ctx).

    Models with a stacked pass (the MLP, the one-layer transformer without LayerNorm: see
    :mod:`grokscope.models.stacked_ops`) compute on the stacked weights directly; any other model's
    forward is mapped over the seeds with ``torch.vmap``."""
    model, names = state.model, state.names
    stacked = getattr(model, "stacked_logits", None)
    if stacked is not None:
        logits = stacked(dict(zip(names, state.params, strict=True)), x)
        if logits is not None:
            return logits

    def one(params: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, params, strict=True)), (tokens,))

    return torch.vmap(one)(tuple(state.params), x)


def _seed_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.dim()))


def _per_seed(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) vector shaped to broadcast against ``like`` (K, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def orthogonalize_per_seed(params: list[torch.Tensor], eps: float = 1e-30) -> None:
    """perp-Grad (Prieto et al. 2025) on stacked tensors: for every seed and parameter tensor,
    g <- g - (<w, g> / <w, w>) w, rescaled to the norm of g (as ``orthogonalize_gradients``)."""
    for p in params:
        g, w = p.grad, p.detach()
        dims = _seed_dims(w)
        ww = torch.sum(w * w, dim=dims)
        ok = ww > eps
        norm = torch.linalg.vector_norm(g, dim=dims)
        coef = torch.where(ok, torch.sum(w * g, dim=dims) / torch.where(ok, ww, 1.0), 0.0)
        g.sub_(w * _per_seed(coef, w))
        new_norm = torch.linalg.vector_norm(g, dim=dims)
        scale = torch.where(
            ok & (new_norm > eps), norm / torch.where(new_norm > 0, new_norm, 1.0), 1.0
        )
        g.mul_(_per_seed(scale, g))


@torch.no_grad()
def project_per_seed(params: list[torch.Tensor], target: float) -> None:
    """Rescale each seed's parameters together to total L2 norm ``target`` (Omnigrok's sphere,
    Liu et al. 2023), as ``project_to_norm`` does for one model."""
    sq = sum(torch.sum(p.detach().double() ** 2, dim=_seed_dims(p)) for p in params)
    scale = (target / torch.sqrt(sq)).to(params[0].dtype)
    for p in params:
        p.mul_(_per_seed(scale, p))


def batched_train_step(
    cfg: Config, state: BatchedState, x: torch.Tensor, y: torch.Tensor
) -> list[float]:
    """One optimizer step of every seed; returns each seed's loss before the step.

    A seed whose loss is non-finite is left out of the backward pass (its slot then holds
    garbage); the caller finishes it as diverged, as ``train_step`` + ``run_training`` do.
    """
    o = cfg.optim
    lr = lr_at(state.step, o.lr, o.warmup_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    losses = loss_function(o.loss)(batched_logits(state, x), y)
    values = losses.detach().tolist()
    finite = [s for s, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return values
    state.optimizer.zero_grad(set_to_none=True)
    if len(finite) < len(values):
        losses = losses[torch.as_tensor(finite, device=losses.device)]
    losses.sum().backward()
    apply_update(o, state, lr, orthogonalize_per_seed, project_per_seed)
    return values


def evaluate_batched(
    state: BatchedState, x: torch.Tensor, y: torch.Tensor, loss_name: str
) -> list[dict]:
    """Per seed: loss (float64), accuracy and softmax-collapse share, by
    :func:`grokscope.train.loop.evaluate_split` (the single-model evaluation) on chunks of
    ``EVAL_ROWS / K`` examples per seed."""
    chunk = max(1, EVAL_ROWS // state.k)
    return evaluate_split(lambda xb: batched_logits(state, xb), x, y, loss_name, chunk)


def batched_eval_rows(cfg: Config, state: BatchedState, data: BatchData) -> list[dict]:
    """One metrics row per seed, with the columns of :func:`grokscope.train.loop.eval_row`."""
    tr = evaluate_batched(state, data.train_x, data.train_y, cfg.optim.loss)
    te = evaluate_batched(state, data.test_x, data.test_y, cfg.optim.loss)
    rows = []
    for s in range(state.k):
        wn = float(sum(torch.sum(p.detach()[s].double() ** 2) for p in state.params))
        rows.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "train_loss": tr[s]["loss"],
                "train_acc": tr[s]["acc"],
                "test_loss": te[s]["loss"],
                "test_acc": te[s]["acc"],
                "weight_norm_sq": wn,
                "lr": lr_at(state.step, cfg.optim.lr, cfg.optim.warmup_steps),
                "softmax_collapse": tr[s]["collapse"],
                "wall_s": state.wall_s,
            }
        )
    return rows


# -- the loop ----------------------------------------------------------------------------------


def _orders(cfgs: list[Config], state: BatchedState, n: int, epoch: int) -> list | None:
    """Each seed's mini-batch order for ``epoch`` (the generator of ``loop._batches``), or None
    for full-batch training."""
    bs = cfgs[0].optim.batch_size
    if bs == 0 or bs >= n:
        return None
    out = []
    for run in state.runs:
        gen = torch.Generator().manual_seed(cfgs[run].train.seed * 1_000_003 + epoch)
        out.append(torch.randperm(n, generator=gen))
    return out


@dataclass
class _Loop:
    """Callbacks and bookkeeping of :func:`run_batched_training`."""

    cfgs: list[Config]
    on_eval: Callable[[int, dict], None]
    on_checkpoint: Callable[[BatchedState, list[int]], None]
    on_finish: Callable[[int, dict], None]

    def track(self, state: BatchedState, slot: int, row: dict) -> None:
        r = self.cfgs[state.runs[slot]].train
        if state.t_mem_epoch[slot] is None and row["train_acc"] >= r.mem_threshold:
            state.t_mem_epoch[slot] = row["epoch"]
        if state.t_grok_epoch[slot] is None and row["test_acc"] >= r.grok_threshold:
            state.t_grok_epoch[slot] = row["epoch"]

    def finish(
        self, state: BatchedState, slot: int, name: str, step: int, diverged_epoch: int | None
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


def run_batched_training(
    cfgs: list[Config],
    state: BatchedState,
    data: BatchData,
    on_eval: Callable[[int, dict], None],
    on_checkpoint: Callable[[BatchedState, list[int]], None],
    on_finish: Callable[[int, dict], None],
    stop_requested: Callable[[], bool] = lambda: False,
) -> str:
    """Train every seed of ``state`` to the budget, as :func:`grokscope.train.loop.run_training`
    would train each alone; returns ``done`` or ``interrupted``.

    Callbacks get run indices (positions in ``cfgs``): ``on_eval(run, row)`` for every metrics
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
    if state.epoch == 0:
        for slot, row in enumerate(batched_eval_rows(cfg, state, data)):
            loop.track(state, slot, row)
            on_eval(state.runs[slot], row)
        on_checkpoint(state, list(range(state.k)))
    n = data.train_x.shape[1]
    t0 = time.perf_counter() - state.wall_s
    while state.k and state.epoch < r.epochs:
        orders = _orders(cfgs, state, n, state.epoch)
        starts = [0] if orders is None else list(range(0, n, cfg.optim.batch_size))
        for start in starts:
            if orders is None:
                x, y = data.train_x, data.train_y
            else:
                idx = torch.stack([o[start : start + cfg.optim.batch_size] for o in orders])
                idx = idx.to(data.train_x.device)
                x = torch.gather(
                    data.train_x, 1, idx.unsqueeze(-1).expand(-1, -1, data.train_x.shape[2])
                )
                y = torch.gather(data.train_y, 1, idx)
            step_before = state.step
            losses = batched_train_step(cfg, state, x, y)
            bad = [s for s, v in enumerate(losses) if not math.isfinite(v)]
            if bad:
                state.wall_s = time.perf_counter() - t0
                for s in bad:
                    loop.finish(state, s, "diverged", step_before, state.epoch)
                keep = [s for s in range(state.k) if s not in bad]
                if not keep:
                    return "done"
                state, data = select_slots(cfg, state, keep), data.select(keep)
                if orders is not None:
                    orders = [orders[s] for s in keep]
        state.epoch += 1
        state.wall_s = time.perf_counter() - t0
        stop_early = [
            r.early_stop_after >= 0
            and state.t_grok_epoch[s] is not None
            and state.epoch >= state.t_grok_epoch[s] + r.early_stop_after
            for s in range(state.k)
        ]
        last = [state.epoch == r.epochs or stop for stop in stop_early]
        regular = state.epoch % r.eval_every == 0 or state.epoch in ckpts
        if regular or any(last):
            for s, row in enumerate(batched_eval_rows(cfg, state, data)):
                if regular or last[s]:
                    loop.track(state, s, row)
                    on_eval(state.runs[s], row)
        to_save = [s for s in range(state.k) if state.epoch in ckpts or last[s]]
        if to_save:
            on_checkpoint(state, to_save)
        if any(last):
            for s in range(state.k):
                if last[s]:
                    loop.finish(state, s, "done", state.step, None)
            keep = [s for s in range(state.k) if not last[s]]
            if not keep:
                return "done"
            state, data = select_slots(cfg, state, keep), data.select(keep)
        if stop_requested():
            on_checkpoint(state, list(range(state.k)))
            return "interrupted"
    return "done"
