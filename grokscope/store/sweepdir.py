"""A sweep directory: its manifest (``sweep.json``) and the runs it lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grokscope.errors import GrokscopeError, RunDirError
from grokscope.store import rundir
from grokscope.store.runfiles import RunFiles


def read_manifest(root: Path) -> dict[str, Any]:
    """The sweep.json of a sweep directory (GrokscopeError if this is not one)."""
    path = Path(root) / "sweep.json"
    if not path.is_file():
        raise GrokscopeError(f"{root} is not a sweep directory (no sweep.json)")
    return rundir.read_json(path)


def manifest_runs(root: Path, manifest: dict[str, Any]):
    """For every run of a sweep: (its base row: run, cell, seed and grid values; its path; its
    files (:class:`~grokscope.store.runfiles.RunFiles`) or None when it has not started)."""
    fields = list(manifest["spec"]["grid"])
    values = {c["cell"]: c["values"] for c in manifest["cells"]}
    for item in manifest["runs"]:
        run = Path(root) / "runs" / item["run"]
        row = {"run": item["run"], "cell": item["cell"], "seed": item["seed"]}
        row.update({f: values[item["cell"]].get(f) for f in fields})
        try:
            files = RunFiles.read(run)
        except RunDirError:
            files = None
        loaded = files if files is not None and files.started else None
        yield row, run, loaded


def grid_fields(manifest: dict[str, Any]) -> list[str]:
    """The swept fields, in file order."""
    return list(manifest["spec"]["grid"])
