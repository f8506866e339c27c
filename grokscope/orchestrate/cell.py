"""One sweep cell brought to a final state: the unit of work of every sweep executor.

A run whose status is ``done`` or ``diverged`` is skipped; one with a complete checkpoint is
resumed (seeds standing at the same checkpoint epoch resume together as a batch); anything else
(never started, or killed before its first checkpoint) is started afresh. A failing batch is
recorded as ``failed`` in its runs and the other batches go on. The cell is trained under an
exclusive lock, so a re-run never trains a run twice at the same time.
"""

from __future__ import annotations

import contextlib
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grokscope import config as config_mod
from grokscope.errors import RunDirError
from grokscope.kinds import trains_alone
from grokscope.orchestrate.train import train_runs
from grokscope.store import rundir

FINISHED = ("done", "diverged")


def run_state(run: Path) -> str:
    """``done`` / ``diverged`` / ``running`` ... from status.json, or ``new`` without one."""
    try:
        return str(rundir.read_status(run).get("state", "new"))
    except RunDirError:
        return "new"


@contextlib.contextmanager
def _cell_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (blocking) held while a cell trains (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _resume_epoch(run: Path) -> int | None:
    try:
        return rundir.load_resume(run)[0]
    except RunDirError:
        return None


def run_cell(task: dict[str, Any], threads: int = 1) -> list[dict[str, Any]]:
    """Bring every run of one cell to a final state (the unit of work of every executor).

    Returns one record per run: run, cell, state (after this call), action (skipped, trained,
    resumed) and error (None unless the batch failed).
    """
    root = Path(task["root"])
    records: dict[str, dict[str, Any]] = {}
    # the lock guards the runs of this task: a whole cell, or one run where a cell's seeds are
    # tasks of their own (sequence runs), so that those run side by side
    key = task["cell"] if len(task["runs"]) > 1 else task["runs"][0]["run"]
    with _cell_lock(root / "runs" / f".{key}.lock"):
        fresh: list[tuple[Path, config_mod.Config]] = []
        resume: dict[int, list[Path]] = {}
        for item in task["runs"]:
            run = root / "runs" / item["run"]
            state = run_state(run)
            if state in FINISHED:
                records[item["run"]] = {"state": state, "action": "skipped", "error": None}
                continue
            epoch = _resume_epoch(run) if run.is_dir() else None
            if epoch is not None:
                resume.setdefault(epoch, []).append(run)
            else:
                if run.exists():  # killed before its first checkpoint: start over
                    shutil.rmtree(run)
                fresh.append((run, config_mod.from_dict(item["config"])))
        batches: list[tuple[str, list[Path], list | None]] = []
        if fresh and trains_alone(fresh[0][1]):
            # a kind that trains each seed alone (an intervention at memorization)
            batches += [("trained", [r], [c]) for r, c in fresh]
        elif fresh:
            batches.append(("trained", [r for r, _ in fresh], [c for _, c in fresh]))
        for epoch in sorted(resume):
            group = resume[epoch]
            if trains_alone(rundir.read_config(group[0])):
                batches += [("resumed", [r], None) for r in group]
            else:
                batches.append(("resumed", group, None))
        for action, runs, cfgs in batches:
            try:
                statuses = train_runs(cfgs, runs, resume=cfgs is None, threads=threads)
                for run, status in zip(runs, statuses, strict=True):
                    records[run.name] = {
                        "state": status["state"],
                        "action": action,
                        "error": status.get("error"),
                    }
            except Exception as e:  # noqa: BLE001 - recorded; the other batches and cells go on
                error = f"{e.__class__.__name__}: {e}"
                for run in runs:
                    records[run.name] = {
                        "state": "failed",
                        "action": action,
                        "error": error,
                        "traceback": traceback.format_exc(limit=5),
                    }
    return [
        {"run": item["run"], "cell": task["cell"], **records[item["run"]]} for item in task["runs"]
    ]
