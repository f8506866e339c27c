"""``grokscope train``: plan the run (:mod:`grokscope.orchestrate.plan`), train it, print."""

from __future__ import annotations

from pathlib import Path

import typer

from grokscope.cli.output import console, err, progress, say
from grokscope.cli.root import PORTABLE_HELP, THREADS_HELP, app, check_threads


@app.command()
def train(
    preset: str = typer.Option(
        "quick",
        "--preset",
        "-p",
        help="quick, nanda2023, mlp_quad, structural_cpu, murty_qf, murty_tense or default",
    ),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="parent directory of the run"),
    name: str = typer.Option("", "--name", help="run id (default: preset-task-seed-time)"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override: section.field=value"),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="continue the run in this directory (with --set train.epochs=N: "
        "train a finished run longer)",
    ),
    threads: int = typer.Option(None, "--threads", "-t", help=THREADS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
    portable: bool = typer.Option(False, "--portable", help=PORTABLE_HELP),
) -> None:
    """Train one model and write its run directory.

    Example: grokscope train --preset quick --set task.op=x-y --set train.seed=1
    """
    from grokscope.orchestrate.plan import plan_training

    check_threads(threads)
    if portable and resume is None:
        set_ = [*set_, "train.portable=true"]
    plan = plan_training(preset, set_, out, name, resume)
    if plan.nothing_to_do is not None:
        console().print(plan.nothing_to_do, highlight=False)
        return
    status = _train(plan, quiet, threads)
    from grokscope.kinds import kind_of

    console().print(kind_of(plan.cfg).status_text(status))
    if status["state"] == "interrupted":
        err().print(f"interrupted; continue with: grokscope train --resume {plan.run}")
        raise typer.Exit(130)
    if status["state"] == "diverged":
        err().print(f"diverged: non-finite loss at epoch {status.get('diverged_epoch')}")
        raise typer.Exit(1)


def _train(plan, quiet: bool, threads: int | None) -> dict:
    """Train the planned run, naming its directory once training has started (after every
    check that could still refuse the run and leave no directory); its final status."""
    from grokscope.kinds import kind_of
    from grokscope.orchestrate.train import train_run

    args = (None if plan.resume else plan.cfg, plan.run, plan.resume)
    announced = []

    def announce(row: dict) -> None:
        if not announced:
            announced.append(True)
            say(f"run directory: {plan.run}")

    if quiet:
        status = train_run(*args, progress=announce, threads=threads)
    else:
        with progress(plan.cfg.train.epochs, plan.start, kind_of(plan.cfg).progress_text) as update:

            def each(row: dict) -> None:
                announce(row)
                update(row)

            status = train_run(*args, progress=each, threads=threads)
    announce({})
    return status
