"""Run a sweep: every grid cell's seeds as one batch, cells in parallel, re-runs idempotent.

Layout::

    <out>/<name>/sweep.json                 the spec, its cells and run ids
    <out>/<name>/runs/<cell>-s<seed>/       ordinary run directories (train_run's files)
    <out>/<name>/summary.parquet            per-cell statistics (grokscope sweep-summary)

The unit of work is a cell: :func:`grokscope.orchestrate.cell.run_cell` brings each of its runs
to a final state (skip finished runs, resume checkpointed ones as batches, start the rest). A
worker whose parent sweep process died exits, so a killed sweep leaves no orphan still writing.

Executors: ``local`` (default) runs cells in a pool of spawned processes, one per core, each with
``threads`` torch threads; ``ray`` sends the same ``run_cell`` calls to a Ray cluster (the
sweep directory must then be on a filesystem every node sees). Both give identical numbers on
one machine (or nodes with the same CPU), because the same function trains the same batches with
the same thread count.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grokscope import config as config_mod
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.kinds import trains_alone
from grokscope.orchestrate.cell import FINISHED, run_cell, run_state
from grokscope.store import rundir
from grokscope.sweep.spec import SweepSpec, load_sweep, run_id

EXECUTORS = ("local", "ray")


def sweep_dir(out: Path, spec: SweepSpec) -> Path:
    """Where a sweep lives: ``<out>/<name>``."""
    return Path(out) / spec.name


def prepare(spec: SweepSpec, root: Path) -> list[dict[str, Any]]:
    """Write (or check) sweep.json; returns one task per cell for :func:`run_cell` (one per run
    for sequence tasks).

    A directory that already holds a different sweep is an error: re-running means the same spec.
    """
    root = Path(root)
    manifest = {
        "spec": spec.to_dict(),
        "cells": [{"cell": c.name, "values": c.values} for c in spec.cells()],
        "runs": [{"run": rid, "cell": c.name, "seed": s} for c, s, rid in spec.runs()],
    }
    path = root / "sweep.json"
    if path.is_file():
        old = rundir.read_json(path)
        if old.get("spec") != manifest["spec"]:
            raise GrokscopeError(
                f"{root} holds a different sweep; give another --out or another name"
            )
    else:
        rundir.write_json(path, {**manifest, "created": rundir.now()})
    (root / "runs").mkdir(parents=True, exist_ok=True)
    tasks = []
    for cell in spec.cells():
        runs = [
            {"run": run_id(cell, s), "config": config_mod.to_dict(spec.config(cell, s))}
            for s in spec.seeds
        ]
        # a cell's seeds train as one batch, unless the kind trains each seed alone (an
        # intervention at memorization): then each seed is a task of its own
        groups = [[r] for r in runs] if trains_alone(spec.config(cell, 0)) else [runs]
        for group in groups:
            tasks.append({"root": str(root.resolve()), "cell": cell.name, "runs": group})
    return tasks


def check_sweep_batches(spec: SweepSpec) -> None:
    """Every cell's seeds can train as one batch here (the kind's rule, and the memory they
    need: :func:`grokscope.train.memory.check_batch_memory`); ConfigError naming the cell
    otherwise. Each distinct task is built once."""
    import json

    from grokscope.config import ConfigError
    from grokscope.kinds import build_dataset, kind_of
    from grokscope.train.core import run_device
    from grokscope.train.memory import check_batch_memory

    built: dict[str, object] = {}
    for cell in spec.cells():
        cfgs = [config_mod.resolve(spec.config(cell, s)) for s in spec.seeds]
        if trains_alone(cfgs[0]):
            cfgs = cfgs[:1]
        key = json.dumps(config_mod.to_dict(cfgs[0])["task"], sort_keys=True)
        try:
            kind_of(cfgs[0]).check_batch(cfgs)
            if key not in built:
                built[key] = build_dataset(cfgs[0].task)
            check_batch_memory(cfgs, built[key], run_device(cfgs[0]))
        except ConfigError as e:
            raise ConfigError(f"cell {cell.name}: {e}") from None


def start_sweep(
    file: Path, out: Path, executor: str = "local", portable: bool = False
) -> tuple[SweepSpec, Path, list[dict[str, Any]]]:
    """Load a sweep file and get its folder ready to run: (spec, sweep folder, tasks);
    ``portable`` makes every run portable (``train.portable``; part of the spec, so a sweep
    keeps the mode it was started in).

    Refuses an unknown executor and, for the local one, a device this machine lacks (Ray nodes
    may have devices it lacks), before sweep.json is written; see :func:`prepare`.
    """
    from grokscope.train.core import check_device

    spec = load_sweep(file)
    if portable:
        spec.set["train.portable"] = True
    check_executor(executor)
    if executor == "local":
        check_device(spec.config(spec.cells()[0], spec.seeds[0]).train.device)
        check_sweep_batches(spec)
    root = sweep_dir(out, spec)
    return spec, root, prepare(spec, root)


def check_executor(executor: str) -> None:
    """GrokscopeError unless ``executor`` is one of :data:`EXECUTORS`."""
    if executor not in EXECUTORS:
        raise GrokscopeError(f"unknown executor {executor!r}; choose {' or '.join(EXECUTORS)}")


def count_finished(tasks: list[dict[str, Any]]) -> int:
    """How many runs of the tasks are already done or diverged."""
    return sum(
        run_state(Path(t["root"]) / "runs" / r["run"]) in FINISHED for t in tasks for r in t["runs"]
    )


def epochs_progress(tasks: list[dict[str, Any]]) -> tuple[int, int]:
    """(epochs trained, epochs budgeted) over every run of the tasks, from the runs' status
    files: the epoch of each running run's latest checkpoint, the whole budget of a finished
    one (also when it stopped early). Read from disk, so it sees every executor's workers."""
    done = total = 0
    for t in tasks:
        for r in t["runs"]:
            budget = int(r["config"]["train"]["epochs"])
            total += budget
            try:
                status = rundir.read_status(Path(t["root"]) / "runs" / r["run"])
            except (OSError, ValueError, RunDirError):
                continue  # not started yet (or being written): nothing counted
            if status.get("state") in FINISHED:
                done += budget
            else:
                done += min(budget, int(status.get("epochs_done") or 0))
    return done, total


