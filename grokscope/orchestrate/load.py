"""A run or a sweep back in Python: ``load_run(path)`` and ``load_sweep(path)``.

Everything a run directory holds, read once and typed: the resolved config, status, metrics,
analysis and summary (None where the file is absent: a run still training has no analysis), the
task's dataset, the checkpoint epochs, and the model at any checkpoint, ready for
``run_with_cache`` / ``run_with_hooks``::

    import grokscope
    run = grokscope.load_run("runs/quick")
    run.metrics.plot(x="epoch", y=["train_loss", "test_loss"], logy=True)
    model = run.model()                       # the final checkpoint, eval mode
    logits, cache = model.run_with_cache(run.tokens())
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from grokscope.errors import RunDirError
from grokscope.kinds import Kind, build_dataset, kind_of
from grokscope.models import HookedModule, build_model
from grokscope.store import rundir
from grokscope.store.runfiles import RunFiles, table_or_none
from grokscope.tasks import Dataset
from grokscope.tasks.sequence import SequenceDataset, padded
from grokscope.train.core import check_device


@dataclass
class Run(RunFiles):
    """One run directory, loaded (:class:`grokscope.store.runfiles.RunFiles`), with its kind,
    its task's dataset and its model at any checkpoint."""

    @property
    def kind(self) -> Kind:
        """The run's kind of study (:mod:`grokscope.kinds`)."""
        return kind_of(self.config)

    @cached_property
    def dataset(self) -> Dataset | SequenceDataset:
        """The task's complete example table, labels and the run's own split."""
        return build_dataset(self.config.task)

    def tokens(self, split: str = "all") -> torch.Tensor:
        """Input tokens of ``all`` examples (in the dataset's order), ``train`` or ``test``:
        (N, n_ctx) for an algorithmic run. A language-model run's lines of split ``train``,
        ``dev``, ``test`` or ``gen`` (``all``: every split in that order), right-padded with 0
        to the longest: (N, T)."""
        ds = self.dataset
        if isinstance(ds, SequenceDataset):
            names = list(ds.splits) if split == "all" else [split]
            if split != "all" and split not in ds.splits:
                raise ValueError(f"unknown split {split!r}; choose all, {', '.join(ds.splits)}")
            parts = [padded(ds.splits[n])[0] for n in names]
            width = max(p.shape[1] for p in parts)
            return torch.as_tensor(
                np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])
            )
        return torch.as_tensor(ds.tokens[self._index(split)])

    def labels(self, split: str = "all") -> torch.Tensor:
        """Labels (N,) of ``all``, ``train`` or ``test`` examples, aligned with :meth:`tokens`
        (an algorithmic run; a language model's labels are its next tokens)."""
        if isinstance(self.dataset, SequenceDataset):
            raise ValueError(
                "a language-model run has no label column: its targets are the next tokens of "
                "run.tokens(split)"
            )
        return torch.as_tensor(self.dataset.labels[self._index(split)])

    def _index(self, split: str):
        ds = self.dataset
        if split == "all":
            return slice(None)
        if split in ("train", "test"):
            return ds.train_idx if split == "train" else ds.test_idx
        raise ValueError(f"unknown split {split!r}; choose all, train or test")

    def _epoch(self, epoch: int | None) -> int:
        if not self.epochs:
            raise RunDirError(f"{self.path} has no checkpoint yet")
        if epoch is None:
            return self.epochs[-1]
        if epoch not in self.epochs:
            near = min(self.epochs, key=lambda e: abs(e - epoch))
            raise RunDirError(
                f"{self.path} has no checkpoint at epoch {epoch} (nearest: {near}; "
                f"{len(self.epochs)} checkpoints in run.epochs)"
            )
        return epoch

    def weights(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """The weights saved at ``epoch`` (the final checkpoint by default), by parameter name."""
        return rundir.load_weights(self.path, self._epoch(epoch))

    def template(self) -> HookedModule:
        """A freshly built model of the run's shape (its initial weights), in eval mode."""
        ds = self.dataset
        model = build_model(self.config.model, ds.d_vocab, ds.n_ctx, self.config.train.seed)
        return model.eval()

    def load_into(self, model: HookedModule, epoch: int) -> dict[str, torch.Tensor]:
        """Put the weights of checkpoint ``epoch`` into ``model`` (one line when they do not fit);
        returns them."""
        return rundir.load_into(model, self.path, epoch, self.kind.unit)

    def model(self, epoch: int | None = None, device: str = "cpu") -> HookedModule:
        """The model at checkpoint ``epoch`` (the final one by default), in eval mode on
        ``device``, without gradients on its parameters."""
        dev = check_device(device)
        model = self.template()
        model.load_state_dict(self.weights(epoch), strict=True)
        model.requires_grad_(False)
        return model.to(dev).eval()

    def to_transformer_lens(self, epoch: int | None = None):
        """The model at checkpoint ``epoch`` (the final one by default) as a
        ``transformer_lens.HookedTransformer`` (extra ``lens``; :mod:`grokscope.models.lens`),
        for TransformerLens's own patching and attribution tools."""
        from grokscope.models.lens import to_hooked_transformer

        return to_hooked_transformer(self.model(epoch))

    def __repr__(self) -> str:
        state = (self.status or {}).get("state", "unknown")
        done = (self.status or {}).get("epochs_done")
        return (
            f"Run({str(self.path)!r}, {state}, {done} epochs, {len(self.epochs)} checkpoints, "
            f"analysed={self.analysis is not None})"
        )


def load_run(path: str | Path) -> Run:
    """Load the run directory ``path`` (RunDirError when it is not one)."""
    files = RunFiles.read(path)
    return Run(**{f.name: getattr(files, f.name) for f in fields(RunFiles)})


@dataclass
class Sweep:
    """A sweep directory, loaded: its manifest (``sweep.json``), one row per run (``runs``:
    name, cell, seed, state and the grid values), and the per-cell statistics (``cells``, from
    ``summary.parquet``; None before ``grokscope sweep-summary`` wrote it)."""

    path: Path
    manifest: dict[str, Any]
    runs: pd.DataFrame
    cells: pd.DataFrame | None
    run_stats: pd.DataFrame | None

    def run(self, name: str) -> Run:
        """One of the sweep's runs, by its name (a value of ``runs['run']``)."""
        if name not in set(self.runs["run"]):
            raise RunDirError(f"sweep {self.path} has no run {name!r}")
        return load_run(self.path / "runs" / name)

    def load_runs(self) -> list[Run]:
        """Every run of the sweep that has been started, in the order of ``runs``."""
        return [
            load_run(self.path / "runs" / name)
            for name in self.runs["run"]
            if (self.path / "runs" / name / "config.json").is_file()
        ]

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, {len(self.runs)} runs)"


def load_sweep(path: str | Path) -> Sweep:
    """Load the sweep directory ``path`` (one holding ``sweep.json``)."""
    path = Path(path)
    manifest_path = path / "sweep.json"
    if not manifest_path.is_file():
        raise RunDirError(f"{path} is not a sweep directory (no sweep.json)")
    manifest = rundir.read_json(manifest_path)
    values = {c["cell"]: c.get("values", {}) for c in manifest.get("cells", [])}
    rows = []
    for entry in manifest.get("runs", []):  # the run ids the sweep wrote, cell by cell
        run = path / "runs" / entry["run"]
        status = rundir.read_status(run) if (run / "status.json").is_file() else {}
        rows.append(
            {
                "run": entry["run"],
                "cell": entry["cell"],
                "seed": entry["seed"],
                "state": status.get("state", "new"),
                **values.get(entry["cell"], {}),
            }
        )
    return Sweep(
        path=path,
        manifest=manifest,
        runs=pd.DataFrame(rows),
        cells=table_or_none(path / "summary.parquet"),
        run_stats=table_or_none(path / "runs.parquet"),
    )
