"""``grokscope fit-delay``, ``predict`` and ``warn``: delay laws, predictions, early warnings."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from grokscope.cli.output import console, say
from grokscope.cli.root import app
from grokscope.display import isnull
from grokscope.errors import GrokscopeError


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
    from grokscope.orchestrate.foresight import fit_delay_laws, write_delay_laws

    pairs = {}
    for item in only:
        key, eq, value = item.partition("=")
        if not eq:
            raise GrokscopeError(f"--only takes section.field=value, got {item!r}")
        pairs[key] = value
    table, laws = fit_delay_laws(folder, pairs)
    grokked = table.dropna(subset=["t_mem", "t_grok"])
    say(f"{len(table)} runs, {len(grokked)} memorized and grokked")
    out = Table("law", "runs", "R^2", "held-out MAPE", "coefficients")
    for name, law in laws.items():
        if isinstance(law, str):
            out.add_row(name, "-", "-", "-", law)
            continue
        coef = ", ".join(f"{c:.4g}" for c in law.coef_)
        extra = f"; kappa {law.kappa_:.3g}, V* {law.v_star_:.4g}" if law.kappa_ else ""
        out.add_row(
            name, str(law.n_), f"{law.r2_:.3f}", f"{law.mape_loo_:.1%}",
            f"[{coef}] + {law.intercept_:.4g}{extra}",
        )  # fmt: skip
    console().print(out)
    law_path, _ = write_delay_laws(folder, laws)
    say(f"wrote {law_path} and delay_laws.json")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="a run directory (it needs to have memorized)"),
    law: Path = typer.Option(..., "--law", help="delay_law.json written by grokscope fit-delay"),
) -> None:
    """Predict a run's grokking step from its memorization, or say why it cannot yet.

    T_mem plus the first-passage delay law's delay, with the law's jackknife+ interval (from
    its leave-one-out fits). A run that has not memorized gets an answer that says so.

    Example: grokscope predict runs/quick --law sweeps/delay/delay_law.json
    """
    from grokscope.orchestrate.foresight import predict_run, read_delay_law

    out = predict_run(run, read_delay_law(law))
    if out["prediction"] is None:
        say(f"cannot predict yet: {out['reason']}")
        return
    lo, hi = out["interval"]
    say(
        f"T_mem step {out['t_mem']}; predicted T_grok step {out['prediction']} "
        f"({out['law']['coverage']:.0%} interval {lo}..{hi}; law fitted on {out['law']['n']} "
        f"runs, held-out error "
        f"{out['law']['mape_loo']:.1%})"
    )
    if out["t_grok_observed"] is not None:
        say(f"observed T_grok step {out['t_grok_observed']}")


@app.command()
def warn(
    folders: list[Path] = typer.Argument(..., help="sweeps or folders of analysed runs, pooled"),
    folds: int = typer.Option(2, "--folds", help="cross-validation folds"),
    controls: str = typer.Option(
        "like",
        "--controls",
        help="like: only runs with a grokking run's hyperparameters that did not grok (other "
        "seeds); all: every run that memorized and did not grok",
    ),
) -> None:
    """Rank early-warning signals by their held-out hits, false alarms and lead time.

    Each signal's alarm rule is fitted on some runs and scored on the others (hit rate,
    false-alarm rate on runs that never grok, lead time in epochs). Controls are like-for-like
    by default: runs trained as a grokking run was, that did not grok. Writes
    early_warning.parquet into the first folder.

    Example: grokscope warn sweeps/early_warning
    """
    from grokscope.orchestrate.foresight import warning_signals, write_warning_table

    table = warning_signals(folders, folds, controls)
    out = Table(
        "signal", "held-out hits", "false alarms", "J", "median lead to T_grok", "lead range",
        "median lead to onset", "warned before onset", "c",
    )  # fmt: skip
    for _, r in table.iterrows():
        out.add_row(
            r["signal"], r["hits"], r["false_alarms"],
            "-" if isnull(r["j"]) else f"{r['j']:.2f}",
            "-" if isnull(r["lead_median"]) else f"{r['lead_median']:g}",
            "-" if isnull(r["lead_min"]) else f"{r['lead_min']:g}..{r['lead_max']:g}",
            "-" if isnull(r["onset_lead_median"]) else f"{r['onset_lead_median']:g}",
            r["before_onset"],
            ", ".join(f"{c:g}" for c in r["c"]),
        )  # fmt: skip
    console().print(out)
    if controls == "like" and (table["false_alarms"].str.endswith("/0")).all():
        say(
            "no like-for-like controls (runs with a grokking run's settings that did not grok): "
            "J is undecided; --controls all scores against runs from other regimes"
        )
    say(f"wrote {write_warning_table(folders[0], table)}")