# set in a pool worker once Ctrl-C reached it: the worker then starts no further cell
_STOPPING = {"yes": False}


def _note_stop(signum, frame) -> None:
    _STOPPING["yes"] = True


def _worker_init(parent: int) -> None:
    """In a pool worker: Ctrl-C while idle only marks the worker as stopping (training installs
    its own graceful handler), and the worker exits when the sweep process that started us is
    gone."""
    signal.signal(signal.SIGINT, _note_stop)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _interrupted(records: list[dict[str, Any]]) -> bool:
    return any(r["state"] == "interrupted" for r in records)


def _worker_cell(task: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """A cell in a pool worker, unless Ctrl-C already reached this worker: the pool hands a
    worker its next queued cell as soon as it returns an interrupted one, before the sweep
    process can cancel it, and such a cell must not start."""
    if _STOPPING["yes"]:
        return _not_started(task)
    records = run_cell(task, threads)
    if _interrupted(records):
        _STOPPING["yes"] = True
    return records


def _not_started(task: dict[str, Any]) -> list[dict[str, Any]]:
    return _records(task, "not started (interrupted)", None)


def run_local(
    tasks: list[dict[str, Any]],
    workers: int,
    threads: int,
    on_result: Callable[[list[dict[str, Any]]], None],
) -> None:
    """Run cells in ``workers`` spawned processes (in this process when ``workers`` is 1).

    Ctrl-C (or SIGTERM to an in-process sweep) lets the running batches checkpoint, starts no
    further cell and raises KeyboardInterrupt; the same command continues the sweep.
    """
    if workers <= 1:
        for task in tasks:
            records = run_cell(task, threads)
            on_result(records)
            if _interrupted(records):
                raise KeyboardInterrupt
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
    )
    try:
        futures = {pool.submit(_worker_cell, task, threads): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                records = future.result()
            except BrokenProcessPool as e:  # a worker died (killed, out of memory)
                records = _lost(task, f"worker process died: {e}")
            on_result(records)
            if _interrupted(records):
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def _lost(task: dict[str, Any], error: str) -> list[dict[str, Any]]:
    return _records(task, "lost", error)


def _records(task: dict[str, Any], action: str, error: str | None) -> list[dict[str, Any]]:
    """One record per run of a cell that this call did not train: its state as it stands."""
    return [
        {
            "run": r["run"],
            "cell": task["cell"],
            "state": run_state(Path(task["root"]) / "runs" / r["run"]),
            "action": action,
            "error": error,
        }
        for r in task["runs"]
    ]


def run_ray(
    tasks: list[dict[str, Any]],
    workers: int,
    threads: int,
    on_result: Callable[[list[dict[str, Any]]], None],
    address: str | None = None,
) -> None:
    """Run cells as Ray tasks (``threads`` CPUs each). Without ``address`` a local Ray instance
    with ``workers * threads`` CPUs is started and stopped again."""
    try:
        import ray
    except ImportError:
        raise GrokscopeError("the ray executor needs Ray: pip install 'grokscope[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            _connect(ray, address)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_cell)
        pending = {remote.remote(task, threads): task for task in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(done[0])
            try:
                on_result(ray.get(done[0]))
            except ray.exceptions.RayError as e:
                on_result(_lost(task, f"ray task failed: {e.__class__.__name__}"))
    finally:
        if started:
            ray.shutdown()


def _connect(ray, address: str) -> None:
    """Join the Ray cluster at ``address``, or one line saying why not. Ray >= 2.59 turns token
    authentication on for clusters started with ``ray start --head``: every other node and
    every driver then needs ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (what
    ``ray get-auth-token`` prints on the head), docs/sweeps.md."""
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        cause = f"{e} {e.__cause__ or ''}"
        hint = (
            "; the cluster asks for its token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to "
            "what `ray get-auth-token` prints on the head"
            if "auth" in cause.lower()
            else ""
        )
        raise GrokscopeError(f"could not join the Ray cluster at {address}{hint}") from None


def _ray_cell(task: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """A cell as a Ray task: :func:`run_cell`, each record marked with the Ray node that ran
    it (``node``), so a sweep across a cluster says where each run trained."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return [{**record, "node": node} for record in run_cell(task, threads)]


def default_workers() -> int:
    """One worker per core."""
    return max(1, os.cpu_count() or 1)


def default_threads(workers: int) -> int:
    """Torch threads per worker: OMP_NUM_THREADS when set, else cores // workers (at least 1).

    More threads than free cores hurts badly on a shared machine (threads spin while they wait),
    so an explicit OMP_NUM_THREADS wins.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // workers)


def run_sweep(
    spec: SweepSpec,
    out: Path,
    executor: str = "local",
    workers: int = 0,
    address: str | None = None,
    threads: int = 0,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
    tasks: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run (or finish) the sweep under ``out/<name>``; returns one record per run.

    ``workers`` 0 means one per core; ``threads`` 0 means :func:`default_threads`.
    ``on_result`` sees each cell's records as it finishes.
    """
    check_executor(executor)
    workers = workers or default_workers()
    threads = threads or default_threads(workers)
    if tasks is None:
        tasks = prepare(spec, sweep_dir(out, spec))
    results: list[dict[str, Any]] = []

    def collect(records: list[dict[str, Any]]) -> None:
        results.extend(records)
        if on_result is not None:
            on_result(records)

    todo = []
    for task in tasks:  # cells with nothing left to do are not sent to a worker
        states = [run_state(Path(task["root"]) / "runs" / r["run"]) for r in task["runs"]]
        if all(s in FINISHED for s in states):
            collect(
                [
                    {
                        "run": r["run"],
                        "cell": task["cell"],
                        "state": s,
                        "action": "skipped",
                        "error": None,
                    }
                    for r, s in zip(task["runs"], states, strict=True)
                ]
            )
        else:
            todo.append(task)
    if todo and executor == "local":
        run_local(todo, min(workers, len(todo)), threads, collect)
    elif todo:
        run_ray(todo, workers, threads, collect, address)
    return results
