"""Analyse a sequence (language-model) run: structural-grokking events, tree projections and the
rival predictors per checkpoint, figures.

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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.dynamics.structural import structural_events
from grokscope.measures.attention import attention_entropy
from grokscope.measures.tree_projection import bracketing_f1, tree_projection
from grokscope.models import build_model
from grokscope.report import structural_figures as figs
from grokscope.store import rundir
from grokscope.tasks import build_dataset
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


def _nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def analyze_sequence_run(
    run: Path,
    epochs: list[int],
    figures: bool = True,
    n_sentences: int = 200,
    progress_cb: Callable[[int, int], None] | None = None,
) -> dict:
    """Analyse the checkpoints ``epochs`` of the sequence run ``run``; returns the summary."""
    run = Path(run)
    cfg = rundir.read_config(run)
    ds = build_dataset(cfg.task)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, cfg.train.seed)
    model.eval()
    sentences, gold = _sentences(ds, n_sentences)
    metrics = rundir.read_metrics(run)
    by_epoch = metrics.set_index("epoch")
    t0 = time.perf_counter()
    rows, final = [], {}
    for i, epoch in enumerate(epochs):
        weights = rundir.load_into(model, run, epoch, "step")
        with torch.no_grad():
            tp = tree_projection(model.final_states, sentences, gold)
        att = attention_entropy(model, sentences)
        row = {
            "epoch": epoch,
            "id_acc": float(by_epoch["id_acc"].get(epoch, math.nan)),
            "gen_acc": float(by_epoch["gen_acc"].get(epoch, math.nan)),
            "tree_score": tp["tree_score"],
            "tree_score_random": tp["random_tree_score"],
            "bracket_f1": tp["f1"],
            "bracket_sentence_f1": tp["sentence_f1"],
            "weight_norm": math.sqrt(sum(float((w.double() ** 2).sum()) for w in weights.values())),
            "attn_entropy": att["mean"],
            **{f"attn_entropy_l{j}": v for j, v in enumerate(att["per_layer"])},
        }
        rows.append(row)
        final = {"tp": tp, "row": row}
        if progress_cb is not None:
            progress_cb(i + 1, len(epochs))
    table = pd.DataFrame(rows)
    rundir.write_table(run / "analysis.parquet", table)
    r = cfg.train
    events = structural_events(metrics, r.mem_threshold, r.grok_threshold)
    examples = _examples(ds, sentences, gold, final["tp"]["trees"])
    summary = {
        "kind": "sequence",
        "task": cfg.task.name,
        **events,
        "final": {k: _nan_to_none(v) for k, v in final["row"].items()},
        "tree_sentences": len(sentences),
        "f1_baselines": f1_baselines(gold),
        "analysed_epochs": epochs,
        "example_trees": [
            {"words": e["words"], "induced": e["induced"], "gold": e["gold"], "f1": e["f1"]}
            for e in examples
        ],
    }
    if figures:
        out = run / "figures"
        title = f"{cfg.task.name}, {cfg.model.n_layers} layers, seed {cfg.train.seed}"
        summary["figures"] = [
            str(figs.accuracy_figure(metrics, events, title, out / "accuracy.png").name),
            str(figs.tree_measures_figure(table, out / "tree_measures.png").name),
            str(figs.trees_figure(examples, out / "trees.png").name),
        ]
    summary["analysis_wall_s"] = round(time.perf_counter() - t0, 3)
    rundir.write_json(run / "summary.json", summary)
    return summary


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
