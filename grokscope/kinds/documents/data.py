"""The training data and per-evaluation scores of a document-language run.

Every evaluation scores the test set and a fixed slice of the training set against the exact
predictor of every level (:func:`grokscope.measures.documents.score_levels`): columns
``kl_l{k}_{split}``, ``h_l{k}_{split}`` (the plateaus), ``coef_l{k}_{split}``,
``coef_fit_{split}``, and the surprise at a paragraph's first words, ``surprise_model_{split}``
and ``surprise_l{k}_{split}`` (:func:`grokscope.measures.documents.boundary_surprise`), for
split ``train`` and ``test``. ``acc`` is the share of predicted tokens where the model's argmax
is a most likely token of the full language's exact predictor (the next token itself is
random). The exact references are computed once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from grokscope.config import Config
from grokscope.measures.documents import (
    agreement,
    boundary_surprise,
    live_mask,
    mark_content,
    observed,
    padded_latents,
    score_levels,
)
from grokscope.measures.levels import tree_logprobs
from grokscope.tasks.document_inference import references
from grokscope.tasks.sequence import SequenceDataset, padded
from grokscope.train.lm_data import SeqData


@dataclass
class DocSet:
    """One evaluation set: documents right-padded (n, T), their lengths, the exact references
    of every level (L + 1, n, T - 1, V) and the gold latents padded alike."""

    tokens: np.ndarray
    lengths: np.ndarray
    refs: np.ndarray
    lat: dict[str, np.ndarray]

    def unpadded(self) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        """The documents one by one, each with its latents (the input of the edits)."""
        docs = [self.tokens[i, :n] for i, n in enumerate(self.lengths)]
        lats = [{k: v[i, :n] for k, v in self.lat.items()} for i, n in enumerate(self.lengths)]
        return docs, lats


def doc_set(ds: SequenceDataset, split: str, rows: np.ndarray | None = None) -> DocSet:
    """Evaluation set ``rows`` (all by default) of split ``split``, with references and
    latents."""
    g = ds.info["grammar"]
    sp = ds.splits[split]
    rows = np.arange(len(sp)) if rows is None else rows
    tokens, lengths = padded(sp, rows)
    lat = padded_latents(ds.info["latents"][split], sp.offsets, rows, tokens.shape[1])
    return DocSet(tokens, lengths, references(g, tokens, lengths), mark_content(lat, g))


@dataclass
class DocumentData(SeqData):
    """:class:`SeqData` scored against the exact per-level references of each evaluation set."""

    sets: dict[str, DocSet] = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, cfg: Config, ds: SequenceDataset, device: torch.device) -> DocumentData:
        data = super().from_dataset(cfg, ds, device)
        n_eval = len(data.evals["train"])
        data.sets = {
            "train": doc_set(ds, "train", np.arange(n_eval)),
            "test": doc_set(ds, "test"),
            "gen": doc_set(ds, "gen"),
        }
        return data

    @torch.no_grad()
    def evaluate(self, model, name: str) -> dict:
        """Loss, agreement with the exact predictor (``acc``) and the per-level scores."""
        s = self.sets[name]
        logp = tree_logprobs(model, s.tokens, self.device, self.dataset.d_vocab)
        if name == "gen":  # the generalization set reports its loss and accuracy only
            live = live_mask(s.lengths, s.tokens.shape[1])
            loss = float(-observed(logp, s.tokens)[live].mean())
            acc = agreement(logp, s.tokens, s.lengths, s.refs[-1])
            return {"loss": loss, "acc": acc, "levels": {}}
        scores = score_levels(logp, s.tokens, s.lengths, s.refs)
        scores.update(boundary_surprise(logp, s.tokens, s.refs, s.lat))
        return {"loss": scores.pop("loss"), "acc": scores.pop("agree"), "levels": scores}

    def extra_columns(self, out: dict[str, dict]) -> dict:
        extra = {}
        for split in ("train", "test"):
            extra.update({f"{k}_{split}": v for k, v in out[split]["levels"].items()})
        return extra
