"""The files of one run directory, read once and typed: the one reader of runs.

Everything that reads a run reads it here: the analysis, ``show``, the report, foresight and
the sweep summaries (directly, or through :class:`grokscope.orchestrate.load.Run`, which adds
the run's kind, dataset and models to these files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from grokscope.config import Config
from grokscope.store import rundir


def table_or_none(path: Path) -> pd.DataFrame | None:
    return rundir.read_table(path) if path.is_file() else None


def json_or_none(path: Path) -> dict | None:
    return rundir.read_json(path) if path.is_file() else None


@dataclass
class RunFiles:
    """One run directory's files (None where a file is absent: a run still training has no
    analysis). Read when the run is read: read it again to see a run that is still training
    move on."""

    path: Path
    config: Config
    status: dict | None
    metrics: pd.DataFrame | None
    analysis: pd.DataFrame | None
    summary: dict | None
    epochs: list[int] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> RunFiles:
        """Read the run directory ``path`` (RunDirError, one line, when it is not one)."""
        path = Path(path)
        return cls(
            path=path,
            config=rundir.read_config(path),
            status=rundir.read_status(path) if (path / "status.json").is_file() else None,
            metrics=table_or_none(path / "metrics.parquet"),
            analysis=table_or_none(path / "analysis.parquet"),
            summary=json_or_none(path / "summary.json"),
            epochs=rundir.list_epochs(path),
        )

    def last_row(self) -> dict:
        """The last metrics row ({} before the first evaluation)."""
        m = self.metrics
        return m.iloc[-1].to_dict() if m is not None and len(m) else {}

    @property
    def started(self) -> bool:
        """Whether the run has a status and a metrics table (it has trained)."""
        return self.status is not None and self.metrics is not None
