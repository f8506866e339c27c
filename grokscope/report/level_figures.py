"""Figures of a tree-language run: the loss with the exact plateaus H_k and the transitions t*_k,
the distance to each level's predictor over training, the per-position loss before and after
each transition, the per-level progress on train and test, and the perturbation cascade."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps

from grokscope.dynamics.levels import level_progress, progress_measure
from grokscope.report.figure_io import save_figure, subplots

LEVEL_COLORS = ("0.5", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
NAMES = ("token", "phrase", "sentence", "paragraph", "section", "level 5", "level 6")


def _mark_transitions(ax, events: dict, split: str = "test") -> None:
    for k, entry in events["levels"].items():
        t = entry.get(split, {}).get("t_star")
        if t is not None:
            ax.axvline(t, color=LEVEL_COLORS[int(k)], ls=":", lw=1.2)
            ax.text(t, 0.98, f" t*{k}", color=LEVEL_COLORS[int(k)], fontsize=8,
                    transform=ax.get_xaxis_transform(), va="top")  # fmt: skip


def loss_figure(
    metrics: pd.DataFrame,
    levels: int,
    events: dict,
    title: str,
    out: Path,
    names: tuple[str, ...] = NAMES,
    every_token: str | None = None,
) -> Path:
    """Train and test loss per leaf token over steps (log x), the plateaus H_0 > ... > H_L of
    the test set drawn as horizontal lines, and each level's transition t*_k marked. The losses
    are read on the leaf tokens, as the plateaus are (``loss_leaf_*``); runs recorded before
    that column fall back to the loss over every token, boundary tokens included, which sits
    below the plateaus by the boundary's share, and the legend says so. ``every_token``: the
    losses are on every token and on the plateaus' footing (documents), so named in the legend;
    ``names`` the levels' names."""
    m = metrics[metrics["step"] > 0].sort_values("step")
    fig, ax = subplots(figsize=(9.5, 4.2), layout="constrained")
    leaf = "loss_leaf_test" in m and every_token is None
    train, test = ("loss_leaf_train", "loss_leaf_test") if leaf else ("train_loss", "test_loss")
    where = "leaf tokens" if leaf else every_token or "every token, boundary included"
    # test thick underneath, train thin and coloured on top: where the two coincide (a large
    # training set) the train curve stays visible
    ax.plot(m["step"], m[test], color="k", lw=2.2, label=f"test ({where})", zorder=2)
    ax.plot(m["step"], m[train], color="tab:orange", lw=1, ls="--", label=f"train ({where})",
            zorder=3)  # fmt: skip
    for k in range(levels + 1):
        h = float(metrics[f"h_l{k}_test"].iloc[0])
        if np.isfinite(h):
            # named in the legend: close plateaus would overprint labels written beside them
            ax.axhline(h, color=LEVEL_COLORS[k], ls="--", lw=1, label=f"H{k} ({names[k]}) {h:.3f}")
    _mark_transitions(ax, events)
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per token (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, out)


def kl_figure(
    metrics: pd.DataFrame, levels: int, events: dict, out: Path, names: tuple[str, ...] = NAMES
) -> Path:
    """KL(q_k || model) on the test set for every level k over steps: the model sits nearest the
    predictor of the level it has reached. Beside it, each level's progress on train (thin) and
    test (thick): its coefficient c_k (older runs: the positional progress f_k)."""
    m = metrics[metrics["step"] > 0].sort_values("step")
    fig, (ax, bx) = subplots(1, 2, figsize=(12, 4))
    for k in range(levels + 1):
        col = f"kl_l{k}_test"
        if col in m and np.isfinite(m[col]).any():
            ax.plot(m["step"], m[col], color=LEVEL_COLORS[k], label=f"level {k} ({names[k]})")
    _mark_transitions(ax, events)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("KL(level-k predictor || model), nats")
    ax.legend(fontsize=8)
    for k in range(1, levels + 1):
        for split, lw in (("train", 0.8), ("test", 2.0)):
            if f"loss_l{k}_{split}" in m or f"coef_l{k}_{split}" in m:
                ls = "-" if split == "test" else "--"
                # the coefficients as fitted, also where the fit is too poor for t*_k to read them
                col = f"coef_l{k}_{split}"
                values = m[col] if col in m else level_progress(m, k, split)
                bx.plot(m["step"], values, color=LEVEL_COLORS[k], lw=lw, ls=ls,
                        label=f"level {k} {split}")  # fmt: skip
    bx.axhline(0.5, color="0.6", lw=0.8)
    bx.axhline(1.0, color="0.6", lw=0.8, ls=":")
    bx.set_xscale("log")
    bx.set_ylim(-0.3, 1.6)
    bx.set_xlabel("step")
    name = "coefficient c_k" if progress_measure(m) == "coefficient" else "positional progress f_k"
    bx.set_ylabel(f"level {name} (1: all of level k)")
    bx.legend(fontsize=7, ncol=2)
    return save_figure(fig, out)


