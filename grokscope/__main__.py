"""``python -m grokscope``: the command line where the entry point is not installed (the same
``main`` as the installed ``grokscope``: a user mistake is one line and exit status 2)."""

from grokscope.cli import main

main()
