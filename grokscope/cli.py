"""The ``grokscope`` command: parse, call the library, print.

User mistakes (bad config, missing or corrupt run directory) print one line and exit with
status 2; Ctrl-C during training leaves a resumable run and exits with 130.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import typer
from rich import box
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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"grokscope {version('grokscope')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Train small networks on algorithmic tasks, watch them grok, and measure why."""


PLAIN_EVERY_S = 5.0  # seconds between plain progress lines when output is not a terminal


def _run_id(cfg: config_mod.Config) -> str:
    t = cfg.task
    what = {
        "modular": f"{t.op}-p{t.p}",
        "permutation": f"S{t.group_n}-{t.op}",
        "question_formation": f"qf-L{cfg.model.n_layers}",
        "tense_inflection": f"tense-L{cfg.model.n_layers}",
        "dyck": f"dyck{t.dyck_k}-{t.dyck_depth}-L{cfg.model.n_layers}",
        "tree_language": f"tree{t.tree_levels}-P{t.n_train}-L{cfg.model.n_layers}",
    }.get(t.name, f"parity-n{t.n_bits}-k{t.k_bits}")
    what = what.replace("/", "div").replace("*", "mul").replace("^", "").replace(" ", "_")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.preset or 'default'}-{what}-s{cfg.train.seed}-{stamp}"


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 0:
        raise GrokscopeError(f"--threads must be >= 0, got {threads}")


