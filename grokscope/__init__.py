"""grokscope: train small networks on algorithmic tasks, watch them grok, and measure why.

``grokscope.load_run(path)`` and ``grokscope.load_sweep(path)`` bring a run or a sweep back into
Python (see :mod:`grokscope.orchestrate.load`); they are imported on first use, so that
``import grokscope.config`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "Sweep", "load_run", "load_sweep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from grokscope.orchestrate import load

        return getattr(load, name)
    raise AttributeError(f"module 'grokscope' has no attribute {name!r}")
