"""The analysis of a document-language run, per checkpoint (driven by
:func:`grokscope.orchestrate.analyze.analyze_run`).

On the test set: the per-level scores (same names as the metrics), the adaptation curve after a
topic change (``adapt_d{d}``: the model's loss on the d-th content word of a paragraph after
the first), the genre gain per paragraph index (``genre_gain_p{i}_model``), the surprise at a
paragraph's first words, and, where boundaries are not all marked, where the model's
predictions imply a paragraph began against the exact posterior (``boundary_*``). On the
generalization documents: the responses to the edits of
:mod:`grokscope.measures.document_interventions` (``response_{edit}``: the model's response
over the exact predictor's; ``response_{edit}_model``). And the weight norm.

Writes ``analysis.parquet``, ``summary.json`` (kind ``documents``: the language, the plateaus,
the exact adaptation curves and boundary scores, the level events, the final row) and
``figures/``: ``documents_loss.png``, ``documents_levels.png``, ``documents_adaptation.png``,
``documents_interventions.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.display import none_if_not_finite
from grokscope.dynamics.levels import level_events
from grokscope.dynamics.structural import structural_events
from grokscope.kinds.documents.data import doc_set
from grokscope.measures import documents as dm
from grokscope.measures.document_interventions import edit_response, make_edits, probe_predictions
from grokscope.measures.levels import tree_logprobs
from grokscope.models import weight_norm_sq
from grokscope.report import document_figures as figs
from grokscope.tasks.document_inference import forward, full_machine
from grokscope.tasks.documents import LEVEL_NAMES, LEVELS

DISTANCES = 8
N_EDITS = 200


class DocumentAnalysis:
    """Per-level scores, adaptation, genre gain, boundary inference and edit responses per
    checkpoint (the kind's :class:`grokscope.kinds.base.Analysis`)."""

    def __init__(self, run, options: dict) -> None:
        self.run = run
        ds = run.dataset
        self.g = g = ds.info["grammar"]
        self.device = torch.device("cpu")
        self.test = doc_set(ds, "test")
        machine = full_machine(g)
        self.posterior = forward(g, machine, self.test.tokens, self.test.lengths, conditional=True)
        docs, lats = doc_set(ds, "gen").unpadded()
        self.edits = make_edits(g, docs, lats, N_EDITS, max_len=run.config.model.n_ctx or ds.n_ctx)
        self.exact_response = {}
        for name, pairs in self.edits.items():
            q_o, q_e = probe_predictions(
                pairs,
                lambda t, n: forward(g, machine, t, n).pred,  # noqa: B023
            )
            self.exact_response[name] = (q_o, q_e)
        self.curves: dict[int, np.ndarray] = {}

    def begin(self, model, load, epochs: list[int]) -> None:
        self.model = model

    def _logp(self, tokens: np.ndarray) -> np.ndarray:
        return tree_logprobs(self.model, tokens, self.device, self.run.dataset.d_vocab)

    def row(self, epoch: int, weights: dict) -> dict:
        t, g = self.test, self.g
        logp = self._logp(t.tokens)
        row: dict = {"epoch": epoch}
        scores = dm.score_levels(logp, t.tokens, t.lengths, t.refs)
        scores.update(dm.coefficient_se(logp, t.tokens, t.lengths, t.refs))
        scores.update(dm.boundary_surprise(logp, t.tokens, t.refs, t.lat))
        row.update({f"{k}_test": v for k, v in scores.items()})
        curve = dm.adaptation_curve(logp, t.tokens, t.refs, t.lat, DISTANCES)
        self.curves[epoch] = curve["model"]
        self.exact_curves = curve["levels"]
        row.update({f"adapt_d{d}": float(v) for d, v in enumerate(curve["model"])})
        row.update(dm.genre_gain(logp, t.tokens, t.refs, t.lat, g.max_paragraphs))
        row.update(
            dm.genre_coefficients(logp, t.tokens, t.lengths, t.refs, t.lat, g.max_paragraphs)
        )
        if g.boundary != "marked":
            fw = self.posterior
            row.update(
                dm.boundary_inference(
                    logp,
                    t.tokens,
                    t.lat,
                    fw.boundary,
                    fw.pred_new,
                    fw.pred_cont,
                    dm.content_slice(g),
                )  # fmt: skip
            )
        for name, pairs in self.edits.items():
            p_o, p_e = probe_predictions(pairs, lambda tok, n: np.exp(self._logp(tok)))
            res = edit_response(name, pairs, g, (p_o, p_e), self.exact_response[name])
            row[f"response_{name}"] = res["ratio"]
            row[f"response_{name}_model"] = res["model"]
            row[f"response_{name}_exact"] = res["exact"]
            row[f"response_{name}_probes"] = res["probes"]
        row["weight_norm"] = math.sqrt(weight_norm_sq(weights.values()))
        return row

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]:
        cfg, metrics, g = self.run.config, self.run.metrics, self.g
        self.events = level_events(metrics, LEVELS)
        r = cfg.train
        last = rows[-1]
        summary = {
            "kind": "documents",
            "task": cfg.task.name,
            "language": {
                "genres": g.genres,
                "paragraph_counts": list(g.paragraph_counts),
                "topics": g.topics,
                "topic_words": g.topic_words,
                "overlap": g.overlap,
                "function_words": g.function_words,
                "templates": [list(t) for t in g.templates],
                "sentences": g.sentences,
                "boundary": g.boundary,
                "d_vocab": g.d_vocab,
            },
            "level_names": list(LEVEL_NAMES),
            "n_train": cfg.task.n_train,
            "plateaus_test": {
                str(k): none_if_not_finite(last[f"h_l{k}_test"]) for k in range(LEVELS + 1)
            },  # fmt: skip
            "surprise_exact": {
                str(k): none_if_not_finite(last[f"surprise_l{k}_test"]) for k in range(LEVELS + 1)
            },  # fmt: skip
            "adaptation_exact": {
                str(k): [none_if_not_finite(v) for v in self.exact_curves[k]]
                for k in range(LEVELS + 1)
            },  # fmt: skip
            "edit_pairs": {name: len(p) for name, p in self.edits.items()},
            "response_exact": {
                name: none_if_not_finite(last.get(f"response_{name}_exact")) for name in self.edits
            },  # fmt: skip
            **self.events,
            **structural_events(metrics, r.mem_threshold, r.grok_threshold),
            "final": {k: none_if_not_finite(v) for k, v in last.items()},
            "analysed_epochs": epochs,
        }
        return pd.DataFrame(rows), summary

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list[str]:
        cfg, metrics, g = self.run.config, self.run.metrics, self.g
        title = (
            f"documents ({g.boundary} boundaries), P={cfg.task.n_train}, "
            f"{cfg.model.n_layers} layers, seed {cfg.train.seed}"
        )
        return [
            figs.staircase(metrics, self.events, title, folder / "documents_loss.png").name,
            figs.levels(metrics, self.events, folder / "documents_levels.png").name,
            figs.adaptation(
                self.curves, self.exact_curves, folder / "documents_adaptation.png"
            ).name,
            figs.interventions(table, folder / "documents_interventions.png").name,
        ]
