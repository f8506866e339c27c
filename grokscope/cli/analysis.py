"""``grokscope analyze`` (one run's measures, phases and figures) and ``map`` (the latent-state
training map over runs)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grokscope.cli.output import console, say
from grokscope.cli.root import PORTABLE_HELP, THREADS_HELP, app, check_threads
from grokscope.errors import GrokscopeError


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
    from grokscope.dynamics.hmm import check_map_options
    from grokscope.store.query import collect_runs

    check_map_options(max_states, restarts, covariance, scaling, min_dwell, threads)
    collect_runs(paths)  # paths without runs: one line, before torch loads
    from grokscope.orchestrate.training_map import build_map

    result = build_map(
        paths, out, max_states, restarts, covariance, threshold, seed,
        scaling=scaling, min_dwell=min_dwell, threads=threads,
    )  # fmt: skip
    console().print(
        f"{result['n_runs']} runs, {result['n_states']} states chosen by BIC "
        f"({scaling} z-scores); a visit = {min_dwell}+ consecutive checkpoints; p-values "
        f"Holm-adjusted across states"
    )
    console().print(_state_table(result["states"]))
    for note in result["notes"]:
        console().print(f"note: {note}")
    say(f"wrote {out / 'map.json'} and {out / 'figures'}")


def _state_table(states: list[dict]) -> Table:
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
    for st in states:
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
    return table


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
    portable: bool = typer.Option(False, "--portable", help=PORTABLE_HELP),
) -> None:
    """Progress measures, key frequencies and phases of a run (Nanda et al. 2023).

    Writes RUN/analysis.parquet, RUN/summary.json, RUN/figures/*.png and RUN/report.html.
    Example: grokscope analyze runs/nanda2023 --every 2
    """
    from grokscope.dynamics.phases import CLEANUP_RULES, PhaseParams
    from grokscope.store import rundir

    check_threads(threads)
    if cleanup_rule not in CLEANUP_RULES:
        raise GrokscopeError(
            f"unknown --cleanup-rule {cleanup_rule!r}; choose one of {', '.join(CLEANUP_RULES)}"
        )
    cfg = rundir.read_config(run)  # a path that is not a run: one line, before torch loads
    from grokscope.orchestrate.analyze import analyze_run
    from grokscope.orchestrate.threads import use_threads

    with use_threads(threads):
        s = analyze_run(
            run,
            every=every,
            per_checkpoint_keys=per_checkpoint_keys,
            figures=not no_figures,
            phase_params=PhaseParams(cleanup_rule=cleanup_rule),
            curvature_every=curvature_every,
        )
    from grokscope.kinds import kind_of

    for line in kind_of(cfg).analysis_lines(s):
        say(line)
    say(f"wrote {run / 'analysis.parquet'} and {run / 'summary.json'}")
    if not no_figures:
        from grokscope.orchestrate.report import write_report

        say(f"wrote {write_report(run)}")
