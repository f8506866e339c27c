"""The typer application every command registers on, its ``--version`` and shared options."""

from __future__ import annotations

import typer

from grokscope.cli.output import console
from grokscope.errors import GrokscopeError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Train small networks on algorithmic tasks, watch them grok, and measure why.",
)

PORTABLE_HELP = (
    "the same bits on any x86-64 CPU with AVX2: fixed kernels, MKL's vendor-neutral branch, one "
    "thread, on the CPU (slower; see the README's Reproducibility)"
)
THREADS_HELP = (
    "CPU threads (default 1: fastest when anything else shares the cores; 0: the libraries' "
    "default, one per core unless OMP_NUM_THREADS says otherwise)"
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console().print(f"grokscope {version('grokscope')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Train small networks on algorithmic tasks, watch them grok, and measure why."""


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 0:
        raise GrokscopeError(f"--threads must be >= 0, got {threads}")
