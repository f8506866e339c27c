"""Figures of a sequence run: accuracy in and out of distribution, tree-structuredness over
training, induced trees beside gold trees, and the depth experiment across runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.report.figure_io import save_figure, subplots
from grokscope.tasks.sequence import Tree

ID_COLOR, GEN_COLOR = "#1f77b4", "#d62728"


def accuracy_figure(
    metrics: pd.DataFrame,
    events: dict,
    title: str,
    out: Path,
    thresholds: tuple[float, float] | None = None,
    words: str = "accuracy",
) -> Path:
    """In-distribution and generalization accuracy (``words``: what the two columns measure)
    and the LM loss over steps; t_id / t_gen marked where reached, and said in the legend
    where not (with the ``thresholds`` they did not reach), so no caption names a line that
    is not drawn."""
    fig, (ax, bx) = subplots(1, 2, figsize=(10, 3.6))
    m = metrics.sort_values("epoch")
    ax.plot(m["epoch"], m["id_acc"], color=ID_COLOR, label="in distribution (test)")
    ax.plot(m["epoch"], m["gen_acc"], color=GEN_COLOR, label="generalization")
    marks = (("t_id_step", ID_COLOR, "t_id", 0), ("t_gen_step", GEN_COLOR, "t_gen", 1))
    for key, color, name, i in marks:
        if events.get(key) is not None:
            ax.axvline(events[key], color=color, ls=":", lw=1)
            ax.text(events[key], 0.02, f" {name}", color=color, fontsize=8)
        else:
            below = f" (< {thresholds[i]:g})" if thresholds else ""
            ax.plot([], [], color=color, ls=":", lw=1, label=f"{name} not reached{below}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel(words)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    bx.plot(m["epoch"], m["train_loss"], color="0.3", label="train")
    bx.plot(m["epoch"], m["test_loss"], color=ID_COLOR, label="in distribution")
    bx.plot(m["epoch"], m["gen_loss"], color=GEN_COLOR, label="generalization")
    bx.set_yscale("log")
    bx.set_xlabel("step")
    bx.set_ylabel("LM loss per token")
    bx.legend(fontsize=8)
    fig.tight_layout(w_pad=2.0)
    return save_figure(fig, out)


def tree_measures_figure(table: pd.DataFrame, out: Path) -> Path:
    """Tree score and bracketing F1 over training, with the two rival predictors (weight norm,
    attention entropy) in their own panels."""
    fig, axes = subplots(1, 3, figsize=(12, 3.4))
    t = table.sort_values("epoch")
    axes[0].plot(t["epoch"], t["tree_score"], color="k", marker=".", label="tree score")
    axes[0].set_ylabel("tree score")
    f1 = axes[0].twinx()
    f1.plot(t["epoch"], t["bracket_f1"], color="#2ca02c", marker=".", label="bracketing F1")
    f1.set_ylabel("bracketing F1 vs gold", color="#2ca02c")
    f1.set_ylim(0, 1)
    axes[1].plot(t["epoch"], t["weight_norm"], color="#9467bd", marker=".")
    axes[1].set_ylabel("weight norm")
    axes[2].plot(t["epoch"], t["attn_entropy"], color="#ff7f0e", marker=".")
    axes[2].set_ylabel("attention entropy (nats)")
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].set_title("tree-structuredness (Murty et al. 2023)", fontsize=10)
    fig.tight_layout(w_pad=3.0)
    return save_figure(fig, out)


def _layout(tree: Tree) -> tuple[list[tuple[float, float, float, float]], float]:
    """Line segments (x0, y0, x1, y1) of a tree drawn as a dendrogram over leaf positions, and
    its height. A node is a horizontal bar over its children at one above the tallest of them,
    each child hangs from the bar by a vertical line at its own x: a subtree stays inside the
    box of its leaves below its height, so no two lines cross (a diagonal from a node to a far
    child can pass through a taller sibling; tests/test_structural_tasks.py checks)."""
    segments: list[tuple[float, float, float, float]] = []

    def walk(t: Tree) -> tuple[float, float]:
        """(x, y) of ``t``'s top: the middle of its children's x, one above the tallest."""
        if isinstance(t, int | np.integer):
            return float(t), 0.0
        kids = [walk(c) for c in t]
        y = max(k[1] for k in kids) + 1.0
        x0, x1 = kids[0][0], kids[-1][0]
        segments.append((x0, y, x1, y))
        for kx, ky in kids:
            segments.append((kx, y, kx, ky))
        return (x0 + x1) / 2.0, y

    _, height = walk(tree)
    return segments, height


def _draw_tree(ax, tree: Tree, words: Sequence[str], title: str, color: str) -> None:
    segments, height = _layout(tree)
    for x0, y0, x1, y1 in segments:
        ax.plot([x0, x1], [y0, y1], color=color, lw=1.2)
    for i, w in enumerate(words):
        ax.text(i, -0.3, w, rotation=60, ha="right", va="top", fontsize=7)
    ax.set_xlim(-0.8, len(words) - 0.2)
    ax.set_ylim(-0.2, height + 0.4)
    ax.axis("off")
    ax.set_title(title, fontsize=8)


def trees_figure(examples: list[dict], out: Path) -> Path:
    """For each example ({words, induced, gold, f1}): the induced tree beside the gold tree."""
    fig, axes = subplots(len(examples), 2, figsize=(11, 2.6 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples, strict=True):
        _draw_tree(row[0], ex["induced"], ex["words"], f"induced (F1 {ex['f1']:.2f})", "k")
        _draw_tree(row[1], ex["gold"], ex["words"], "gold parse", "#2ca02c")
    fig.tight_layout()
    return save_figure(fig, out)


def depth_figure(curves: dict, title: str, out: Path, label: str = "") -> Path:
    """Generalization accuracy over steps per cell (e.g. per depth), one thin line per seed and
    their mean over the steps all of them reached; in-distribution accuracy faint."""
    depths = sorted(curves)
    fig, axes = subplots(1, len(depths), figsize=(3.4 * len(depths), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, depth in zip(axes, depths, strict=True):
        tables = curves[depth]
        for t in tables:
            t = t.sort_values("epoch")
            ax.plot(t["epoch"], t["gen_acc"], color=GEN_COLOR, alpha=0.35, lw=1)
            ax.plot(t["epoch"], t["id_acc"], color=ID_COLOR, alpha=0.25, lw=0.8)
        common = sorted(set.intersection(*(set(t["epoch"]) for t in tables)))
        if common:
            mean = np.mean(
                [t.set_index("epoch").loc[common, "gen_acc"].to_numpy() for t in tables], axis=0
            )
            ax.plot(common, mean, color=GEN_COLOR, lw=2.2, label="generalization (mean)")
        seeds = f"{len(tables)} seed" + ("s" if len(tables) != 1 else "")
        ax.set_title(f"{label}{depth} ({seeds})", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("accuracy (blue: in distribution)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
