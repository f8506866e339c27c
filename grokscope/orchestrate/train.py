"""Train configs into run directories, or resume them: the training core wired to durable files.

One driver serves one run and a batch of K seeds (:mod:`grokscope.train.core` trains one run as
K = 1). Each seed's directory gets its own config.json, status.json, metrics.parquet and
checkpoints, in one format, so every other layer treats a batched run like any other and any
checkpoint resumes alone or in a batch.

Metrics and status are rewritten (atomically) at every checkpoint, metrics first: a kill between
the two leaves rows past the newest checkpoint, which a resume truncates, never a checkpoint
without its metrics. A resume truncates the metrics to the checkpoint it continues from, so a
resumed run's table equals the uninterrupted one's. SIGINT / SIGTERM finish the current epoch,
save a checkpoint and mark the runs ``interrupted``; a hard kill leaves the last checkpoint and
everything written before it. A run that has already finished is left untouched by a resume;
training longer is explicit (:func:`extend_budget`).
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from grokscope import config as config_mod
from grokscope.errors import RunDirError
from grokscope.kinds import build_dataset, kind_of, trains_alone
from grokscope.models import check_context
from grokscope.orchestrate.threads import use_threads
from grokscope.portable import check_portable_machine, check_portable_process, portable_record
from grokscope.store import rundir
from grokscope.store.dashboards import Dashboards, check_log_to
from grokscope.train.core import (
    TrainState,
    check_batch,
    check_device,
    is_finished,
    new_state,
    restore_state,
    run_device,
    run_training,
    seed_meta,
    seed_tensors,
    set_determinism,
)
from grokscope.train.memory import check_batch_memory

Progress = Callable[[int, dict], None]


@contextmanager
def stop_flag() -> Iterator[dict]:
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


def finished_reason(run: Path) -> str | None:
    """Why resuming ``run`` would change nothing: ``budget`` (all epochs trained), ``early stop``
    (stopped ``early_stop_after`` epochs after t_grok) or ``diverged``; None when it would
    train (no status yet, or interrupted, running, failed)."""
    run = Path(run)
    try:
        status = rundir.read_status(run)
    except RunDirError:
        return None
    state = status.get("state")
    if state == "diverged":
        return "diverged"
    if state != "done":
        return None
    r = rundir.read_config(run).train
    done = status.get("epochs_done", 0)
    if not is_finished(r, {"epoch": done, **status}):
        return None
    return "budget" if done >= r.epochs else "early stop"


def run_is_finished(run: Path) -> bool:
    """True when resuming ``run`` would change nothing (see :func:`finished_reason`)."""
    return finished_reason(run) is not None


# what a resume may change: the budget and the machine it runs on, nothing that defines the run
RESUME_FIELDS = ("train.epochs", "train.early_stop_after", "train.device", "train.threads")


def extend_budget(run: Path, overrides: list[str]) -> config_mod.Config:
    """Change a run before resuming it: its budget (``train.epochs``, at least the epochs done;
    ``train.early_stop_after``) and where it runs (``train.device``, ``train.threads``), since
    everything else defines the run. Checked whole before ``config.json`` is rewritten: an
    unavailable device, a budget below the epochs done or a change that would still leave
    nothing to train is refused and writes nothing."""
    run = Path(run)
    cfg = rundir.read_config(run)
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    if not keys <= set(RESUME_FIELDS):
        bad = ", ".join(sorted(keys - set(RESUME_FIELDS)))
        raise config_mod.ConfigError(
            f"a resumed run may only change {', '.join(RESUME_FIELDS)}; not {bad}"
        )
    budget = cfg.train.epochs
    new = config_mod.resolve(config_mod.apply_overrides(cfg, overrides))
    check_device(new.train.device)
    if new.optim.lr_decay != "none" and new.train.epochs != budget:
        raise config_mod.ConfigError(
            f"{run} decays its learning rate to 0 at train.epochs={budget}; a new "
            "budget would bend that schedule mid-run (equal to no uninterrupted run)"
        )
    status = rundir.read_status(run) if (run / "status.json").is_file() else {}
    done = status.get("epochs_done", 0)
    if new.train.epochs < done:
        raise config_mod.ConfigError(
            f"train.epochs={new.train.epochs} is below the {done} epochs already done"
        )
    if status.get("state") == "diverged":
        raise config_mod.ConfigError(f"{run} diverged; training it longer would diverge again")
    if status.get("state") == "done" and is_finished(new.train, {"epoch": done, **status}):
        why = (
            f"it stopped early after t_grok (train.early_stop_after="
            f"{new.train.early_stop_after}); add --set train.early_stop_after=-1"
            if done < new.train.epochs
            else f"train.epochs={new.train.epochs} adds no epochs"
        )
        raise config_mod.ConfigError(f"{run} would train nothing: {why}")
    rundir.write_config(run, new)
    return new


def _check_mode(cfg: config_mod.Config, threads: int | None) -> None:
    """A portable run needs this process in the portable environment and a machine where it
    holds, and one thread; a native run must not run inside it (:mod:`grokscope.portable`)."""
    check_portable_process(cfg.train.portable)
    if cfg.train.portable:
        check_portable_machine()
        if threads not in (None, 0, 1):
            raise config_mod.ConfigError(f"a portable run uses one thread, not --threads {threads}")


def _status_fields(state: TrainState, slot: int, name: str) -> dict:
    return {
        "state": name,
        "epochs_done": state.epoch,
        "step": state.step,
        "wall_s": round(state.wall_s, 3),
        "t_mem_epoch": state.t_mem_epoch[slot],
        "t_grok_epoch": state.t_grok_epoch[slot],
    }


def train_runs(
    cfgs: list[config_mod.Config] | None,
    runs: list[Path],
    resume: bool = False,
    progress: Progress | None = None,
    threads: int | None = None,
) -> list[dict]:
    """Train ``cfgs`` (differing only in train.seed / task.data_seed) into the new directories
    ``runs`` as one batch, or continue them with ``resume=True`` (their newest complete
    checkpoints must share one epoch). ``progress(run_index, row)`` sees every metrics row;
    ``threads`` overrides ``train.threads``. Returns the final status dict of each run, in order.
    """
    runs = [Path(r) for r in runs]
    finished = [run_is_finished(r) for r in runs] if resume else []
    if any(finished):
        # finished runs are left untouched; the others resume as a batch
        todo = [r for r, f in zip(runs, finished, strict=True) if not f]
        each = None if progress is None else (lambda i, row: progress(runs.index(todo[i]), row))
        trained = train_runs(None, todo, True, each, threads) if todo else []
        done = dict(zip(todo, trained, strict=True))
        return [done[r] if r in done else rundir.read_status(r) for r in runs]
    if resume:
        cfgs = [rundir.read_config(r) for r in runs]
        snapshots, rows = [], []
        for run in runs:
            epoch, weights, resume_tensors, meta = rundir.load_resume(run)
            snapshots.append((weights, resume_tensors, meta))
            table = rundir.read_metrics(run).to_dict("records")
            # from epoch 0 the loop evaluates epoch 0 again itself
            rows.append([row for row in table if row["epoch"] <= epoch] if epoch > 0 else [])
        epochs = sorted({m["epoch"] for _, _, m in snapshots})
        if len(epochs) > 1:
            raise RunDirError(
                f"runs resumed as one batch must stand at one checkpoint epoch, got {epochs}"
            )
        check_batch(cfgs)
        check_device(cfgs[0].train.device)
        _check_mode(cfgs[0], threads)
        check_log_to(cfgs[0].train.log_to)
    else:
        assert cfgs is not None and len(cfgs) == len(runs)
        for cfg in cfgs:
            config_mod.resolve(cfg)
        check_batch(cfgs)
        check_device(cfgs[0].train.device)  # before any directory is made
        _check_mode(cfgs[0], threads)
        for run in runs:
            if (run / "config.json").exists():
                raise RunDirError(f"{run} already holds a run; use --resume to continue it")
        # a task that cannot be built (too few distinct sentences, an empty split) is refused
        # before any directory is made
        if trains_alone(cfgs[0]) and len(cfgs) > 1:
            raise config_mod.ConfigError("interventions at T_mem train one seed at a time")
        kind_of(cfgs[0]).check_batch(cfgs)
        datasets = [build_dataset(c.task) for c in cfgs]
        for cfg, ds in zip(cfgs, datasets, strict=True):
            check_context(cfg.model, ds.n_ctx)
        check_batch_memory(cfgs, datasets[0], run_device(cfgs[0]))
        check_log_to(cfgs[0].train.log_to)
        for cfg, run in zip(cfgs, runs, strict=True):
            run.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run, cfg)
        rows = [[] for _ in runs]

    portable = cfgs[0].train.portable
    with use_threads(1 if portable else cfgs[0].train.threads if threads is None else threads):
        device = run_device(cfgs[0])
        set_determinism(cfgs[0].train.deterministic, device)
        if resume:
            datasets = [build_dataset(c.task) for c in cfgs]
            state = restore_state(cfgs, datasets, device, snapshots)
        else:
            state = new_state(cfgs, datasets, device)
        kind = kind_of(cfgs[0])
        data = kind.train_data(cfgs, datasets, device)
        for slot, run in enumerate(runs):
            rundir.write_status(
                run,
                names=kind.status_names(),
                state="running",
                device=str(device),
                epochs_done=state.epoch,
                epochs_budget=cfgs[slot].train.epochs,
                t_mem_epoch=state.t_mem_epoch[slot],
                t_grok_epoch=state.t_grok_epoch[slot],
                error=None,
                diverged_epoch=None,
                **({"portable": portable_record()} if portable else {}),
            )
        return _drive(cfgs, runs, rows, state, data, kind.event_rules(), progress)


@contextmanager
def closing_all(boards: list):
    """Close every dashboard when training ends, however it ends."""
    try:
        yield
    finally:
        for board in boards:
            if board is not None:
                board.close()


def _drive(cfgs, runs, rows, state: TrainState, data, events, progress) -> list[dict]:
    final: dict[int, dict] = {}
    latest: dict[str, TrainState] = {"state": state}
    boards = [
        Dashboards(cfg, run, state.epoch) if cfg.train.log_to else None
        for cfg, run in zip(cfgs, runs, strict=True)
    ]

    def on_eval(i: int, row: dict) -> None:
        rows[i].append(row)
        if boards[i] is not None:
            boards[i].log(row)
        if progress is not None:
            progress(i, row)

    def on_checkpoint(st: TrainState, slots: list[int]) -> None:
        latest["state"] = st
        for slot in slots:
            i = st.runs[slot]
            weights, resume_ = seed_tensors(st, slot)
            rundir.write_metrics(runs[i], rows[i])
            rundir.save_checkpoint(runs[i], st.epoch, weights, resume_, seed_meta(st, slot))
            rundir.write_status(runs[i], **_status_fields(st, slot, "running"))

    def on_finish(i: int, status: dict) -> None:
        rundir.write_metrics(runs[i], rows[i])
        final[i] = rundir.write_status(runs[i], **status)

    with stop_flag() as flag, closing_all(boards):
        try:
            outcome = run_training(
                cfgs, state, data, events, on_eval, on_checkpoint, on_finish, lambda: flag["stop"]
            )
        except Exception as e:  # noqa: BLE001 - recorded in every unfinished run, then re-raised
            for i, run in enumerate(runs):
                if i not in final:
                    rundir.write_metrics(run, rows[i])
                    final[i] = rundir.write_status(
                        run,
                        state="failed",
                        error=f"{e.__class__.__name__}: {e}",
                        traceback=traceback.format_exc(limit=5),
                    )
            raise
    if outcome == "interrupted":
        st = latest["state"]
        for slot, i in enumerate(st.runs):
            final[i] = rundir.write_status(runs[i], **_status_fields(st, slot, "interrupted"))
    return [final[i] for i in range(len(runs))]


def train_run(
    cfg: config_mod.Config | None,
    run: Path,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    threads: int | None = None,
) -> dict:
    """Train ``cfg`` into the new directory ``run`` (or continue it with ``resume=True``): a batch
    of one. ``progress`` is an optional callable taking each metrics row. Returns the final
    status dict."""
    each = None if progress is None else (lambda i, row: progress(row))
    return train_runs(None if cfg is None else [cfg], [run], resume, each, threads)[0]
