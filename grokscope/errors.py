"""User-facing errors: the command line prints their one-line message and exits with status 2."""


class GrokscopeError(Exception):
    """A user mistake (bad config, missing run directory, corrupt file): one line, no traceback."""


class RunDirError(GrokscopeError):
    """A run directory or one of its files is missing, incomplete or corrupt."""
