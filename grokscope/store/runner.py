"""Train a config into a run directory, or resume one: the loop wired to durable files.

Metrics and status are rewritten (atomically) at every checkpoint; a resume truncates the
metrics to the checkpoint it continues from, so a resumed run's table equals the uninterrupted
one's. SIGINT / SIGTERM finish the current epoch, save a checkpoint and mark the run
``interrupted``; a hard kill leaves the last checkpoint and everything written before it.
"""

from __future__ import annotations

import signal
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

from grokscope import config as config_mod
from grokscope.errors import RunDirError
from grokscope.store import rundir
from grokscope.tasks import build_dataset
from grokscope.train.loop import (
    TaskTensors,
    new_state,
    resolve_device,
    restore_state,
    run_training,
    set_determinism,
    state_meta,
    state_tensors,
)


@contextmanager
def _stop_flag():
    """Turn SIGINT / SIGTERM into a flag checked at epoch boundaries (main thread only)."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not in the main thread: no handlers, the flag stays False
        pass
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def train_run(
    cfg: config_mod.Config | None,
    run: Path,
    resume: bool = False,
    progress=None,
) -> dict:
    """Train ``cfg`` into the new directory ``run`` (or continue it with ``resume=True``).

    ``progress`` is an optional callable taking each metrics row (the CLI's progress bar).
    Returns the final status dict.
    """
    run = Path(run)
    if resume:
        cfg = rundir.read_config(run)
        epoch, weights, resume_tensors, meta = rundir.load_resume(run)
        # rows up to the checkpoint; from epoch 0 the loop evaluates epoch 0 again itself
        table = rundir.read_metrics(run).to_dict("records") if epoch > 0 else []
        rows = [r for r in table if r["epoch"] <= epoch]
    else:
        assert cfg is not None
        config_mod.resolve(cfg)
        if (run / "config.json").exists():
            raise RunDirError(f"{run} already holds a run; use --resume to continue it")
        run.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run, cfg)
        rows = []

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    set_determinism(cfg.train.deterministic, device)
    ds = build_dataset(cfg.task)
    state = new_state(cfg, ds, device)
    if resume:
        restore_state(state, weights, resume_tensors, meta)
    data = TaskTensors.from_dataset(ds, device)
    rundir.write_status(
        run,
        state="running",
        device=str(device),
        epochs_done=state.epoch,
        epochs_budget=cfg.train.epochs,
        t_mem_epoch=state.t_mem_epoch,
        t_grok_epoch=state.t_grok_epoch,
        error=None,
        diverged_epoch=None,
    )

    def on_eval(row: dict) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    def on_checkpoint(st) -> None:
        weights_, resume_ = state_tensors(st)
        # metrics first: a kill between the two leaves rows past the newest checkpoint, which a
        # resume truncates, never a checkpoint without its metrics
        rundir.write_metrics(run, rows)
        rundir.save_checkpoint(run, st.epoch, weights_, resume_, state_meta(st))
        _status(run, st, "running")

    with _stop_flag() as flag:
        try:
            outcome = run_training(cfg, state, data, on_eval, on_checkpoint, lambda: flag["stop"])
        except Exception as e:  # noqa: BLE001 - recorded in the run, then re-raised
            rundir.write_metrics(run, rows)
            _status(
                run,
                state,
                "failed",
                error=f"{e.__class__.__name__}: {e}",
                traceback=traceback.format_exc(limit=5),
            )
            raise
    if outcome["state"] == "interrupted":
        on_checkpoint(state)
    rundir.write_metrics(run, rows)
    return _status(run, state, outcome["state"], diverged_epoch=outcome["diverged_epoch"])


def _status(run: Path, state, name: str, **extra) -> dict:
    return rundir.write_status(
        run,
        state=name,
        epochs_done=state.epoch,
        step=state.step,
        wall_s=round(state.wall_s, 3),
        t_mem_epoch=state.t_mem_epoch,
        t_grok_epoch=state.t_grok_epoch,
        **extra,
    )
