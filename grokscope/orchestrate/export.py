"""A task's data as files any framework reads: every split as Parquet and JSON Lines, with the
tokens, the text, the labels or answer spans and the gold structure, and a datasheet (Gebru et
al. 2021's questions, in brief: generator, seed, sizes, split rule, columns).

The tables come from the kind (:meth:`grokscope.kinds.base.Kind.export_tables`); this module
only writes them. The output folder is written whole or not at all: everything goes to a
temporary sibling that is renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import grokscope.kinds  # noqa: F401  (registers every kind's tasks before a config is read)
from grokscope import config as config_mod
from grokscope.errors import GrokscopeError


def resolve_source(source: str, overrides: list[str]) -> config_mod.Config:
    """The config named by ``source``: a preset name, a config JSON file or a run directory
    (its ``config.json``), with ``overrides`` applied."""
    path = Path(source)
    if path.is_dir():
        from grokscope.store import rundir

        cfg = rundir.read_config(path)
    elif path.suffix == ".json":
        if not path.is_file():
            raise GrokscopeError(f"config file {path} does not exist")
        try:
            cfg = config_mod.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise GrokscopeError(f"{path} is not valid JSON: {e.msg} (line {e.lineno})") from None
    else:
        cfg = config_mod.preset(source)
    cfg = config_mod.apply_overrides(cfg, overrides)
    return config_mod.resolve(cfg)


def export_data(cfg: config_mod.Config, out: Path) -> list[Path]:
    """Write every split of ``cfg``'s task to ``out`` (which must not exist, or be empty):
    ``<split>.parquet``, ``<split>.jsonl``, ``datasheet.json``; returns the files written."""
    from grokscope.kinds import build_dataset, kind_of

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GrokscopeError(f"{out} exists and is not empty: choose a new folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise GrokscopeError(f"the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise GrokscopeError(f"cannot write in {parent}")
    kind = kind_of(cfg)
    ds = build_dataset(cfg.task)
    tables, sheet = kind.export_tables(cfg, ds)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        for split, table in tables.items():
            table.to_parquet(tmp / f"{split}.parquet", index=False)
            table.to_json(tmp / f"{split}.jsonl", orient="records", lines=True)
        sheet = {
            "generator": f"grokscope {_version()}, kind {kind.name}, task {cfg.task.name}",
            "task": config_mod.to_dict(cfg)["task"],
            "splits": {split: len(t) for split, t in tables.items()},
            "columns": {split: list(t.columns) for split, t in tables.items()},
            **sheet,
        }
        (tmp / "datasheet.json").write_text(json.dumps(sheet, indent=1, default=str) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out.iterdir())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grokscope")
    except PackageNotFoundError:
        return "unknown"
