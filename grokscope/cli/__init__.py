"""The ``grokscope`` command: parse, call the library, print.

User mistakes (bad config, missing or corrupt run directory) print one line and exit with
status 2; Ctrl-C during training leaves a resumable run and exits with 130.

One module per group of commands (:mod:`.training`, :mod:`.runs`, :mod:`.analysis`,
:mod:`.sweeps`, :mod:`.foresight`); what prints differently per kind of study is the kind's
(:mod:`grokscope.kinds`). Every command prints through :data:`console` and :data:`err` below,
looked up when it prints (see :mod:`.output`), so replacing them here redirects every command.
"""

from __future__ import annotations

import sys

from rich.console import Console

from grokscope.cli.root import app
from grokscope.errors import GrokscopeError

console = Console()
err = Console(stderr=True)
PLAIN_EVERY_S = 5.0  # seconds between plain progress lines when output is not a terminal

# the commands register themselves on ``app`` in this order, the order ``--help`` lists them
from grokscope.cli import training, runs, analysis, sweeps, foresight  # noqa: E402, F401, I001

__all__ = ["app", "console", "err", "main", "Console", "PLAIN_EVERY_S"]


def main() -> None:
    """Entry point: run the app, turning user mistakes into one line and exit status 2. With
    ``--portable`` the command first re-executes itself in the portable environment
    (:mod:`grokscope.portable`), before torch is imported."""
    try:
        if "--portable" in sys.argv[1:]:
            from grokscope.portable import in_portable_env, reexec_portable

            if not in_portable_env():
                reexec_portable(sys.argv[1:])
        app()
    except GrokscopeError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