def positions_figure(
    profiles: dict[int, np.ndarray], floors: dict[int, np.ndarray], need: np.ndarray, out: Path
) -> Path:
    """Test loss at every position of the sequence (the token predicted) for chosen checkpoints,
    with the exact plateaus per position; the level each position needs is written under it, and
    unit boundaries are shaded."""
    fig, ax = subplots(figsize=(max(7.5, 0.3 * len(need)), 4))
    x = np.arange(1, len(need))
    cmap = colormaps["viridis"]
    for i, (step, prof) in enumerate(sorted(profiles.items())):
        ax.plot(
            x, prof, marker=".", color=cmap(i / max(len(profiles) - 1, 1)), label=f"step {step}"
        )
    for k, prof in sorted(floors.items()):
        ax.plot(x, prof, color=LEVEL_COLORS[k], ls="--", lw=1, label=f"H{k} per position")
    for t in x:
        lev = need[t]
        ax.text(t, 0.0, "|" if lev == -1 else str(lev), ha="center", va="bottom", fontsize=7,
                color=LEVEL_COLORS[lev] if lev >= 0 else "k",
                transform=ax.get_xaxis_transform())  # fmt: skip
        if lev in (-1, 0):
            ax.axvline(t - 0.5, color="0.8", lw=0.8)
    ax.set_xlabel("position of the predicted token (digits: the level its prediction needs)")
    ax.set_ylabel("test loss (nats)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    return save_figure(fig, out)


def cascade_figure(table: pd.DataFrame, levels: int, out: Path) -> Path:
    """The perturbation cascade over checkpoints: one panel per perturbed level k, the model's
    response relative to the exact predictor's at the positions needing each level j."""
    fig, axes = subplots(1, levels, figsize=(4 * levels, 3.4), sharey=True, squeeze=False)
    t = table[table["epoch"] > 0].sort_values("epoch")
    for i, k in enumerate(range(1, levels + 1)):
        ax = axes[0][i]
        for j in range(levels + 1):
            col = f"cascade_k{k}_j{j}"
            if col in t:
                ax.plot(
                    t["epoch"],
                    t[col],
                    marker=".",
                    color=LEVEL_COLORS[j],
                    label=f"positions needing level {j}",
                )
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"swap a level-{k} node ({NAMES[k]})", fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("model response / exact response")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, out)


def size_figure(runs: pd.DataFrame, fields: list[str], out: Path) -> Path:
    """Across a sweep: each level's final test progress (coefficient c_k) against the
    training-set size P (log x), one panel per level, one line per value of the other grid
    fields (mean over seeds), each run a dot."""
    levels = sorted(int(c.rsplit("l", 1)[1]) for c in runs.columns if c.startswith("progress_l"))
    others = [f for f in fields if f != "task.n_train"]
    fig, axes = subplots(1, len(levels), figsize=(4 * len(levels), 3.4), sharey=True,
                         squeeze=False)  # fmt: skip
    groups = list(runs.groupby(others, sort=True)) if others else [((), runs)]
    cmap = colormaps["viridis"]
    for i, k in enumerate(levels):
        ax = axes[0][i]
        for g, (key, group) in enumerate(groups):
            color = cmap(g / max(len(groups) - 1, 1))
            label = ", ".join(
                f"{f.split('.')[-1]}={v}"
                for f, v in zip(others, key if isinstance(key, tuple) else (key,), strict=True)
            )
            col = f"progress_l{k}"
            pts = group[["task.n_train", col]].dropna()
            ax.scatter(pts["task.n_train"], pts[col], color=color, s=14, alpha=0.7)
            mean = pts.groupby("task.n_train")[col].mean()
            ax.plot(mean.index, mean.values, color=color, label=label or None)
        ax.axhline(0.5, color="0.6", lw=0.8)
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training sequences P")
        ax.set_title(f"level {k} ({NAMES[k]})", fontsize=9)
    axes[0][0].set_ylabel("final test progress of level k")
    if others:
        axes[0][-1].legend(fontsize=7)
    return save_figure(fig, out)
