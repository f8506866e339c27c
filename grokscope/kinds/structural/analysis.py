"""The analysis of a structural-grokking run: events, tree projections and the rival predictors
per checkpoint, figures (driven by :func:`grokscope.orchestrate.analyze.analyze_run`).

Writes ``analysis.parquet`` (one row per analysed checkpoint: ``epoch`` (= step), ``id_acc``,
``gen_acc``, ``tree_score``, ``tree_score_random``, ``bracket_f1``, ``bracket_sentence_f1``,
``weight_norm``, ``attn_entropy`` and ``attn_entropy_l<i>`` per layer), ``summary.json``
(the events of :func:`grokscope.dynamics.structural.structural_events`, the final checkpoint's
measures, three example trees) and ``figures/``: ``accuracy.png``, ``tree_measures.png``,
``trees.png``.

Tree projections (Murty et al., ICLR 2023) are computed on the input sentences of the first
``n_sentences`` (200) in-distribution test lines (question lines for question formation, as
Murty et al. take them), against their gold parses; attention entropy on the same sentences, as
the mean entropy per attention row (Murty et al. sum the rows of a sentence; the mean does not
grow with sentence length). ``tree_score`` is the paper's score, ``tree_score_random`` the
stricter whole-random-tree variant (:mod:`grokscope.measures.tree_projection`).
Murty et al. (ACL 2023) report the tree score of the final model per
depth; here it is tracked over training, so one sees whether tree-structuredness rises before,
with or after generalization.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.display import none_if_nan
from grokscope.dynamics.structural import structural_events
from grokscope.measures.attention import attention_entropy
from grokscope.measures.tree_projection import bracketing_f1, tree_projection
from grokscope.models import weight_norm_sq
from grokscope.report import structural_figures as figs
from grokscope.tasks.sequence import SequenceDataset, tree_spans


def _sentences(ds: SequenceDataset, n: int) -> tuple[list[np.ndarray], list]:
    """(input sentences, gold trees) of the first ``n`` in-distribution test lines; for question
    formation the question lines only, as Murty et al. (2023) take them."""
    split = ds.splits["test"]
    quest = ds.info.get("marker_ids", {}).get("quest")
    rows = []
    for i in range(len(split)):
        if quest is None or split.sequence(i)[int(split.answer_start[i]) - 1] == quest:
            rows.append(i)
        if len(rows) == n:
            break
    sentences = [split.sequence(i)[: int(split.sentence_len[i])] for i in rows]
    return sentences, [split.trees[i] for i in rows]


class StructuralAnalysis:
    """Tree projections, weight norm and attention entropy per checkpoint; the structural
    events of the metrics (the kind's :class:`grokscope.kinds.base.Analysis`)."""

    def __init__(self, run, options: dict, n_sentences: int = 200) -> None:
        self.run = run
        self.sentences, self.gold = _sentences(run.dataset, n_sentences)
        self.final: dict = {}

    def begin(self, model, load, epochs: list[int]) -> None:
        self.model = model

    def row(self, epoch: int, weights: dict) -> dict:
        with torch.no_grad():
            tp = tree_projection(self.model.final_states, self.sentences, self.gold)
        att = attention_entropy(self.model, self.sentences)
        by_epoch = self.run.metrics.set_index("epoch")
        row = {
            "epoch": epoch,
            "id_acc": float(by_epoch["id_acc"].get(epoch, math.nan)),
            "gen_acc": float(by_epoch["gen_acc"].get(epoch, math.nan)),
            "tree_score": tp["tree_score"],
            "tree_score_random": tp["random_tree_score"],
            "bracket_f1": tp["f1"],
            "bracket_sentence_f1": tp["sentence_f1"],
            "bracket_f1_with_sentence": tp["f1_with_sentence"],
            "weight_norm": math.sqrt(weight_norm_sq(weights.values())),
            "attn_entropy": att["mean"],
            **{f"attn_entropy_l{j}": v for j, v in enumerate(att["per_layer"])},
        }
        self.final = {"tp": tp, "row": row}
        return row

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]:
        cfg, ds = self.run.config, self.run.dataset
        r = cfg.train
        self.events = structural_events(self.run.metrics, r.mem_threshold, r.grok_threshold)
        self.examples = _examples(ds, self.sentences, self.gold, self.final["tp"]["trees"])
        summary = {
            "kind": "sequence",
            "task": cfg.task.name,
            **self.events,
            "final": {k: none_if_nan(v) for k, v in self.final["row"].items()},
            "tree_sentences": len(self.sentences),
            "f1_baselines": f1_baselines(self.gold),
            "analysed_epochs": epochs,
            "example_trees": [
                {"words": e["words"], "induced": e["induced"], "gold": e["gold"], "f1": e["f1"]}
                for e in self.examples
            ],
        }
        return pd.DataFrame(rows), summary

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list[str]:
        cfg = self.run.config
        title = f"{cfg.task.name}, {cfg.model.n_layers} layers, seed {cfg.train.seed}"
        metrics = self.run.metrics
        return [
            str(figs.accuracy_figure(metrics, self.events, title, folder / "accuracy.png").name),
            str(figs.tree_measures_figure(table, folder / "tree_measures.png").name),
            str(figs.trees_figure(self.examples, folder / "trees.png").name),
        ]


def _branching(first: int, last: int, right: bool):
    """The right- (or left-) branching binary tree over word positions first..last."""
    if first == last:
        return first
    if right:
        return (first, _branching(first + 1, last, True))
    return (_branching(first, last - 1, False), last)


def f1_baselines(gold: list) -> dict[str, float]:
    """Bracketing F1 of trees that ignore the model, against the same gold parses: the purely
    right-branching and left-branching trees. English-like grammars are mostly right-branching,
    so an induced tree's F1 means something only above the right-branching one."""
    spans = [sorted(tree_spans(g)) for g in gold]
    n = [s[-1][1] + 1 if s else 1 for s in spans]
    out = {}
    for name, right in (("right_branching", True), ("left_branching", False)):
        trees = [_branching(0, k - 1, right) for k in n]
        out[name] = bracketing_f1(trees, gold)["f1"]
    return out


def _examples(ds: SequenceDataset, sentences, gold, induced, k: int = 3) -> list[dict]:
    """The three longest of the first 20 sentences, each with its induced and gold tree."""
    order = sorted(range(min(20, len(sentences))), key=lambda i: -len(sentences[i]))[:k]
    out = []
    for i in sorted(order):
        f1 = bracketing_f1([induced[i]], [gold[i]])["sentence_f1"]
        out.append(
            {
                "words": ds.decode(sentences[i]),
                "induced": induced[i],
                "gold": gold[i],
                "f1": 1.0 if math.isnan(f1) else f1,
            }
        )
    return out
