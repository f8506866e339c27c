"""What ``grokscope train`` will do, decided before anything trains: the new run's name, and
whether to start a run, continue one, train a finished one longer, or do nothing (and why).

The decision refuses what would overwrite or silently re-run a run (GrokscopeError, one line)
and checks the device before anything is written, so a refused command leaves no directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from grokscope import config as config_mod
from grokscope.errors import GrokscopeError
from grokscope.kinds import kind_of
from grokscope.portable import check_portable_process

# the run directory, training and the device check (torch) are imported where they are used,
# after the config's own checks: a mistake there is one line without waiting for torch


@dataclass(frozen=True)
class TrainPlan:
    """What to train: ``cfg`` (resolved), the run directory, the epochs already done (``start``),
    whether it continues an existing run (``resume``), and, when there is nothing to train, the
    message saying why and how to train on (``nothing_to_do``; None otherwise)."""

    cfg: config_mod.Config
    run: Path
    start: int
    resume: bool
    nothing_to_do: str | None = None


def run_id(cfg: config_mod.Config) -> str:
    """The default name of a new run: ``<preset>-<task>-s<seed>-<date>-<time>``, the task part
    named by its kind."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.preset or 'default'}-{kind_of(cfg).run_name(cfg)}-s{cfg.train.seed}-{stamp}"


def plan_training(
    preset: str, overrides: list[str], out: Path, name: str = "", resume: Path | None = None
) -> TrainPlan:
    """A new run ``out/<name or run_id>`` of ``preset`` with ``overrides``, or, with ``resume``,
    the run in that directory: continued, its budget extended (when ``overrides`` are given:
    :func:`~grokscope.orchestrate.train.extend_budget`), or left alone when it is finished."""
    if resume is not None:
        plan = _plan_resume(Path(resume), overrides, name)
        if plan.nothing_to_do is not None:
            return plan
    else:
        plan = _plan_new(preset, overrides, Path(out), name)
    from grokscope.train.core import check_device

    check_device(plan.cfg.train.device)  # before anything is written or printed
    return plan


def _plan_resume(resume: Path, overrides: list[str], name: str) -> TrainPlan:
    if name:
        raise GrokscopeError("--resume continues a run under its own name; drop --name")
    from grokscope.store import rundir

    cfg = rundir.read_config(resume)
    from grokscope.orchestrate.train import extend_budget, finished_reason

    check_portable_process(cfg.train.portable)  # before a new budget is written
    if overrides:
        cfg = extend_budget(resume, overrides)
    elif (why := finished_reason(resume)) is not None:
        st = rundir.read_status(resume)
        hint = {
            "budget": f"to train it longer: grokscope train --resume {resume} --set train.epochs=N",
            "early stop": f"it stopped {cfg.train.early_stop_after} epochs after t_grok; to "
            f"train on: grokscope train --resume {resume} --set train.early_stop_after=-1",
            "diverged": "it diverged; training it longer would diverge again",
        }[why]
        message = (
            f"{resume} is finished ({why}, {st.get('epochs_done')} epochs): nothing to do; " + hint
        )
        return TrainPlan(cfg, resume, st.get("epochs_done", 0), True, message)
    return TrainPlan(cfg, resume, rundir.read_status(resume).get("epochs_done", 0), True)


def _plan_new(preset: str, overrides: list[str], out: Path, name: str) -> TrainPlan:
    cfg = config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), overrides))
    run = out / (name or run_id(cfg))
    if (run / "config.json").exists():
        from grokscope.orchestrate.train import run_is_finished

        hint = (
            "it is finished; pick another --name"
            if run_is_finished(run)
            else f"continue it with: grokscope train --resume {run}"
        )
        raise GrokscopeError(f"{run} already holds a run; {hint}")
    return TrainPlan(cfg, run, 0, False)
