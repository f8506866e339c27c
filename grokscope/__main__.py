"""``python -m grokscope``: the command line where the entry point is not installed."""

from grokscope.cli import app

app()
