"""How the commands print: the two consoles, one plain line, number formats, training progress.

The consoles are ``grokscope.cli.console`` and ``grokscope.cli.err``, looked up at every call,
so whoever replaces them there (a test, an embedding program) redirects every command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


def console() -> Console:
    """The console of standard output (``grokscope.cli.console``)."""
    from grokscope import cli

    return cli.console


def err() -> Console:
    """The console of standard error (``grokscope.cli.err``)."""
    from grokscope import cli

    return cli.err


def say(text: str) -> None:
    """One line of plain output: no markup, no highlighting, and no hard wrap (a terminal wraps
    a long line itself; a log keeps it whole)."""
    console().print(text, highlight=False, markup=False, soft_wrap=True)


@contextmanager
def progress(
    total: int, start: int, stats: Callable[[dict], str], every_s: float | None = None
) -> Iterator[Callable[[dict], None]]:
    """Progress over epochs, yielding a per-row callback; ``stats`` words a metrics row. On a
    terminal: a rich bar that fits 80 columns (the row's stats, elapsed and remaining time).
    Otherwise (a log file, a pipe, CI): a plain line every ``every_s`` seconds (default
    ``grokscope.cli.PLAIN_EVERY_S``) and one for the last row."""
    if console().is_terminal:
        with _bar(total, start, stats) as update:
            yield update
        return
    from grokscope import cli

    with _plain(total, stats, cli.PLAIN_EVERY_S if every_s is None else every_s) as update:
        yield update


@contextmanager
def _plain(total: int, stats: Callable[[dict], str], every_s: float) -> Iterator:
    t0 = time.monotonic()
    last = {"t": -every_s, "row": None}

    def line(row: dict) -> None:
        console().print(
            f"epoch {row['epoch']}/{total}  {stats(row)}  {time.monotonic() - t0:.0f} s",
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


@contextmanager
def _bar(total: int, start: int, stats: Callable[[dict], str]) -> Iterator:
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    width = len(str(total))
    columns = [TextColumn(f"epoch {{task.completed:>{width}.0f}}/{{task.total:.0f}}")]
    if console().width >= 100:
        columns.append(BarColumn(bar_width=20))
    columns += [
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(compact=True),
    ]
    bar = Progress(*columns, console=console(), transient=False)
    task = bar.add_task("train", total=total, completed=start, stats="")

    def update(row: dict) -> None:
        bar.update(task, completed=row["epoch"], stats=stats(row))

    with bar:
        yield update
