"""The ``grokscope`` command: parse, call the library, print.

User mistakes (bad config, missing or corrupt run directory) print one line and exit with
status 2; Ctrl-C during training leaves a resumable run and exits with 130.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from grokscope import config as config_mod
from grokscope.errors import GrokscopeError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Train small networks on algorithmic tasks, watch them grok, and measure why.",
)
console = Console()
err = Console(stderr=True)


def _run_id(cfg: config_mod.Config) -> str:
    t = cfg.task
    what = {"modular": f"{t.op}-p{t.p}", "permutation": f"S{t.group_n}-{t.op}"}.get(
        t.name, f"parity-n{t.n_bits}-k{t.k_bits}"
    )
    what = what.replace("/", "div").replace("*", "mul").replace("^", "").replace(" ", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.preset or 'default'}-{what}-s{cfg.train.seed}-{stamp}"


def _progress_bar(total: int, start: int):
    """A rich progress bar over epochs; returns (context manager, per-row callback)."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("epoch {task.completed:>6.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = bar.add_task("train", total=total, completed=start, stats="")

    def update(row: dict) -> None:
        stats = (
            f"train {row['train_loss']:.2e} / {row['train_acc']:.3f}   "
            f"test {row['test_loss']:.2e} / {row['test_acc']:.3f}"
        )
        bar.update(task, completed=row["epoch"], stats=stats)

    return bar, update


@app.command()
def train(
    preset: str = typer.Option(
        "quick", "--preset", "-p", help="nanda2023, quick, mlp_quad, default"
    ),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="parent directory of the run"),
    name: str = typer.Option("", "--name", help="run id (default: preset-task-seed-time)"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override: section.field=value"),
    resume: Path = typer.Option(None, "--resume", help="continue the run in this directory"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Train one model and write its run directory.

    Example: grokscope train --preset quick --set task.op=x-y --set train.seed=1
    """
    from grokscope.store.runner import train_run

    if resume is not None:
        if set_ or name:
            raise GrokscopeError("--resume continues a run as configured; drop --set / --name")
        from grokscope.store import rundir

        cfg = rundir.read_config(resume)
        run, start = resume, rundir.read_status(resume).get("epochs_done", 0)
    else:
        cfg = config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), set_))
        run, start = out / (name or _run_id(cfg)), 0
    console.print(f"run directory: [bold]{run}[/bold]")
    if quiet:
        status = train_run(None if resume else cfg, run, resume=resume is not None)
    else:
        bar, update = _progress_bar(cfg.train.epochs, start)
        with bar:
            status = train_run(
                None if resume else cfg, run, resume=resume is not None, progress=update
            )
    _print_status(run, status)
    if status["state"] == "interrupted":
        err.print(f"interrupted; continue with: grokscope train --resume {run}")
        raise typer.Exit(130)
    if status["state"] == "diverged":
        err.print(f"diverged: non-finite loss at epoch {status.get('diverged_epoch')}")
        raise typer.Exit(1)


def _print_status(run: Path, status: dict) -> None:
    console.print(
        f"{status['state']}: {status['epochs_done']} epochs in {status.get('wall_s', 0):.1f} s; "
        f"t_mem_epoch={status.get('t_mem_epoch')} t_grok_epoch={status.get('t_grok_epoch')}"
    )


@app.command()
def runs(
    directory: Path = typer.Argument(Path("runs"), help="folder holding run directories"),
) -> None:
    """List the runs under DIR: task, status, epochs, final accuracies, t_mem, t_grok.

    Example: grokscope runs runs/
    """
    from grokscope.store.query import runs_table

    df = runs_table(directory)
    df["run"] = [
        str(Path(r).relative_to(directory)) if r != str(directory) else "." for r in df["run"]
    ]
    if df.empty:
        console.print(f"no runs under {directory}")
        return
    table = Table(*[c for c in df.columns], show_lines=False)
    for row in df.itertuples(index=False):
        table.add_row(*["-" if _isnull(v) else _fmt(v) for v in row])
    console.print(table)


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() or abs(v) < 1 else str(int(v))
    return str(v)


@app.command()
def show(run: Path = typer.Argument(..., help="a run directory")) -> None:
    """Print a run's config, status, t_mem and t_grok (null when not reached).

    Example: grokscope show runs/quick-x+y-p59-s0-20260101-120000
    """
    from grokscope.dynamics.phases import event_epoch
    from grokscope.store import rundir

    cfg = rundir.read_config(run)
    status = rundir.read_status(run)
    metrics = rundir.read_metrics(run)
    events = {
        "t_mem_epoch": event_epoch(metrics, "train_acc", cfg.train.mem_threshold),
        "t_grok_epoch": event_epoch(metrics, "test_acc", cfg.train.grok_threshold),
    }
    last = metrics.iloc[-1].to_dict() if len(metrics) else {}
    out = {
        "run": str(run),
        "config": config_mod.to_dict(cfg),
        "status": status,
        **events,
        "last_eval": last,
        "checkpoints": rundir.list_epochs(run),
    }
    console.print_json(json.dumps(out, default=float))


@app.command("config")
def show_config(
    preset: str = typer.Option("quick", "--preset", "-p", help="preset to start from"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override: section.field=value"),
    fields: bool = typer.Option(False, "--fields", help="list every field with type and default"),
) -> None:
    """Print the resolved config of a preset with overrides (or every field with --fields).

    Example: grokscope config --preset nanda2023 --set optim.weight_decay=0.5
    """
    if fields:
        for name, typ, default in config_mod.field_reference():
            console.print(f"{name:28s} {typ:6s} {default!r}")
        return
    cfg = config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), set_))
    console.print_json(config_mod.dumps(cfg))


@app.command()
def report(run: Path = typer.Argument(..., help="a run directory")) -> None:
    """Write RUN/report.html: headline numbers, every figure (embedded) and the config.

    Example: grokscope report runs/quick
    """
    from grokscope.report.html import write_report

    console.print(f"wrote {write_report(run)}")


@app.command("map")
def map_(
    paths: list[Path] = typer.Argument(..., help="run directories or folders of runs (sweeps)"),
    out: Path = typer.Option(Path("training_map"), "--out", "-o", help="output folder"),
    max_states: int = typer.Option(8, help="largest number of HMM states tried (from 1)"),
    restarts: int = typer.Option(5, help="EM restarts per number of states"),
    covariance: str = typer.Option("diag", help="diag or full"),
    threshold: float = typer.Option(None, help="test accuracy defining convergence"),
    seed: int = typer.Option(0, help="seed of the held-out split and the restarts"),
    scaling: str = typer.Option(
        "per-run", help="z-score features per run (the paper) or pooled over all runs"
    ),
) -> None:
    """Fit a latent-state training map (Hu et al.) over many runs; write map.json and figures.

    Example: grokscope map sweeps/hmm-seeds --out maps/hmm-seeds
    """
    from grokscope.latent_map import build_map

    if covariance not in ("diag", "full"):
        raise GrokscopeError(f"--covariance must be diag or full, got {covariance!r}")
    if max_states < 1 or restarts < 1:
        raise GrokscopeError("--max-states and --restarts must be >= 1")
    if scaling not in ("per-run", "pooled"):
        raise GrokscopeError(f"--scaling must be per-run or pooled, got {scaling!r}")
    result = build_map(
        paths, out, max_states, restarts, covariance, threshold, seed,
        scaling=scaling.replace("-", "_"),
    )
    table = Table("state", "occupancy", "runs visiting", "obligatory", "detour", "p_value")
    for st in result["states"]:
        p = st["p_value"]
        table.add_row(str(st["id"]), f"{st['occupancy']:.2f}", str(len(st["visited_runs"])),
                      str(st["obligatory"]), str(st["detour"]), "-" if p is None else f"{p:.3g}")
    console.print(
        f"{result['n_runs']} runs, {result['n_states']} states chosen by BIC "
        f"({scaling} z-scores)"
    )
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out / 'map.json'} and {out / 'figures'}")


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="a run directory"),
    every: int = typer.Option(1, "--every", "-k", help="analyse every k-th checkpoint"),
    no_figures: bool = typer.Option(False, "--no-figures", help="skip the PNG figures"),
    per_checkpoint_keys: bool = typer.Option(
        False, "--per-checkpoint-keys", help="recompute key frequencies at every checkpoint"
    ),
) -> None:
    """Progress measures, key frequencies and phases of a run (Nanda et al. 2023).

    Writes RUN/analysis.parquet, RUN/summary.json, RUN/figures/*.png and RUN/report.html.
    Example: grokscope analyze runs/nanda2023 --every 2
    """
    from grokscope.analyze import analyze_run

    s = analyze_run(
        run, every=every, per_checkpoint_keys=per_checkpoint_keys, figures=not no_figures
    )
    ph = s["phases"]
    console.print(
        f"{s['checkpoints_analysed']} checkpoints in {s['analysis_wall_s']:.1f} s; "
        f"key frequencies {s['key_frequencies']}; "
        f"single-frequency neurons {_fmt_share(s['neuron_single_freq_share'])}"
    )
    console.print(
        f"t_mem_epoch={s['t_mem_epoch']} t_grok_epoch={s['t_grok_epoch']}; phases end at "
        f"memorization {ph['memorization_end']}, circuit formation "
        f"{ph['circuit_formation_end']}, cleanup {ph['cleanup_end']}"
    )
    for note in s["notes"]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {run / 'analysis.parquet'} and {run / 'summary.json'}")
    if not no_figures:
        from grokscope.report.html import write_report

        console.print(f"wrote {write_report(run)}")


def _fmt_share(x) -> str:
    return "-" if x is None else f"{x:.1%}"


# -- sweeps (issue 4): grids x seeds, batched seeds per cell, local or Ray executor ------------


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
) -> None:
    """Run every grid cell x seed of a sweep file; re-running finishes what is missing.

    Example: grokscope sweep examples/sweep_nanda_fraction.toml --out sweeps
    """
    from grokscope.sweep.executor import (
        count_finished,
        epochs_progress,
        prepare,
        run_sweep,
        sweep_dir,
    )
    from grokscope.sweep.spec import load_sweep
    from grokscope.sweep.summary import summarize

    spec = load_sweep(file)
    if executor not in ("local", "ray"):
        raise GrokscopeError(f"unknown executor {executor!r}; choose local or ray")
    root = sweep_dir(out, spec)
    tasks = prepare(spec, root)
    total = sum(len(t["runs"]) for t in tasks)
    done0 = count_finished(tasks)
    console.print(
        f"sweep [bold]{spec.name}[/bold]: {len(tasks)} cells x {len(spec.seeds)} seeds = {total}"
        f" runs ({done0} already finished) in {root}"
    )
    records: list[dict] = []
    if quiet:
        run_sweep(spec, out, executor, workers, address, threads, records.extend, tasks)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console)
        job = bar.add_task("runs", total=total, completed=done0, last="")
        epochs_done, epochs_total = epochs_progress(tasks)
        epoch_job = bar.add_task("epochs", total=epochs_total, completed=epochs_done, last="")

        def advance(batch: list[dict]) -> None:
            records.extend(batch)
            new = sum(r["action"] != "skipped" and r["state"] in ("done", "diverged")
                      for r in batch)
            bar.update(job, advance=new, last=f"{batch[0]['cell']}")

        # epochs trained so far, read from the runs' status files (checkpoint granularity),
        # so the bar moves while a cell trains, whatever the executor
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(2.0):
                bar.update(epoch_job, completed=epochs_progress(tasks)[0])

        watcher = threading.Thread(target=poll, daemon=True)
        with bar:
            watcher.start()
            try:
                run_sweep(spec, out, executor, workers, address, threads, advance, tasks)
            finally:
                stop.set()
                watcher.join()
                bar.update(epoch_job, completed=epochs_progress(tasks)[0])
    failed = [r for r in records if r["state"] not in ("done", "diverged")]
    for r in failed:
        err.print(f"{r['run']}: {r['state']} ({r.get('error')})", highlight=False, markup=False)
    runs_df, cells_df, figures = summarize(root)
    console.print(f"{total - len(failed)}/{total} runs finished; wrote {root / 'summary.parquet'}"
                  f" and {len(figures)} figures")
    if failed:
        err.print(f"{len(failed)} runs did not finish; run the same command again to retry")
        raise typer.Exit(1)


@app.command("sweep-summary")
def sweep_summary(
    directory: Path = typer.Argument(..., help="a sweep folder (holding sweep.json)"),
    lag_fraction: float = typer.Option(
        0.01, "--lag-fraction", help="grokking lag as a share of the budget (Liu et al.: 1e3/1e5)"
    ),
    no_figures: bool = typer.Option(False, "--no-figures", help="skip the PNG figures"),
) -> None:
    """Per-cell grokking-time medians (Kaplan-Meier, censored), share grokked, phase classes.

    Writes DIR/summary.parquet, DIR/runs.parquet and DIR/figures/*.png.
    Example: grokscope sweep-summary sweeps/nanda_fraction
    """
    from grokscope.sweep.summary import grid_fields, read_manifest, summarize

    _, cells, figures = summarize(directory, lag_fraction, figures=not no_figures)
    fields = grid_fields(read_manifest(directory))
    table = Table(*[f.split(".")[-1] for f in fields], "grokked", "median t_grok", "95% CI",
                  "phase")

    def num(v) -> str:
        return "inf" if _isnull(v) else f"{v:g}"

    for _, row in cells.iterrows():
        median = "not reached" if _isnull(row["t_grok_median"]) else f"{row['t_grok_median']:g}"
        lo, hi = row["t_grok_lo"], row["t_grok_hi"]
        table.add_row(
            *[_fmt(row[f]) for f in fields],
            f"{row['n_grokked']}/{row['n_runs']}",
            median,
            "-" if _isnull(lo) else f"{num(lo)}..{num(hi)}",
            str(row["phase"]),
        )
    console.print(table)
    console.print(f"wrote {Path(directory) / 'summary.parquet'} and {len(figures)} figures")


def main() -> None:
    """Entry point: run the app, turning user mistakes into one line and exit status 2."""
    try:
        app()
    except GrokscopeError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
