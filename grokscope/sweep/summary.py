"""Summarise a sweep directory through its kind: per-run and per-cell tables, figures, and the
table and lines ``sweep-summary`` prints (:meth:`grokscope.kinds.base.Kind.sweep_summary`)."""

from __future__ import annotations

from pathlib import Path

from grokscope.kinds import Kind, SweepView, kind_of
from grokscope.report.sweep_page import PageEvent, write_sweep_page
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
    """Write the sweep's summary files and figures (the kind's) and its page, ``sweep.html``
    (:mod:`grokscope.report.sweep_page`); return what to print. ``options`` are the kind's
    (algorithmic: ``time_ratio``, ``lag_fraction``)."""
    manifest = read_manifest(root)
    kind = sweep_kind(root, manifest)
    view = kind.sweep_summary(Path(root), manifest, figures, options)
    core_keys = ("t_mem_epoch", "t_grok_epoch")  # status.json's keys, as read_status gives them
    events = [
        PageEvent(ev.name, key, ev.column) for ev, key in zip(kind.events, core_keys, strict=True)
    ]
    page = write_sweep_page(
        Path(root), manifest, view.headers, view.rows, view.lines, view.figures, events, kind.unit
    )
    view.lines.append(f"wrote {page}")
    return view
