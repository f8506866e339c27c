"""The training data and per-evaluation scores of a tree-language run.

``acc`` is the share of leaf positions where the model's argmax is a most likely token of the
data's own Bayes-optimal predictor (the next token itself is random, so top-1 accuracy against
it is capped below 1), and every evaluation also scores the test set and the training slice
against the exact predictor of each level (:func:`grokscope.measures.levels.score_levels`):
columns ``kl_l{k}_{split}``, ``h_l{k}_{split}``, ``loss_l{k}_{split}``, ``floor_l{k}_{split}``,
``ceil_l{k}_{split}``, ``best_l{k}_{split}`` for split ``train`` and ``test``, and
``train_top1`` (top-1 accuracy on the training slice: near 1 only for a model that has
memorized its training sequences). The exact references are computed once per run, not per
evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.config import Config
from grokscope.measures.levels import score_levels, tree_logprobs
from grokscope.tasks.sequence import SequenceDataset
from grokscope.tasks.tree_language import level_references
from grokscope.train.lm_data import SeqData


@dataclass
class TreeData(SeqData):
    """:class:`SeqData` scored against the exact per-level references of each evaluation set
    (``refs[name]``: the references and the highest level defined on that set)."""

    refs: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, cfg: Config, ds: SequenceDataset, device: torch.device) -> TreeData:
        data = super().from_dataset(cfg, ds, device)
        levels, k = ds.info["grammar"].levels, ds.info["filter_level"]
        for name, split in data.evals.items():
            top = levels if name == "gen" else k
            tokens = split.tokens.reshape(len(split), -1)
            data.refs[name] = (level_references(ds, tokens, top), top)
        return data

    def tokens(self, name: str) -> np.ndarray:
        """The equal-length sequences (n, T) of evaluation set ``name``."""
        split = self.evals[name]
        return split.tokens.reshape(len(split), -1)

    @torch.no_grad()
    def evaluate(self, model, name: str) -> dict:
        """Loss, Bayes agreement (``acc``), top-1 accuracy and the per-level scores."""
        tokens = self.tokens(name)
        logp = tree_logprobs(model, tokens, self.device, self.dataset.d_vocab)
        nxt = tokens[:, 1:]
        obs = np.take_along_axis(logp, nxt[..., None], -1)[..., 0]
        refs, top = self.refs[name]
        need = self.dataset.info["layout"].need
        scores = score_levels(logp, tokens, refs, need, top)
        return {
            "loss": float(-obs.mean()),
            "acc": scores.pop("agree"),
            "top1": float((logp.argmax(-1) == nxt)[:, need[1:] >= 0].mean()),
            "levels": scores,
        }

    def extra_columns(self, out: dict[str, dict]) -> dict:
        extra = {"train_top1": out["train"]["top1"]}
        for split in ("train", "test"):
            extra.update({f"{k}_{split}": v for k, v in out[split]["levels"].items()})
        return extra
