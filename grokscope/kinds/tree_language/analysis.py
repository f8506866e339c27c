"""The analysis of a tree-language run: per-level measures at every checkpoint, the level
transitions, the perturbation cascade, figures (driven by
:func:`grokscope.orchestrate.analyze.analyze_run`).

The per-level columns of ``metrics.parquet`` (written at every evaluation during training, see
:mod:`grokscope.kinds.tree_language.data`) give the transition times t*_k
(:func:`grokscope.dynamics.levels.level_events`). Per checkpoint the analysis adds what training
does not record: the test loss at every position (``pos_loss_t{t}``, the token at t predicted),
the perturbation cascade (``cascade_k{k}_j{j}``, :mod:`grokscope.measures.levels`) and the
weight norm, beside the per-level scores recomputed from the checkpoint (same names as in the
metrics). The exact references of the test set and the training slice are computed once per
analysis, not per checkpoint.

Writes ``analysis.parquet``, ``summary.json`` (kind ``tree_language``: the grammar, the plateaus
H_k of the test set, the level events, the train/test overlap, the final row) and ``figures/``:
``levels_loss.png``, ``levels_kl.png``, ``levels_positions.png``, ``levels_cascade.png``.
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
from grokscope.kinds.tree_language.data import TreeData
from grokscope.measures.levels import (
    perturbation_cascade,
    perturbed_pairs,
    score_levels,
    tree_logprobs,
)
from grokscope.models import weight_norm_sq
from grokscope.report import level_figures as figs

N_CASCADE = 200


class TreeAnalysis:
    """Per-level scores, per-position loss, the perturbation cascade and the weight norm per
    checkpoint; the level events of the metrics (the kind's
    :class:`grokscope.kinds.base.Analysis`)."""

    def __init__(self, run, options: dict, n_cascade: int = N_CASCADE) -> None:
        self.run = run
        cfg, ds = run.config, run.dataset
        self.g, self.lay = ds.info["grammar"], ds.info["layout"]
        self.device = torch.device("cpu")
        self.data = TreeData.from_dataset(cfg, ds, self.device)
        self.pairs = {
            k: perturbed_pairs(ds, k, n_cascade, seed=cfg.task.data_seed)
            for k in range(1, self.g.levels + 1)
        }
        self.tokens = {name: self.data.tokens(name) for name in ("train", "test")}
        self.profiles: dict[int, np.ndarray] = {}

    def begin(self, model, load, epochs: list[int]) -> None:
        self.model = model

    def _logp(self, toks: np.ndarray) -> np.ndarray:
        return tree_logprobs(self.model, toks, self.device, self.run.dataset.d_vocab)

    def row(self, epoch: int, weights: dict) -> dict:
        row: dict = {"epoch": epoch}
        for name, toks in self.tokens.items():
            logp = self._logp(toks)
            refs, top = self.data.refs[name]
            scores = score_levels(logp, toks, refs, self.lay.need, top)
            row.update({f"{k}_{name}": v for k, v in scores.items()})
            if name == "test":
                obs = -np.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
                prof = obs.mean(0)
                self.profiles[epoch] = prof
                row.update({f"pos_loss_t{t + 1}": float(v) for t, v in enumerate(prof)})
        row.update(perturbation_cascade(self._logp, self.run.dataset, self.pairs))
        row["weight_norm"] = math.sqrt(weight_norm_sq(weights.values()))
        return row

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]:
        cfg, ds, metrics = self.run.config, self.run.dataset, self.run.metrics
        g, lay = self.g, self.lay
        self.events = level_events(metrics, g.levels)
        r = cfg.train
        test_refs, _ = self.data.refs["test"]
        obs_tokens = self.tokens["test"][:, 1:, None]
        plateaus, self.floors = {}, {}
        for k in range(g.levels + 1):
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.log(np.take_along_axis(test_refs[k], obs_tokens, -1)[..., 0])
            self.floors[k] = h.mean(0)
            plateaus[str(k)] = none_if_not_finite(float(h[:, lay.need[1:] >= 0].mean()))
        summary = {
            "kind": "tree_language",
            "task": cfg.task.name,
            "grammar": {
                "levels": g.levels,
                "vocab": g.vocab,
                "rules": g.rules_per_symbol,
                "branching": g.branching,
                "filter_level": ds.info["filter_level"],
                "filter_rule": ds.info.get("filter_rule"),
                "units": ds.info["units"],
                "boundary": ds.info["boundary"],
                "sequence_length": lay.length,
            },
            "n_train": cfg.task.n_train,
            "test_seen_share": ds.info["test_seen"],
            "plateaus_test": plateaus,
            **self.events,
            **structural_events(metrics, r.mem_threshold, r.grok_threshold),
            "final": {
                k: none_if_not_finite(v)
                for k, v in rows[-1].items()
                if not k.startswith("pos_loss")
            },
            "cascade_sequences": {str(k): len(p["tokens"]) for k, p in self.pairs.items()},
            "analysed_epochs": epochs,
        }
        return pd.DataFrame(rows), summary

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list[str]:
        cfg, ds, metrics = self.run.config, self.run.dataset, self.run.metrics
        g, events = self.g, self.events
        title = (
            f"tree language L={g.levels} v={g.vocab} m={g.rules_per_symbol} s={g.branching}, "
            f"P={cfg.task.n_train}, {cfg.model.n_layers} layers, seed {cfg.train.seed}"
        )
        chosen = _profile_steps(sorted(self.profiles), events)
        floors = {
            k: self.floors[k]
            for k in (0, ds.info["filter_level"])
            if np.isfinite(self.floors[k]).all()
        }
        return [
            figs.loss_figure(metrics, g.levels, events, title, folder / "levels_loss.png").name,
            figs.kl_figure(metrics, g.levels, events, folder / "levels_kl.png").name,
            figs.positions_figure(
                {s: self.profiles[s] for s in chosen},
                floors,
                self.lay.need,
                folder / "levels_positions.png",
            ).name,  # fmt: skip
            figs.cascade_figure(table, g.levels, folder / "levels_cascade.png").name,
        ]


def _profile_steps(steps: list[int], events: dict, most: int = 6) -> list[int]:
    """Checkpoints for the per-position figure: the first after step 0, the last checkpoint
    before and the first after each test transition, and the final one."""
    live = [s for s in steps if s > 0] or steps
    chosen = {live[0], live[-1]}
    for entry in events["levels"].values():
        t = entry.get("test", {}).get("t_star")
        if t is None:
            continue
        before = [s for s in live if s < t]
        after = [s for s in live if s >= t]
        if before:
            chosen.add(before[-1])
        if after:
            chosen.add(after[0])
    out = sorted(chosen)
    if len(out) > most:
        keep = np.linspace(0, len(out) - 1, most).round().astype(int)
        out = [out[i] for i in sorted(set(keep))]
    return out
