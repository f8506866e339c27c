"""The kinds of study grokscope knows, and the one place that maps a task to its kind.

Adding a kind is adding its module tree (a :class:`grokscope.kinds.base.Kind` subclass and its
data, analysis, figures) and one line in :data:`KINDS`, or, from outside the package, a module
that calls :func:`register`, named so that every process finds it (sweep workers are fresh
processes): in the ``grokscope.kinds`` entry-point group of an installed package, or in the
environment variable ``GROKSCOPE_KINDS`` (module names, comma-separated); docs/kinds.md.
Everything else calls :func:`kind_of` and never asks which kind a run is.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from grokscope.config import Config, ConfigError, TaskConfig, register_task
from grokscope.kinds import algorithmic, documents, structural, tree_language
from grokscope.kinds.base import Analysis, Event, Kind, RunLike, SweepView

KINDS: list[Kind] = [algorithmic.KIND, structural.KIND, tree_language.KIND]


def register(
    kind: Kind, sequence: bool = True, validate=None, fields: tuple[str, ...] = ()
) -> Kind:
    """Add ``kind`` (and its task names, to the config's list of valid tasks); returns it.
    ``sequence``: its runs train a language model (``model.kind=lm``) on the sequence-task
    sizes; ``validate(cfg)`` checks its own settings; ``fields`` are the task fields it reads
    beyond those every task of its family reads."""
    for task in kind.tasks:
        register_task(task, sequence=sequence, validate=validate, fields=fields)
    KINDS[:] = [k for k in KINDS if k.name != kind.name] + [kind]
    return kind


def kind_of(cfg: Config | TaskConfig | str) -> Kind:
    """The kind whose tasks include ``cfg``'s task (a config, a task config or a task name)."""
    name = cfg if isinstance(cfg, str) else getattr(cfg, "task", cfg).name
    for kind in KINDS:
        if name in kind.tasks:
            return kind
    raise ConfigError(f"no kind of study knows the task {name!r}")


def trains_alone(cfg: Config) -> bool:
    """Whether seeds of ``cfg`` train one at a time (its kind says)."""
    return kind_of(cfg).trains_alone(cfg)


def build_dataset(t: TaskConfig):
    """The dataset of a (resolved, validated) task config, built by its kind."""
    return kind_of(t).build_dataset(t)


def load_plugins() -> None:
    """Import the kinds named outside the package: the ``grokscope.kinds`` entry points of the
    installed packages and the modules in ``GROKSCOPE_KINDS``; each registers itself."""
    for entry in entry_points(group="grokscope.kinds"):
        entry.load()
    names = os.environ.get("GROKSCOPE_KINDS", "").split(",")
    for name in filter(None, (m.strip() for m in names)):
        try:
            importlib.import_module(name)
        except ImportError as e:
            why = f"GROKSCOPE_KINDS names {name!r}, which cannot be imported: {e}"
            raise ConfigError(why) from None


register(documents.KIND, sequence=True, validate=documents.validate, fields=documents.FIELDS)
load_plugins()

__all__ = [
    "KINDS", "Analysis", "Event", "Kind", "RunLike", "SweepView", "build_dataset", "kind_of",
    "register", "trains_alone",
]  # fmt: skip
