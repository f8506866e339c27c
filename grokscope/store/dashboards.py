"""Live training dashboards: every metrics row, as it is evaluated, also written to TensorBoard
and / or Weights & Biases (``train.log_to``), with the config. The run directory stays the
source of truth; a dashboard is a view of it (a failed dashboard write never stops training).

- ``tensorboard``: event files in ``<run>/tensorboard/`` (``torch.utils.tensorboard``; needs the
  ``tensorboard`` package, extra ``dashboards``). A resumed run purges the events after its
  checkpoint, so the dashboard shows the rows the metrics table holds.
- ``wandb``: a W&B run in ``<run>/wandb/``, **offline** unless ``WANDB_MODE`` says otherwise:
  nothing leaves the machine until the user syncs it (``wandb sync``). Its id is the run
  directory's name, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from pathlib import Path

from grokscope.config import Config, ConfigError, log_targets


def check_log_to(log_to: str) -> None:
    """ConfigError (one line) for a dashboard whose package is missing (the config's own
    validation refuses an unknown one)."""
    for target in log_targets(log_to):
        # each dashboard's package has the dashboard's name
        if importlib.util.find_spec(target) is None:
            raise ConfigError(
                f"train.log_to={target} needs the {target} package: "
                f"pip install 'grokscope[dashboards]'"
            )


class Dashboards:
    """The dashboards of one run: ``log(row)`` per metrics row, ``close()`` at the end."""

    def __init__(self, cfg: Config, run: Path, start_epoch: int) -> None:
        from grokscope.config import to_dict

        self.writers: list = []
        self.wandb = None
        names = log_targets(cfg.train.log_to)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            # events after the checkpoint the run continues from are stale (the metrics table
            # keeps the rows up to it, and the loop evaluates on from there)
            purge = start_epoch + 1 if start_epoch else 0
            writer = SummaryWriter(log_dir=str(run / "tensorboard"), purge_step=purge)
            if not start_epoch:
                writer.add_text("config", f"```\n{to_dict(cfg)}\n```")
            self.writers.append(writer)
        if "wandb" in names:
            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb = wandb.init(
                project="grokscope", name=run.name, id=_wandb_id(run.name), dir=str(run),
                config=to_dict(cfg), resume="allow", reinit="create_new",
            )  # fmt: skip

    def log(self, row: dict) -> None:
        """Write one metrics row; a dashboard that fails is closed with a warning and training
        goes on (the run directory holds the row either way)."""
        try:
            self._log(row)
        except Exception as e:  # noqa: BLE001 - a view of the run must not stop it
            warnings.warn(f"dashboard write failed, dashboards closed: {e}", stacklevel=2)
            self.close()
            self.writers, self.wandb = [], None

    def _log(self, row: dict) -> None:
        step = int(row["epoch"])
        values = {
            k: float(v)
            for k, v in row.items()
            if k not in ("epoch", "step") and isinstance(v, int | float) and math.isfinite(v)
        }
        for writer in self.writers:
            for key, value in values.items():
                writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(name: str) -> str:
    """A W&B run id from a run directory's name (letters, digits, '-' and '_', at most 64)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return safe[-64:]
