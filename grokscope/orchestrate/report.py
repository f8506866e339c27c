"""Write a run's report: the kind's headline, sections and captions in the report's frame."""

from __future__ import annotations

from pathlib import Path

from grokscope.orchestrate.load import load_run
from grokscope.report.html import write_report as write_page


def write_report(run: Path) -> Path:
    """Write ``run/report.html`` from the run's status, metrics, summary and figures (drawing
    the kind's training-curves figure first when the run has none yet)."""
    loaded = load_run(run)
    kind, cfg = loaded.kind, loaded.config
    folder = Path(run) / "figures"
    first = next(iter(kind.figure_captions), None)  # the kind's training-curves figure
    if first is not None and not (folder / f"{first}.png").is_file():
        kind.curves_figure(loaded, folder)
    summary = loaded.summary or {}
    return write_page(
        Path(run),
        kind.subtitle(cfg),
        kind.report_rows(loaded),
        kind.report_sections(loaded),
        summary.get("notes") or [],
        kind.figure_captions,
    )
