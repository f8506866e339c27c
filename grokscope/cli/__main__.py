"""``python -m grokscope.cli``: the command line where the entry point is not installed."""

from grokscope.cli import main

main()