def _say(text: str) -> None:
    """One line of plain output: no markup, no highlighting, and no hard wrap (a terminal wraps
    a long line itself; a log keeps it whole)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _row_stats(row: dict) -> str:
    if "gen_acc" in row:  # a sequence run: in-distribution and generalization accuracy
        return (
            f"id/gen acc {row['id_acc']:.3f}/{row['gen_acc']:.3f} "
            f"loss {row['train_loss']:.2f}/{row['gen_loss']:.2f}"
        )
    return (
        f"acc {row['train_acc']:.3f}/{row['test_acc']:.3f} "
        f"loss {row['train_loss']:.1e}/{row['test_loss']:.1e}"
    )


@contextmanager
def _progress(total: int, start: int, every_s: float | None = None):
    """Progress over epochs, yielding a per-row callback. On a terminal: a rich bar that fits 80
    columns (train/test accuracy and loss, elapsed and remaining time). Otherwise (a log file, a
    pipe, CI): a plain line every ``every_s`` seconds and one for the last row."""
    if not console.is_terminal:
        every_s = PLAIN_EVERY_S if every_s is None else every_s
        t0 = time.monotonic()
        last = {"t": -every_s, "row": None}

        def line(row: dict) -> None:
            console.print(
                f"epoch {row['epoch']}/{total}  {_row_stats(row)}  {time.monotonic() - t0:.0f} s",
                soft_wrap=True,
            )

        def update(row: dict) -> None:
            last["row"] = row
            if time.monotonic() - last["t"] >= every_s:
                last["t"] = time.monotonic()
                last["row"] = None
                line(row)

        yield update
        if last["row"] is not None:
            line(last["row"])
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    width = len(str(total))
    columns = [TextColumn(f"epoch {{task.completed:>{width}.0f}}/{{task.total:.0f}}")]
    if console.width >= 100:
        columns.append(BarColumn(bar_width=20))
    columns += [
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(compact=True),
    ]
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task("train", total=total, completed=start, stats="")

    def update(row: dict) -> None:
        bar.update(task, completed=row["epoch"], stats=_row_stats(row))

    with bar:
        yield update


THREADS_HELP = (
    "CPU threads (default 1: fastest when anything else shares the cores; 0: the libraries' "
    "default, one per core unless OMP_NUM_THREADS says otherwise)"
)


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
) -> None:
    """Train one model and write its run directory.

    Example: grokscope train --preset quick --set task.op=x-y --set train.seed=1
    """
    from grokscope.orchestrate.train import (
        extend_budget,
        finished_reason,
        run_is_finished,
        train_run,
    )
    from grokscope.store import rundir
    from grokscope.train.core import check_device

    _check_threads(threads)
    if resume is not None:
        if name:
            raise GrokscopeError("--resume continues a run under its own name; drop --name")
        cfg = rundir.read_config(resume)
        if set_:
            cfg = extend_budget(resume, set_)
        elif (why := finished_reason(resume)) is not None:
            st = rundir.read_status(resume)
            hint = {
                "budget": f"to train it longer: grokscope train --resume {resume} "
                "--set train.epochs=N",
                "early stop": f"it stopped {cfg.train.early_stop_after} epochs after t_grok; to "
                f"train on: grokscope train --resume {resume} --set train.early_stop_after=-1",
                "diverged": "it diverged; training it longer would diverge again",
            }[why]
            console.print(
                f"{resume} is finished ({why}, {st.get('epochs_done')} epochs): nothing to do; "
                + hint,
                highlight=False,
            )
            return
        run, start = resume, rundir.read_status(resume).get("epochs_done", 0)
    else:
        cfg = config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), set_))
        run, start = out / (name or _run_id(cfg)), 0
        if (run / "config.json").exists():
            hint = (
                "it is finished; pick another --name"
                if run_is_finished(run)
                else f"continue it with: grokscope train --resume {run}"
            )
            raise GrokscopeError(f"{run} already holds a run; {hint}")
    check_device(cfg.train.device)  # before anything is written or printed
    args = (None if resume else cfg, run, resume is not None)
    announced = []

    def announce(row: dict) -> None:
        # the directory is named once training has started, after every check that could
        # still refuse the run (and leave no directory)
        if not announced:
            announced.append(True)
            _say(f"run directory: {run}")

    if quiet:
        status = train_run(*args, progress=announce, threads=threads)
    else:
        with _progress(cfg.train.epochs, start) as update:

            def each(row: dict) -> None:
                announce(row)
                update(row)

            status = train_run(*args, progress=each, threads=threads)
    announce({})
    _print_status(run, status)
    if status["state"] == "interrupted":
        err.print(f"interrupted; continue with: grokscope train --resume {run}")
        raise typer.Exit(130)
    if status["state"] == "diverged":
        err.print(f"diverged: non-finite loss at epoch {status.get('diverged_epoch')}")
        raise typer.Exit(1)


def _print_status(run: Path, status: dict) -> None:
    from grokscope.store import rundir

    if config_mod.is_sequence(rundir.read_config(run).task):
        console.print(
            f"{status['state']}: {status['epochs_done']} steps in {status.get('wall_s', 0):.1f} "
            f"s; t_id={status.get('t_mem_epoch')} t_gen={status.get('t_grok_epoch')} (steps)"
        )
        return
    console.print(
        f"{status['state']}: {status['epochs_done']} epochs in {status.get('wall_s', 0):.1f} s; "
        f"t_mem_epoch={status.get('t_mem_epoch')} t_grok_epoch={status.get('t_grok_epoch')}"
    )


RUN_HEADERS = {
    "train_acc": "train acc",
    "test_acc": "test acc",
    "gen_acc": "gen acc",
    "t_mem_epoch": "t_mem",
    "t_grok_epoch": "t_grok",
}
FORMATS = ("table", "csv", "json")


@app.command()
def runs(
    directory: Path = typer.Argument(Path("runs"), help="folder holding run directories"),
    format_: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
) -> None:
    """List the runs under DIR: task, status, epochs, final accuracies, t_mem, t_grok (epochs).

    Example: grokscope runs runs/ --format csv
    """
    from grokscope.store.query import runs_table

    if format_ not in FORMATS:
        raise GrokscopeError(f"unknown --format {format_!r}; choose one of {', '.join(FORMATS)}")
    df = runs_table(directory)
    df["run"] = [
        str(Path(r).relative_to(directory)) if r != str(directory) else "." for r in df["run"]
    ]
    if format_ == "csv":
        sys.stdout.write(df.to_csv(index=False))
        return
    if format_ == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
        return
    if df.empty:
        console.print(f"no runs under {directory}")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in df.columns:  # long values wrap inside their column, never cut
        table.add_column(RUN_HEADERS.get(c, c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*["-" if _isnull(v) else _fmt(v) for v in row])
    console.print(table)


def _isnull(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() or abs(v) < 1 else str(int(v))
    return str(v)


def _one_line_config(cfg: config_mod.Config) -> str:
    t, m, o = cfg.task, cfg.model, cfg.optim
    task = config_mod.describe_task(t)
    model = {
        "transformer": f"{m.n_layers}-layer transformer d_model {m.d_model}",
        "lm": f"{m.n_layers}-layer {m.ln_position}-LN transformer LM d_model {m.d_model}, "
        f"{m.n_heads} heads, d_ff {m.d_mlp}, dropout {m.dropout:g}",
    }.get(m.kind, f"{m.n_layers}-layer MLP width {m.d_mlp} ({m.act})")
    split = (
        f"{t.n_test} test / {t.n_gen} generalization lines"
        if config_mod.is_sequence(t)
        else f"{t.train_fraction:.0%} train"
    )
    return (
        f"task: {task}, {split}, data seed {t.data_seed}\n"
        f"model: {model}, seed {cfg.train.seed}; AdamW lr {o.lr:g}, wd {o.weight_decay:g}"
        + (f", batch {o.batch_size}" if o.batch_size else "")
    )


def _analysis_lines(summary: dict) -> list[str]:
    """The headline of an analysis (summary.json), as short lines."""
    lines = []
    keys = summary.get("key_frequencies")
    if keys is not None:
        basis = summary.get("fourier_basis")
        lines.append(f"key frequencies {keys}" + (f" over {basis}" if basis else ""))
        share = _fmt_share(summary.get("neuron_single_freq_share"))
        lines.append(f"single-frequency neurons {share}")
    ph = summary.get("phases") or {}
    if ph:
        ends = [ph.get(k) for k in ("memorization_end", "circuit_formation_end", "cleanup_end")]
        lines.append("phases end at epochs {} / {} / {}".format(*ends))
        lines.append("  (memorization / circuit formation / cleanup)")
    return lines


@app.command()
def show(
    run: Path = typer.Argument(..., help="a run directory"),
    as_json: bool = typer.Option(False, "--json", help="everything as one JSON document"),
) -> None:
    """Print what a run is, where it stands, its grokking times and its analysis headline.

    Example: grokscope show runs/quick
    """
    from grokscope.events import event_epoch
    from grokscope.store import rundir

    cfg = rundir.read_config(run)
    status = rundir.read_status(run) if (Path(run) / "status.json").is_file() else {}
    metrics = rundir.read_metrics(run) if (Path(run) / "metrics.parquet").is_file() else None
    mem_col, grok_col = config_mod.event_columns(cfg.task)
    events = {
        "t_mem_epoch": None
        if metrics is None
        else event_epoch(metrics, mem_col, cfg.train.mem_threshold),
        "t_grok_epoch": None
        if metrics is None
        else event_epoch(metrics, grok_col, cfg.train.grok_threshold),
    }
    last = metrics.iloc[-1].to_dict() if metrics is not None and len(metrics) else {}
    summary_path = Path(run) / "summary.json"
    summary = rundir.read_json(summary_path) if summary_path.is_file() else None
    if as_json:
        out = {
            "run": str(run),
            "config": config_mod.to_dict(cfg),
            "status": status,
            **events,
            "last_eval": last,
            "checkpoints": rundir.list_epochs(run),
            "summary": summary,
        }
        console.print_json(json.dumps(out, default=float))
        return
    _say(str(run))
    _say(_one_line_config(cfg))
    _say(
        f"{status.get('state', 'unknown')}: {status.get('epochs_done', 0)} of "
        f"{cfg.train.epochs} {'steps' if config_mod.is_sequence(cfg.task) else 'epochs'}, "
        f"{len(rundir.list_epochs(run))} checkpoints"
        + (f"; error: {status['error']}" if status.get("error") else "")
    )
    seq = config_mod.is_sequence(cfg.task)
    if last and seq:
        _say(
            f"at step {int(last['epoch'])}: in-distribution acc {last['id_acc']:.3f}, "
            f"generalization acc {last['gen_acc']:.3f}; LM loss train {last['train_loss']:.3f} "
            f"gen {last['gen_loss']:.3f}"
        )
    elif last:
        _say(
            f"at epoch {int(last['epoch'])}: train acc {last['train_acc']:.3f} loss "
            f"{last['train_loss']:.2e}; test acc {last['test_acc']:.3f} loss "
            f"{last['test_loss']:.2e}"
        )
    if seq:
        _say(f"t_id {events['t_mem_epoch']}, t_gen {events['t_grok_epoch']} (steps; None: not yet)")
    else:
        _say(
            f"t_mem {events['t_mem_epoch']}, t_grok {events['t_grok_epoch']} "
            "(epochs; None: not yet)"
        )
    if summary is None:
        _say(f"not analysed yet: grokscope analyze {run}")
    else:
        kind = summary.get("kind")
        lines = {"sequence": _sequence_lines, "tree_language": _tree_lines}.get(kind)
        for line in lines(summary) if lines else _analysis_lines(summary):
            _say(line)
        if (Path(run) / "report.html").is_file():
            _say(f"report: {Path(run) / 'report.html'}")


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

    _say(f"wrote {write_report(run)}")


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
    min_dwell: int = typer.Option(
        2, "--min-dwell", help="consecutive checkpoints in a state that count as a visit"
    ),
    threads: int = typer.Option(1, "--threads", "-t", help=THREADS_HELP),
) -> None:
    """Fit a latent-state training map (Hu et al.) over 3 or more runs; write map.json and
    figures. Detour p-values are Holm-adjusted across states (raw ones are kept too).

    Example: grokscope map sweeps/hmm_seeds --out maps/hmm_seeds
    """
    from grokscope.orchestrate.training_map import build_map

    if covariance not in ("diag", "full"):
        raise GrokscopeError(f"--covariance must be diag or full, got {covariance!r}")
    if max_states < 1 or restarts < 1:
        raise GrokscopeError("--max-states and --restarts must be >= 1")
    if scaling not in ("per-run", "pooled"):
        raise GrokscopeError(f"--scaling must be per-run or pooled, got {scaling!r}")
    if min_dwell < 1:
        raise GrokscopeError(f"--min-dwell must be >= 1, got {min_dwell}")
    _check_threads(threads)
    from grokscope.orchestrate.threads import use_threads

    with use_threads(threads):
        result = build_map(
            paths,
            out,
            max_states,
            restarts,
            covariance,
            threshold,
            seed,
            scaling=scaling.replace("-", "_"),
            min_dwell=min_dwell,
        )

    def fmt(x: float | None, spec: str = ".3g") -> str:
        return "-" if x is None else format(x, spec)

    table = Table(
        "state",
        "occupancy",
        "runs visiting",
        "obligatory",
        "detour",
        "p (raw)",
        "p (Holm)",
        "time rho",
        "time p (raw)",
        "time p (Holm)",
    )
    for st in result["states"]:
        table.add_row(
            str(st["id"]),
            f"{st['occupancy']:.2f}",
            str(len(st["visited_runs"])),
            str(st["obligatory"]),
            str(st["detour"]),
            fmt(st["p_value"]),
            fmt(st["p_value_holm"]),
            fmt(st["time_corr"], ".2f"),
            fmt(st["time_p_value"]),
            fmt(st["time_p_value_holm"]),
        )
    console.print(
        f"{result['n_runs']} runs, {result['n_states']} states chosen by BIC "
        f"({scaling} z-scores); a visit = {min_dwell}+ consecutive checkpoints; p-values "
        f"Holm-adjusted across states"
    )
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")
    _say(f"wrote {out / 'map.json'} and {out / 'figures'}")


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="a run directory"),
    every: int = typer.Option(1, "--every", "-k", help="analyse every k-th checkpoint"),
    no_figures: bool = typer.Option(False, "--no-figures", help="skip the PNG figures"),
    per_checkpoint_keys: bool = typer.Option(
        False, "--per-checkpoint-keys", help="recompute key frequencies at every checkpoint"
    ),
    cleanup_rule: str = typer.Option(
        "level_off",
        "--cleanup-rule",
        help="level_off (test loss, Gini and weight norm settle, as the paper describes) or "
        "test_loss_fall (the test loss stops falling fast)",
    ),
    threads: int = typer.Option(1, "--threads", "-t", help=THREADS_HELP),
    curvature_every: int = typer.Option(
        0,
        "--curvature-every",
        help="add Hessian, sharpness and LLC columns at every k-th analysed checkpoint (slow)",
    ),
) -> None:
    """Progress measures, key frequencies and phases of a run (Nanda et al. 2023).

    Writes RUN/analysis.parquet, RUN/summary.json, RUN/figures/*.png and RUN/report.html.
    Example: grokscope analyze runs/nanda2023 --every 2
    """
    from grokscope.orchestrate.analyze import analyze_run
    from grokscope.orchestrate.threads import use_threads

    _check_threads(threads)
    from grokscope.dynamics.phases import CLEANUP_RULES, PhaseParams

    if cleanup_rule not in CLEANUP_RULES:
        raise GrokscopeError(
            f"unknown --cleanup-rule {cleanup_rule!r}; choose one of {', '.join(CLEANUP_RULES)}"
        )
    with use_threads(threads):
        s = analyze_run(
            run,
            every=every,
            per_checkpoint_keys=per_checkpoint_keys,
            figures=not no_figures,
            phase_params=PhaseParams(cleanup_rule=cleanup_rule),
            curvature_every=curvature_every,
        )
    if s.get("kind") in ("sequence", "tree_language"):
        for line in (_sequence_lines if s["kind"] == "sequence" else _tree_lines)(s):
            _say(line)
    else:
        _say(f"{s['checkpoints_analysed']} checkpoints analysed in {s['analysis_wall_s']:.1f} s")
        _say(f"t_mem {s['t_mem_epoch']}, t_grok {s['t_grok_epoch']} (epochs)")
        for line in _analysis_lines(s):
            _say(line)
        for note in s["notes"]:
            _say(f"note: {note}")
    _say(f"wrote {run / 'analysis.parquet'} and {run / 'summary.json'}")
    if not no_figures:
        from grokscope.report.html import write_report

        _say(f"wrote {write_report(run)}")


def _sequence_lines(s: dict) -> list[str]:
    """What ``analyze`` prints for a sequence run."""
    f = {k: (float("nan") if v is None else v) for k, v in s["final"].items()}
    flag = {True: "yes", False: "no", None: "undecided (censored)"}[s["structural_grokking"]]
    lag = s["lag_steps"]
    if lag is None:
        lag = "-" if s["lag_lower_steps"] is None else f"> {s['lag_lower_steps']}"
    return [
        f"{len(s['analysed_epochs'])} checkpoints analysed in {s['analysis_wall_s']:.1f} s",
        f"t_id {s['t_id_step']}, t_gen {s['t_gen_step']} (steps); lag {lag}; "
        f"structural grokking: {flag}",
        f"final: id acc {f['id_acc']:.3f}, gen acc {f['gen_acc']:.3f}, tree score "
        f"{f['tree_score']:.3f}, bracketing F1 {f['bracket_f1']:.3f} "
        f"({s['tree_sentences']} sentences; right-branching trees: "
        f"{s.get('f1_baselines', {}).get('right_branching', float('nan')):.3f})",
    ]


def _tree_lines(s: dict) -> list[str]:
    """What ``analyze`` and ``show`` print for a tree-language run."""
    g = s["grammar"]
    plateaus = ", ".join(f"H{k} {v:.3f}" for k, v in s["plateaus_test"].items() if v is not None)
    times = []
    for k, entry in s["levels"].items():
        te, tr = entry.get("test", {}), entry.get("train", {})
        if not te.get("measurable"):
            times.append(f"level {k}: no signal")
            continue
        t = te.get("t_star")
        rise = "" if te.get("rise") is None else f", rise {te['rise']}"
        gap = "" if entry.get("gap") is None else f", train first by {entry['gap']}"
        times.append(
            f"level {k}: t* {'not reached' if t is None else t} "
            f"(train {tr.get('t_star')}{rise}{gap})"
        )
    order = {True: "yes", False: "no", None: "undecided (no level reached)"}[s["in_order"]]
    return [
        f"{len(s['analysed_epochs'])} checkpoints analysed in {s['analysis_wall_s']:.1f} s",
        f"grammar L={g['levels']} v={g['vocab']} m={g['rules']} s={g['branching']}, "
        f"filter {g['filter_level']}, {s['n_train']} training sequences; test plateaus {plateaus}",
        *times,
        f"levels learned in order: {order}; final test {_final_loss(s)}",
    ]


def _final_loss(s: dict) -> str:
    f = s["final"]
    kl = ", ".join(
        f"KL to level {k} {f[f'kl_l{k}_test']:.3f}"
        for k in s["plateaus_test"]
        if f.get(f"kl_l{k}_test") is not None
    )
    return kl or "-"


def _fmt_share(x) -> str:
    return "-" if x is None else f"{x:.1%}"


# -- sweeps: grids x seeds, batched seeds per cell, local or Ray executor ----------------------


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
    if executor == "local":  # Ray nodes may have devices this machine lacks
        from grokscope.train.core import check_device

        check_device(spec.config(spec.cells()[0], spec.seeds[0]).train.device)
    root = sweep_dir(out, spec)
    tasks = prepare(spec, root)
    total = sum(len(t["runs"]) for t in tasks)
    done0 = count_finished(tasks)
    console.print(
        f"sweep [bold]{spec.name}[/bold]: {len({t['cell'] for t in tasks})} cells x "
        f"{len(spec.seeds)} seeds = {total}"
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

        bar = Progress(
            TextColumn("{task.description:>6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            console=console,
        )
        job = bar.add_task("runs", total=total, completed=done0, last="")
        epochs_done, epochs_total = epochs_progress(tasks)
        epoch_job = bar.add_task("epochs", total=epochs_total, completed=epochs_done, last="")

        def advance(batch: list[dict]) -> None:
            records.extend(batch)
            new = sum(
                r["action"] != "skipped" and r["state"] in ("done", "diverged") for r in batch
            )
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
    console.print(
        f"{total - len(failed)}/{total} runs finished; wrote {root / 'summary.parquet'}"
        f" and {len(figures)} figures"
    )
    if failed:
        err.print(f"{len(failed)} runs did not finish; run the same command again to retry")
        raise typer.Exit(1)


def _is_sequence_sweep(directory: Path, manifest: dict) -> str | bool:
    """The task name of a sweep of sequence runs (truthy), else False."""
    from grokscope.store import rundir

    for item in manifest["runs"]:
        path = Path(directory) / "runs" / item["run"]
        if (path / "config.json").is_file():
            task = rundir.read_config(path).task
            return task.name if config_mod.is_sequence(task) else False
    return False


def _level_sweep_summary(directory: Path, manifest: dict, figures: bool) -> None:
    """What ``sweep-summary`` prints for a sweep of tree-language runs."""
    from grokscope.sweep.level_summary import summarize_levels

    _, cells, sizes, paths = summarize_levels(directory, manifest, figures)
    fields = list(manifest["spec"]["grid"])
    levels = sorted(int(c.split("_l")[1]) for c in cells.columns if c.startswith("reached_l"))
    table = Table(
        *[f.split(".")[-1] for f in fields],
        "done",
        *[f"level {k}: reached, t*" for k in levels],
        *[f"f{k}" for k in levels],
        "in order",
    )
    for _, row in cells.iterrows():
        table.add_row(
            *[_fmt(row[f]) for f in fields],
            f"{row['n_done']}/{row['n_runs']}",
            *[f"{row[f'reached_l{k}']}: {row[f't_star_l{k}']}" for k in levels],
            *[
                "-" if _isnull(row[f"progress_l{k}_mean"]) else f"{row[f'progress_l{k}_mean']:.2f}"
                for k in levels
            ],  # fmt: skip
            f"{row['n_in_order']} yes, {row['n_out_of_order']} no",
        )
    console.print(table)
    for _, row in sizes.iterrows():
        where = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in sizes.columns if "." in k)
        needs = "; ".join(
            f"level {c.split('_l')[1]}: "
            + ("not at any P" if _isnull(row[c]) else f"P >= {int(row[c])}")
            for c in sizes.columns
            if c.startswith("p_needed_l")
        )
        _say(f"training-set size needed ({where or 'all runs'}): {needs}")
    _say(f"wrote {Path(directory) / 'summary.parquet'} and {len(paths)} figures")


def _structural_sweep_summary(directory: Path, manifest: dict, figures: bool) -> None:
    """What ``sweep-summary`` prints for a sweep of sequence runs."""
    from grokscope.sweep.structural_summary import summarize_structural

    _, cells, corr, paths = summarize_structural(directory, manifest, figures)
    fields = list(manifest["spec"]["grid"])

    def f3(v) -> str:
        return "-" if _isnull(v) else f"{v:.3f}"

    table = Table(
        *[f.split(".")[-1] for f in fields],
        "done",
        "gen acc",
        "max gen",
        "structural",
        "tree score",
        "F1",
        "weight norm",
        "attn entropy",
    )
    for _, row in cells.iterrows():
        table.add_row(
            *[_fmt(row[f]) for f in fields],
            f"{row['n_done']}/{row['n_runs']}",
            f3(row["gen_acc_mean"]),
            f3(row["gen_acc_max_mean"]),
            f"{row['n_structural']}/{row['n_done']}",
            f3(row["tree_score_mean"]),
            f3(row["bracket_f1_mean"]),
            f"{row['weight_norm_mean']:.1f}" if not _isnull(row["weight_norm_mean"]) else "-",
            f3(row["attn_entropy_mean"]),
        )
    console.print(table)
    for _, c in corr.iterrows():
        _say(
            f"spearman({c['measure']}, final gen acc) = {f3(c['rho'])} "
            f"(p {f3(c['p'])}, {c['n_runs']} finished and analysed runs)"
        )
    _say(
        f"means over finished runs; wrote {Path(directory) / 'summary.parquet'}, runs.parquet"
        + (f" and {len(paths)} figure" if paths else "")
    )


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

    Writes DIR/summary.parquet, DIR/runs.parquet and DIR/figures/*.png.
    Example: grokscope sweep-summary sweeps/nanda_fraction
    """
    from grokscope.dynamics.sweep_stats import TIME_RATIO
    from grokscope.sweep.summary import grid_fields, read_manifest, summarize

    if time_ratio is not None and lag_fraction is not None:
        raise GrokscopeError("give either --time-ratio or --lag-fraction, not both")
    if time_ratio is not None and not time_ratio >= 1:
        raise GrokscopeError(f"--time-ratio must be >= 1, got {time_ratio:g}")
    if lag_fraction is not None and not lag_fraction >= 0:
        raise GrokscopeError(f"--lag-fraction must be >= 0, got {lag_fraction:g}")
    ratio = TIME_RATIO if time_ratio is None else time_ratio
    manifest = read_manifest(directory)
    if _is_sequence_sweep(directory, manifest) == "tree_language":
        _level_sweep_summary(directory, manifest, figures=not no_figures)
        return
    if _is_sequence_sweep(directory, manifest):
        _structural_sweep_summary(directory, manifest, figures=not no_figures)
        return
    _, cells, figures = summarize(directory, ratio, lag_fraction, figures=not no_figures)
    fields = grid_fields(read_manifest(directory))
    table = Table(
        *[f.split(".")[-1] for f in fields], "grokked", "median t_grok", "95% CI", "phase"
    )

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
    console.print(f"phase rule: {cells['phase_rule'].iloc[0]}")
    _say(f"wrote {Path(directory) / 'summary.parquet'} and {len(figures)} figures")


# -- foresight: delay laws, predictions, early-warning signals ----------------------------------


@app.command("fit-delay")
def fit_delay(
    folder: Path = typer.Argument(..., help="a sweep directory, or a folder of run directories"),
    only: list[str] = typer.Option(
        [], "--only", help="fit on the runs with this config value only: section.field=value"
    ),
) -> None:
    """Fit the delay laws (first passage, norm ratio, inverse rate) on a sweep's grokked runs.

    Prints R^2 and leave-one-out error; writes FOLDER/delay_law.json (first passage, the law
    `predict` uses) and FOLDER/delay_laws.json (all).

    Example: grokscope fit-delay sweeps/delay --only task.train_fraction=0.4
    """
    import json

    from grokscope.orchestrate.foresight import fit_delay_laws

    pairs = {}
    for item in only:
        key, eq, value = item.partition("=")
        if not eq:
            raise GrokscopeError(f"--only takes section.field=value, got {item!r}")
        pairs[key] = value
    table, laws = fit_delay_laws(folder, pairs)
    grokked = table.dropna(subset=["t_mem", "t_grok"])
    _say(f"{len(table)} runs, {len(grokked)} memorized and grokked")
    out = Table("law", "runs", "R^2", "held-out MAPE", "coefficients")
    for kind, law in laws.items():
        if isinstance(law, str):
            out.add_row(kind, "-", "-", "-", law)
            continue
        coef = ", ".join(f"{c:.4g}" for c in law.coef_)
        extra = f"; kappa {law.kappa_:.3g}, V* {law.v_star_:.4g}" if law.kappa_ else ""
        out.add_row(
            kind, str(law.n_), f"{law.r2_:.3f}", f"{law.mape_loo_:.1%}",
            f"[{coef}] + {law.intercept_:.4g}{extra}",
        )  # fmt: skip
    console.print(out)
    fitted = {k: v.to_dict() for k, v in laws.items() if not isinstance(v, str)}
    if isinstance(laws["first_passage"], str):
        raise GrokscopeError(f"no first-passage law: {laws['first_passage']}")
    laws["first_passage"].save(Path(folder) / "delay_law.json")
    (Path(folder) / "delay_laws.json").write_text(json.dumps(fitted, indent=2))
    _say(f"wrote {Path(folder) / 'delay_law.json'} and delay_laws.json")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="a run directory (it needs to have memorized)"),
    law: Path = typer.Option(..., "--law", help="delay_law.json written by grokscope fit-delay"),
) -> None:
    """Predict a run's grokking step from its memorization, or say why it cannot yet.

    T_mem plus the first-passage delay law's delay, with the interval of the law's held-out
    errors. A run that has not memorized gets an answer that says so, not a number.

    Example: grokscope predict runs/quick --law sweeps/delay/delay_law.json
    """
    from grokscope.dynamics.delay_laws import DelayLaw
    from grokscope.orchestrate.foresight import predict_run

    if not law.is_file():
        raise GrokscopeError(f"no delay law at {law} (write one with grokscope fit-delay)")
    try:
        fitted = DelayLaw.load(law)
    except (ValueError, KeyError, TypeError) as e:
        raise GrokscopeError(f"{law} is not a delay law file: {e}") from None
    out = predict_run(run, fitted)
    if out["prediction"] is None:
        _say(f"cannot predict yet: {out['reason']}")
        return
    lo, hi = out["interval"]
    _say(
        f"T_mem step {out['t_mem']}; predicted T_grok step {out['prediction']} "
        f"(90 % interval {lo}..{hi}; law fitted on {out['law']['n']} runs, held-out error "
        f"{out['law']['mape_loo']:.1%})"
    )
    if out["t_grok_observed"] is not None:
        _say(f"observed T_grok step {out['t_grok_observed']}")


@app.command()
def warn(
    folders: list[Path] = typer.Argument(..., help="sweeps or folders of analysed runs, pooled"),
    folds: int = typer.Option(2, "--folds", help="cross-validation folds"),
) -> None:
    """Rank early-warning signals by their held-out hits, false alarms and lead time.

    Each signal's alarm rule is fitted on some runs and scored on the others (hit rate,
    false-alarm rate on runs that never grok, lead time in epochs). Writes early_warning.parquet
    into the first folder.

    Example: grokscope warn sweeps/early_warning
    """
    from grokscope.orchestrate.foresight import rank_signals
    from grokscope.store import rundir

    if folds < 2:
        raise GrokscopeError(f"--folds must be >= 2, got {folds}")
    table = rank_signals(folders, folds)
    folder = folders[0]
    if not len(table):
        raise GrokscopeError(f"no analysed grokking runs under {folder} (run grokscope analyze)")
    out = Table("signal", "held-out hits", "false alarms", "J", "median lead", "lead range", "c")
    for _, r in table.iterrows():
        out.add_row(
            r["signal"], r["hits"], r["false_alarms"],
            "-" if _isnull(r["j"]) else f"{r['j']:.2f}",
            "-" if _isnull(r["lead_median"]) else f"{r['lead_median']:g}",
            "-" if _isnull(r["lead_min"]) else f"{r['lead_min']:g}..{r['lead_max']:g}",
            ", ".join(f"{c:g}" for c in r["c"]),
        )  # fmt: skip
    console.print(out)
    rundir.write_table(Path(folder) / "early_warning.parquet", table.astype({"c": str}))
    _say(f"wrote {Path(folder) / 'early_warning.parquet'}")


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
