"""``grokscope runs``, ``show``, ``config``, ``report`` and ``export-data``: what runs there are,
what one is, and a task's data as files."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from grokscope import config as config_mod
from grokscope.cli.output import console, say
from grokscope.cli.root import app
from grokscope.display import fmt, isnull
from grokscope.errors import GrokscopeError

RUN_HEADERS = {
    "train_acc": "train acc",
    "test_acc": "test acc",
    "gen_acc": "gen acc",
    "t_mem_epoch": "t_mem",
    "t_grok_epoch": "t_grok",
}
FORMATS = ("table", "csv", "json")
ACCURACIES = ("train_acc", "test_acc", "gen_acc")
JUSTIFY = {c: "right" for c in ("p", "seed", "epochs", *ACCURACIES, "t_mem_epoch", "t_grok_epoch")}


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
        console().print(f"no runs under {directory}")
        return
    # a column missing in every run (gen acc among algorithmic runs, op among language
    # models) is left out of the table (csv and json keep it)
    df = df[[c for c in df.columns if c == "run" or not df[c].map(isnull_cell).all()]]
    cells = [[cell_text(c, v) for c, v in zip(df.columns, row, strict=True)] for row in
             df.itertuples(index=False)]  # fmt: skip
    headers = [RUN_HEADERS.get(c, c) for c in df.columns]
    widths = [
        max([len(r[i]) for r in cells] + [max(len(w) for w in h.split())])
        for i, h in enumerate(headers)
    ]
    if sum(widths) + len(widths) - 1 > console().width:
        # too narrow for one line per run: one block per run, nothing cut or split
        for r in cells:
            say(r[0])
            # a "field value" pair stays on one line (no-break spaces while wrapping)
            parts = [
                f"{h} {v}".replace(" ", "\xa0") for h, v in zip(headers[1:], r[1:], strict=True)
            ]
            lines = textwrap.wrap(", ".join(parts), console().width - 2, break_long_words=False,
                                  break_on_hyphens=False)  # fmt: skip
            for line in lines:
                say("  " + line.replace("\xa0", " "))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, c in enumerate(df.columns):
        # every column is as wide as its longest value (a header may take two lines)
        header = headers[i].replace(" ", "\n")
        table.add_column(header, no_wrap=True, min_width=widths[i], justify=JUSTIFY.get(c, "left"))
    for r in cells:
        table.add_row(*r)
    console().print(table)


def isnull_cell(value) -> bool:
    import pandas as pd  # here: the command line starts without pandas

    return value is None or value is pd.NA or value == "" or isnull(value)


def cell_text(column: str, value) -> str:
    """A runs-table cell: '-' for any missing value, accuracies to 3 decimals, integers plain."""
    if isnull_cell(value):
        return "-"
    if column in ACCURACIES:
        return f"{float(value):.3f}"
    return fmt(value)


@app.command()
def show(
    run: Path = typer.Argument(..., help="a run directory"),
    as_json: bool = typer.Option(False, "--json", help="everything as one JSON document"),
) -> None:
    """Print what a run is, where it stands, its grokking times and its analysis headline.

    Example: grokscope show runs/quick
    """
    from grokscope.store import rundir

    rundir.read_config(run)  # a path that is not a run: one line, before torch loads
    from grokscope.orchestrate.load import load_run

    loaded = load_run(run)
    kind, status, summary = loaded.kind, loaded.status or {}, loaded.summary
    if as_json:
        out = {
            "run": str(run),
            "config": config_mod.to_dict(loaded.config),
            "status": status,
            "t_mem_epoch": status.get("t_mem_epoch"),
            "t_grok_epoch": status.get("t_grok_epoch"),
            "last_eval": loaded.last_row(),
            "checkpoints": loaded.epochs,
            "summary": summary,
        }
        console().print_json(json.dumps(out, default=float))
        return
    say(str(run))
    for line in kind.show_lines(loaded):
        say(line)
    if summary is None:
        say(f"not analysed yet: grokscope analyze {run}")
        return
    for line in kind.summary_lines(summary):
        say(line)
    if (Path(run) / "report.html").is_file():
        say(f"report: {Path(run) / 'report.html'}")


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
            console().print(f"{name:28s} {typ:6s} {default!r}")
        return
    cfg = config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), set_))
    console().print_json(config_mod.dumps(cfg))


@app.command()
def report(run: Path = typer.Argument(..., help="a run directory")) -> None:
    """Write RUN/report.html: headline numbers, every figure (embedded) and the config.

    Example: grokscope report runs/quick
    """
    from grokscope.store import rundir

    rundir.read_config(run)  # a path that is not a run: one line, before torch loads
    from grokscope.orchestrate.report import write_report

    say(f"wrote {write_report(run)}")


@app.command("export-data")
def export_data(
    source: str = typer.Argument(..., help="a preset name, a config JSON file or a run directory"),
    out: Path = typer.Argument(..., help="the folder to write (new or empty)"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override: section.field=value"),
) -> None:
    """Write every split of a task's data as Parquet and JSON Lines, with a datasheet.

    Example: grokscope export-data documents_cpu data/documents --set task.n_train=1000
    """
    from grokscope.orchestrate.export import export_data as write
    from grokscope.orchestrate.export import resolve_source

    files = write(resolve_source(source, set_), out)
    console().print(f"wrote {len(files)} files to {out}: {', '.join(f.name for f in files)}")
