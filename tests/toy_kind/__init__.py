"""A fourth kind of study that lives entirely in the tests: copying a random string.

Each line is ``<bos> x1 .. xn = x1 .. xn`` over a small alphabet; the model must copy the string
after ``=``. Accuracy is the share of copied tokens the model predicts exactly (greedy argmax
under teacher forcing); the generalization set has strings of a length never seen in training.
It proves the kind protocol: the training core, the analysis loop, ``show``, ``runs``, the
report, ``sweep-summary`` and ``map`` run it with no edit outside this folder, because
:func:`grokscope.kinds.register` adds it and everything else asks the kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.config import TaskConfig
from grokscope.kinds import register
from grokscope.kinds.base import SweepView
from grokscope.kinds.language import LanguageKind
from grokscope.models import weight_norm_sq
from grokscope.report.figure_io import save_figure, subplots
from grokscope.store.sweepdir import manifest_runs
from grokscope.tasks.sequence import PAD, SequenceDataset, pack
from grokscope.train.lm_data import SeqData, SplitTensors

ALPHABET = 6
TRAIN_LEN, GEN_LEN = 4, 5


def copy_dataset(t: TaskConfig) -> SequenceDataset:
    """Distinct random strings; ``gen`` holds strings one symbol longer than any in training."""
    vocab = (PAD, "<bos>", "=", *[f"s{i}" for i in range(ALPHABET)])
    rng = np.random.default_rng(t.data_seed)

    def lines(n: int, length: int) -> list[list[int]]:
        return [list(3 + rng.integers(0, ALPHABET, length)) for _ in range(n)]

    def split(strings: list[list[int]]):
        seqs = [[1, *s, 2, *s] for s in strings]
        n = len(strings[0])
        return pack(
            seqs, [n + 2] * len(seqs), [n + 2] * len(seqs), [n] * len(seqs),
            [tuple(range(n))] * len(seqs),
        )  # fmt: skip

    splits = {
        "train": split(lines(t.n_train, TRAIN_LEN)),
        "dev": split(lines(max(t.n_dev, 1), TRAIN_LEN)),
        "test": split(lines(t.n_test, TRAIN_LEN)),
        "gen": split(lines(t.n_gen, GEN_LEN)),
    }
    return SequenceDataset("toy_copy", vocab, splits, {})


class CopyData(SeqData):
    """Accuracy: the copied tokens predicted exactly."""

    def grade(self, logits, tokens, mask, rows, split: SplitTensors, model) -> dict[str, int]:
        start = torch.as_tensor(split.answer_start[rows], device=self.device)
        pos = torch.arange(1, tokens.shape[1], device=self.device)[None, :]
        copied = mask & (pos >= start[:, None])
        hit = (logits[:, :-1].argmax(-1) == tokens[:, 1:]) & copied
        return {"correct": int(hit.sum()), "graded": int(copied.sum())}


class CopyAnalysis:
    """Per checkpoint: the weight norm and the copy accuracy of the metrics row."""

    def __init__(self, run, options: dict) -> None:
        self.run = run

    def begin(self, model, load, epochs: list[int]) -> None:
        self.model = model

    def row(self, epoch: int, weights: dict) -> dict:
        acc = self.run.metrics.set_index("epoch")["gen_acc"].get(epoch, float("nan"))
        return {"epoch": epoch, "weight_norm": weight_norm_sq(weights.values()) ** 0.5,
                "gen_acc": float(acc)}  # fmt: skip

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]:
        table = pd.DataFrame(rows)
        return table, {"kind": "toy_copy", "final_gen_acc": rows[-1]["gen_acc"],
                       "analysed_epochs": epochs}  # fmt: skip

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list[str]:
        fig, ax = subplots(figsize=(4, 3))
        ax.plot(table["epoch"], table["weight_norm"])
        ax.set_xlabel("step")
        ax.set_ylabel("weight norm")
        return [save_figure(fig, folder / "copy_norm.png").name]


class ToyCopy(LanguageKind):
    name = "toy_copy"
    tasks = ("toy_copy",)
    figure_captions = {"accuracy": "Copy accuracy.", "copy_norm": "Weight norm."}

    def build_dataset(self, t: TaskConfig) -> SequenceDataset:
        return copy_dataset(t)

    def train_data(self, cfgs, datasets, device):
        return CopyData.for_batch(cfgs, datasets, device)

    def describe(self, cfg) -> str:
        return f"copy strings of {TRAIN_LEN} symbols, {cfg.task.n_train} training lines"

    def run_name(self, cfg) -> str:
        return f"copy-L{cfg.model.n_layers}"

    def analysis(self, run, options: dict) -> CopyAnalysis:
        return CopyAnalysis(run, options)

    def summary_lines(self, summary: dict) -> list[str]:
        return [f"copy: final generalization accuracy {summary['final_gen_acc']:.3f}"]

    def report_rows(self, run) -> dict[str, str]:
        rows = super().report_rows(run)
        if run.summary:
            rows["final copy accuracy on longer strings"] = f"{run.summary['final_gen_acc']:.3f}"
        return rows

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        rows = []
        for base, _, loaded in manifest_runs(root, manifest):
            acc = "-" if loaded is None else f"{loaded.metrics['gen_acc'].iloc[-1]:.3f}"
            rows.append([base["run"], acc])
        return SweepView(["run", "final gen acc"], rows, [f"{len(rows)} copy runs"])


KIND = register(ToyCopy(), sequence=True)
