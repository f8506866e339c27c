"""Analyse a tree-language run: per-level measures at every checkpoint, the level transitions,
the perturbation cascade, figures.

The per-level columns of ``metrics.parquet`` (written at every evaluation during training, see
:mod:`grokscope.train.sequence`) give the transition times t*_k
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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.dynamics.levels import level_events
from grokscope.dynamics.structural import structural_events
from grokscope.measures.levels import perturbation_cascade, perturbed_pairs
from grokscope.models import build_model
from grokscope.report import level_figures as figs
from grokscope.store import rundir
from grokscope.tasks import build_dataset
from grokscope.tasks.tree_language import score_levels
from grokscope.train.sequence import SeqData, tree_logprobs

N_CASCADE = 200


def _none(x):
    return None if isinstance(x, float) and not math.isfinite(x) else x


def analyze_tree_run(
    run: Path,
    epochs: list[int],
    figures: bool = True,
    n_cascade: int = N_CASCADE,
    progress_cb: Callable[[int, int], None] | None = None,
) -> dict:
    """Analyse the checkpoints ``epochs`` of the tree-language run ``run``; returns the summary."""
    run = Path(run)
    cfg = rundir.read_config(run)
    ds = build_dataset(cfg.task)
    g, lay = ds.info["grammar"], ds.info["layout"]
    device = torch.device("cpu")
    data = SeqData.from_dataset(cfg, ds, device)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, cfg.train.seed)
    model.eval()
    metrics = rundir.read_metrics(run)
    pairs = {
        k: perturbed_pairs(ds, k, n_cascade, seed=cfg.task.data_seed)
        for k in range(1, g.levels + 1)
    }
    tokens = {
        name: data.evals[name].tokens.reshape(len(data.evals[name]), -1)
        for name in ("train", "test")
    }
    t0 = time.perf_counter()
    rows, profiles = [], {}
    for i, epoch in enumerate(epochs):
        weights = rundir.load_into(model, run, epoch, "step")

        def logp_fn(toks: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return tree_logprobs(model, toks, device, ds.d_vocab)

        row: dict = {"epoch": epoch}
        for name, toks in tokens.items():
            logp = logp_fn(toks)
            refs, top = data.refs[name]
            scores = score_levels(logp, toks, refs, lay.need, top)
            row.update({f"{k}_{name}": v for k, v in scores.items()})
            if name == "test":
                obs = -np.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
                prof = obs.mean(0)
                profiles[epoch] = prof
                row.update({f"pos_loss_t{t + 1}": float(v) for t, v in enumerate(prof)})
        row.update(perturbation_cascade(logp_fn, ds, pairs))
        row["weight_norm"] = math.sqrt(
            sum(float((w.double() ** 2).sum()) for w in weights.values())
        )
        rows.append(row)
        if progress_cb is not None:
            progress_cb(i + 1, len(epochs))
    table = pd.DataFrame(rows)
    rundir.write_table(run / "analysis.parquet", table)
    events = level_events(metrics, g.levels)
    r = cfg.train
    test_refs, _ = data.refs["test"]
    obs_tokens = tokens["test"][:, 1:, None]
    plateaus = {}
    floors = {}
    for k in range(g.levels + 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.log(np.take_along_axis(test_refs[k], obs_tokens, -1)[..., 0])
        floors[k] = h.mean(0)
        plateaus[str(k)] = _none(float(h[:, lay.need[1:] >= 0].mean()))
    summary = {
        "kind": "tree_language",
        "task": cfg.task.name,
        "grammar": {
            "levels": g.levels,
            "vocab": g.vocab,
            "rules": g.rules_per_symbol,
            "branching": g.branching,
            "filter_level": ds.info["filter_level"],
            "units": ds.info["units"],
            "boundary": ds.info["boundary"],
            "sequence_length": lay.length,
        },
        "n_train": cfg.task.n_train,
        "test_seen_share": ds.info["test_seen"],
        "plateaus_test": plateaus,
        **events,
        **structural_events(metrics, r.mem_threshold, r.grok_threshold),
        "final": {k: _none(v) for k, v in rows[-1].items() if not k.startswith("pos_loss")},
        "cascade_sequences": {str(k): len(p["tokens"]) for k, p in pairs.items()},
        "analysed_epochs": epochs,
    }
    if figures:
        out = run / "figures"
        title = (
            f"tree language L={g.levels} v={g.vocab} m={g.rules_per_symbol} s={g.branching}, "
            f"P={cfg.task.n_train}, {cfg.model.n_layers} layers, seed {cfg.train.seed}"
        )
        chosen = _profile_steps(sorted(profiles), events)
        summary["figures"] = [
            figs.loss_figure(metrics, g.levels, events, title, out / "levels_loss.png").name,
            figs.kl_figure(metrics, g.levels, events, out / "levels_kl.png").name,
            figs.positions_figure(
                {s: profiles[s] for s in chosen},
                {
                    k: floors[k]
                    for k in (0, ds.info["filter_level"])
                    if np.isfinite(floors[k]).all()
                },
                lay.need,
                out / "levels_positions.png",
            ).name,
            figs.cascade_figure(table, g.levels, out / "levels_cascade.png").name,
        ]
    summary["analysis_wall_s"] = round(time.perf_counter() - t0, 3)
    rundir.write_json(run / "summary.json", summary)
    return summary


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
