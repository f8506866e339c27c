"""Summarise a sweep directory through its kind: per-run and per-cell tables, figures, and the
table and lines ``sweep-summary`` prints (:meth:`grokscope.kinds.base.Kind.sweep_summary`)."""

from __future__ import annotations

from pathlib import Path

from grokscope.kinds import Kind, SweepView, kind_of
from grokscope.store import rundir
from grokscope.store.sweepdir import read_manifest
from grokscope.sweep.spec import SweepSpec


def sweep_kind(root: Path, manifest: dict) -> Kind:
    """The kind of a sweep's runs (every run of a sweep is of one task): the first started
    run's, or, before any has started, the first run's config made from the spec."""
    for item in manifest.get("runs", []):
        path = Path(root) / "runs" / item["run"]
        if (path / "config.json").is_file():
            return kind_of(rundir.read_config(path))
    spec = SweepSpec(**manifest["spec"])
    return kind_of(spec.config(spec.cells()[0], spec.seeds[0]))


def summarize_sweep(root: Path, figures: bool = True, **options) -> SweepView:
    """Write the sweep's summary files and figures (the kind's); return what to print.
    ``options`` are the kind's (algorithmic: ``time_ratio``, ``lag_fraction``)."""
    manifest = read_manifest(root)
    return sweep_kind(root, manifest).sweep_summary(Path(root), manifest, figures, options)
