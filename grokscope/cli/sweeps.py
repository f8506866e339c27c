"""``grokscope sweep`` (grids x seeds, local or Ray) and ``sweep-summary`` (per-cell tables)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.table import Table

from grokscope.cli.output import console, err, say
from grokscope.cli.root import PORTABLE_HELP, app
from grokscope.errors import GrokscopeError


@app.command()
def sweep(
    file: Path = typer.Argument(..., help="sweep file (TOML): preset, set and grid tables, seeds"),
    out: Path = typer.Option(Path("sweeps"), "--out", "-o", help="parent of the sweep folder"),
    executor: str = typer.Option("local", "--executor", "-e", help="local or ray"),
    address: str = typer.Option(None, "--address", help="Ray cluster address (default: local)"),
    workers: int = typer.Option(0, "--workers", "-w", help="parallel cells (0: one per core)"),
    threads: int = typer.Option(
        0, "--threads", help="torch threads per worker (0: OMP_NUM_THREADS, else cores/workers)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    portable: bool = typer.Option(False, "--portable", help=PORTABLE_HELP),
) -> None:
    """Run every grid cell x seed of a sweep file; re-running finishes what is missing.

    Example: grokscope sweep examples/sweep_nanda_fraction.toml --out sweeps
    """
    from grokscope.sweep.spec import load_sweep

    load_sweep(file)  # a mistake in the file: one line, before torch loads
    from grokscope.sweep.executor import count_finished, run_sweep, start_sweep
    from grokscope.sweep.summary import summarize_sweep

    spec, root, tasks = start_sweep(file, out, executor, portable)
    total = sum(len(t["runs"]) for t in tasks)
    done0 = count_finished(tasks)
    console().print(
        f"sweep [bold]{spec.name}[/bold]: {len({t['cell'] for t in tasks})} cells x "
        f"{len(spec.seeds)} seeds = {total}"
        f" runs ({done0} already finished) in {root}"
    )
    records: list[dict] = []
    if quiet:
        run_sweep(spec, out, executor, workers, address, threads, records.extend, tasks)
    else:
        with _bars(tasks, total, done0, records) as advance:
            run_sweep(spec, out, executor, workers, address, threads, advance, tasks)
    failed = [r for r in records if r["state"] not in ("done", "diverged")]
    for r in failed:
        err().print(f"{r['run']}: {r['state']} ({r.get('error')})", highlight=False, markup=False)
    figures = summarize_sweep(root).figures
    console().print(
        f"{total - len(failed)}/{total} runs finished; wrote {root / 'summary.parquet'}"
        f" and {len(figures)} figures"
    )
    nodes = {r["node"] for r in records if r.get("node")}
    if nodes:
        trained = len({r["cell"] for r in records if r.get("node")})
        console().print(f"{trained} cells trained on {len(nodes)} Ray node(s)")
    if failed:
        err().print(f"{len(failed)} runs did not finish; run the same command again to retry")
        raise typer.Exit(1)


@contextmanager
def _bars(tasks: list[dict], total: int, done0: int, records: list[dict]) -> Iterator:
    """Two rich bars while the sweep runs, yielding the per-cell callback (which keeps every
    record in ``records``): finished runs, advanced per cell, and epochs trained, polled from
    the runs' status files (:func:`~grokscope.sweep.progress.watch_epochs`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from grokscope.sweep.executor import epochs_progress
    from grokscope.sweep.progress import watch_epochs

    bar = Progress(
        TextColumn("{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console(),
    )
    job = bar.add_task("runs", total=total, completed=done0, last="")
    epochs_done, epochs_total = epochs_progress(tasks)
    epoch_job = bar.add_task("epochs", total=epochs_total, completed=epochs_done, last="")

    def advance(batch: list[dict]) -> None:
        records.extend(batch)
        new = sum(r["action"] != "skipped" and r["state"] in ("done", "diverged") for r in batch)
        bar.update(job, advance=new, last=f"{batch[0]['cell']}")

    with bar, watch_epochs(tasks, lambda done: bar.update(epoch_job, completed=done)):
        yield advance


@app.command("sweep-summary")
def sweep_summary(
    directory: Path = typer.Argument(..., help="a sweep folder (holding sweep.json)"),
    time_ratio: float | None = typer.Option(
        None,
        "--time-ratio",
        help="phase rule (default): grokking when t_val90 > R x t_train90 (default R = 10)",
    ),
    lag_fraction: float | None = typer.Option(
        None,
        "--lag-fraction",
        help="phase rule instead: grokking when t_val90 - t_train90 > F x budget (Liu: 1e3/1e5)",
    ),
    no_figures: bool = typer.Option(False, "--no-figures", help="skip the PNG figures"),
) -> None:
    """Per-cell grokking-time medians (Kaplan-Meier, censored), share grokked, phase classes.

    Writes DIR/summary.parquet, DIR/runs.parquet, DIR/figures/*.png and DIR/sweep.html (one
    page: the table, every run's curves, links to the runs' reports).
    Example: grokscope sweep-summary sweeps/nanda_fraction
    """
    from grokscope.dynamics.sweep_stats import TIME_RATIO
    from grokscope.sweep.summary import summarize_sweep

    if time_ratio is not None and lag_fraction is not None:
        raise GrokscopeError("give either --time-ratio or --lag-fraction, not both")
    if time_ratio is not None and not time_ratio >= 1:
        raise GrokscopeError(f"--time-ratio must be >= 1, got {time_ratio:g}")
    if lag_fraction is not None and not lag_fraction >= 0:
        raise GrokscopeError(f"--lag-fraction must be >= 0, got {lag_fraction:g}")
    from grokscope.store.sweepdir import read_manifest

    read_manifest(directory)  # not a sweep: one line, before the statistics load
    ratio = TIME_RATIO if time_ratio is None else time_ratio
    view = summarize_sweep(
        directory, figures=not no_figures, time_ratio=ratio, lag_fraction=lag_fraction
    )
    table = Table(*view.headers)
    for row in view.rows:
        table.add_row(*row)
    console().print(table)
    for line in view.lines:
        say(line)
