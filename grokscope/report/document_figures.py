"""Figures of a document-language run: the loss staircase with the exact plateaus, each level's
distance and coefficient over training, the adaptation curve after a topic change over
training beside the exact Bayesian curves, and the responses to the edits over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps

from grokscope.measures.document_interventions import EDITS
from grokscope.report.figure_io import save_figure, subplots
from grokscope.report.level_figures import LEVEL_COLORS, kl_figure, loss_figure
from grokscope.tasks.documents import LEVEL_NAMES, LEVELS

EDIT_COLORS = {
    "insert_marker": "#d62728",
    "remove_marker": "#ff7f0e",
    "swap_topic": "#2ca02c",
    "shuffle": "#1f77b4",
}


def staircase(metrics: pd.DataFrame, events: dict, title: str, out: Path) -> Path:
    """Train and test loss per token with the plateaus H_0 .. H_4 and the transitions t*_k."""
    return loss_figure(
        metrics, LEVELS, events, title, out, names=LEVEL_NAMES, every_token="every token"
    )


def levels(metrics: pd.DataFrame, events: dict, out: Path) -> Path:
    """KL to each level's predictor and each level's coefficient over training."""
    return kl_figure(metrics, LEVELS, events, out, names=LEVEL_NAMES)


def adaptation(curves: dict[int, np.ndarray], exact: np.ndarray, out: Path, most: int = 6) -> Path:
    """The model's loss on the d-th content word after a topic change at several checkpoints
    (colour: training time), with the exact curves of the paragraph, trajectory and genre
    levels dashed: a model that adapts like the Bayes predictor meets them."""
    fig, ax = subplots(figsize=(9, 4.2), layout="constrained")
    steps = sorted(s for s in curves if s > 0) or sorted(curves)
    if len(steps) > most:
        steps = [steps[int(i)] for i in np.unique(np.linspace(0, len(steps) - 1, most).round())]
    cmap = colormaps["viridis"]
    d = np.arange(len(exact[0]))
    for i, s in enumerate(steps):
        ax.plot(d, curves[s], color=cmap(i / max(len(steps) - 1, 1)), lw=1.5, label=f"step {s}")
    for k in (1, 2, 3, 4):
        ax.plot(d, exact[k], color=LEVEL_COLORS[k], ls="--", lw=1.2,
                label=f"exact, level {k} ({LEVEL_NAMES[k]})")  # fmt: skip
    ax.set_xlabel("content word of the new paragraph (0: the first after the boundary)")
    ax.set_ylabel("loss (nats)")
    ax.set_title("adaptation after a topic change", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out)


def interventions(table: pd.DataFrame, out: Path) -> Path:
    """Each edit's response over training: the signed change of the target topic's share in the
    model's predictions at the probes over the exact predictor's
    (:func:`grokscope.measures.document_interventions.edit_response`; 1: as an optimal model;
    above 1: over-reacts)."""
    t = table[table["epoch"] > 0].sort_values("epoch")
    fig, ax = subplots(figsize=(7, 4.2))
    for name in EDITS:
        col = f"response_{name}"
        if col in t and np.isfinite(t[col]).any():
            ax.plot(t["epoch"], t[col], color=EDIT_COLORS[name], lw=1.8, label=name)
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("topic-share change, model / exact")
    ax.set_title("responses to edits of the document", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
