"""Watch a sweep's epochs while it runs: a thread that reads the runs' status files every few
seconds (:func:`~grokscope.sweep.executor.epochs_progress`), so progress moves while a cell
trains, whatever the executor, and a display (a progress bar, a log) only says what it hears."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from grokscope.sweep.executor import epochs_progress

POLL_EVERY_S = 2.0


@contextmanager
def watch_epochs(
    tasks: list[dict[str, Any]],
    on_epochs: Callable[[int], None],
    every_s: float = POLL_EVERY_S,
) -> Iterator[None]:
    """Call ``on_epochs(epochs trained so far)`` every ``every_s`` seconds from a daemon thread
    while the body runs (checkpoint granularity), and once more, from the caller's thread, after
    the body ends (also when it raises) and the thread has stopped."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every_s):
            on_epochs(epochs_progress(tasks)[0])

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        on_epochs(epochs_progress(tasks)[0])
