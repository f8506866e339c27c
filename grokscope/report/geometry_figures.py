"""Figures of the embedding's geometry over training: clouds to circles (small multiples and an
animated GIF), and the geometry columns of analysis.parquet over epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.animation import FuncAnimation

from grokscope.dynamics.phases import PHASE_KEYS
from grokscope.measures.geometry import circularity, frequency_plane
from grokscope.report.figure_io import save_animation, save_figure, subplots

MAX_FRAMES = 60


def _pick(epochs: list[int], n: int) -> list[int]:
    """``n`` epochs spread evenly in log(1 + epoch) over ``epochs`` (all when fewer)."""
    if len(epochs) <= n:
        return list(epochs)
    grid = np.log1p(np.asarray(epochs, dtype=float))
    targets = np.linspace(grid[0], grid[-1], n)
    idx = sorted({int(np.abs(grid - t).argmin()) for t in targets})
    return [epochs[i] for i in idx]


def _scatter(ax, E: np.ndarray, k: int, title: str) -> None:
    coords = frequency_plane(E, k)
    p = len(E)
    ax.scatter(coords[:, 0], coords[:, 1], c=np.arange(p), cmap="hsv", s=9, vmin=0, vmax=p)
    ax.set_title(f"{title}\ncircularity at k={k}: {circularity(E, k):.2f}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def phase_tag(epoch: int, phases: dict | None, t_mem: int | None, t_grok: int | None) -> str:
    """The phase an epoch falls in, by the run's phase ends (Nanda et al. 2023: memorization,
    circuit formation, cleanup), where they were found; otherwise only what the events say
    (after t_mem, after t_grok), since an epoch past t_mem may already be forming the circuit."""
    phases = phases or {}
    ends = [phases.get(k) for k in PHASE_KEYS]
    if all(e is not None for e in ends):
        names = ("memorization", "circuit formation", "cleanup")
        for end, name in zip(ends, names, strict=True):
            if epoch <= end:
                return f" ({name})"
        return " (after cleanup)"
    if t_grok is not None and epoch >= t_grok:
        return " (after t_grok)"
    if t_mem is not None and epoch >= t_mem:
        return " (after t_mem)"
    return ""


def embedding_evolution_figure(
    embeddings: dict[int, np.ndarray],
    k: int,
    t_mem: int | None,
    t_grok: int | None,
    out: Path,
    phases: dict | None = None,
) -> str:
    """Small multiples: the embedding of every residue (colour: its position on the operand grid)
    on the principal plane of its frequency-k components (:func:`frequency_plane`; k: the final
    checkpoint's most circular key frequency), at up to 8 checkpoints spread in log epoch, each
    titled with its phase (:func:`phase_tag`). Before grokking a cloud, after it a circle (Zhong
    et al. 2023, Nanda et al. 2023)."""
    epochs = _pick(sorted(embeddings), 8)
    cols = min(4, len(epochs))
    rows = int(np.ceil(len(epochs) / cols))
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for ax, epoch in zip(axes.flat, epochs, strict=False):
        tag = phase_tag(epoch, phases, t_mem, t_grok)
        _scatter(ax, embeddings[epoch], k, f"epoch {epoch}{tag}")
    for ax in list(axes.flat)[len(epochs) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out).name


def embedding_animation(embeddings: dict[int, np.ndarray], k: int, out: Path) -> str:
    """The same projection at every analysed checkpoint (at most 60, spread in log epoch) as an
    animated GIF (Pillow)."""
    epochs = _pick(sorted(embeddings), MAX_FRAMES)
    fig, ax = subplots(figsize=(3.6, 3.8))

    def draw(i: int):
        ax.clear()
        _scatter(ax, embeddings[epochs[i]], k, f"epoch {epochs[i]}")
        return []

    anim = FuncAnimation(fig, draw, frames=len(epochs), blit=False)
    return save_animation(anim, out, fps=6).name


# legend words for the geometry columns
LABELS = {
    "circularity_keys": "circles at the key frequencies (share of variance)",
    "circularity_best": "circle at the best frequency (share of all variance)",
    "pca_circularity": "PCA circularity (Zhong et al.)",
    "fourier_ipr_pooled": "Fourier IPR, pooled (ours)",
    "gromov_ipr": "Gromov's IPR, per column",
    "rqi": "RQI (Liu et al.), 10 % tolerance; 0 on circles",
    "ildr": "ILDR, penultimate layer, test inputs",
    "distance_irrelevance": "distance irrelevance",
    "gradient_symmetricity": "gradient symmetricity",
    "hessian_top1": "top Hessian eigenvalue",
    "hessian_trace": "Hessian trace",
    "sharpness_norm_scaled": "norm-scaled sharpness λ_max |θ|²",
    "sharpness_scaled_hessian": "scaled-Hessian sharpness λ_max(DHD)",
    "train_loss": "training loss",
}


def geometry_figure(table: pd.DataFrame, t_mem: int | None, t_grok: int | None, out: Path) -> str:
    """The geometry columns over training (log epoch): circularity (key frequencies, best
    frequency, PCA), Fourier IPR, RQI, the clock-vs-pizza pair and ILDR (a ratio, on a log
    scale of its own), with t_mem and t_grok."""
    t = table[table["epoch"] > 0].sort_values("epoch")
    fig, axes = subplots(1, 4, figsize=(17, 3.5))
    panels = (
        (("circularity_keys", "circularity_best", "pca_circularity"), "circularity"),
        (("fourier_ipr_pooled", "gromov_ipr", "rqi"), "Fourier IPR / RQI"),
        (("distance_irrelevance", "gradient_symmetricity"), "clock (q~1, s~0.3) vs pizza"),
        (("ildr",), "inter- / intra-class distance"),
    )
    if "ildr" in t and (t["ildr"].astype(float) > 0).any():
        axes[3].set_yscale("log")
    for ax, (cols, label) in zip(axes, panels, strict=True):
        for col in cols:
            if col in t and t[col].notna().any():
                ax.plot(t["epoch"], t[col].astype(float), marker=".", ms=3, label=LABELS[col])
        for when, color in ((t_mem, "tab:blue"), (t_grok, "tab:red")):
            if when:
                ax.axvline(when, color=color, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out).name


def curvature_figure(table: pd.DataFrame, t_mem: int | None, t_grok: int | None, out: Path) -> str:
    """Curvature of the training loss over training (log-log): top Hessian eigenvalue, Hessian
    trace, norm-scaled and scaled-Hessian sharpness, with the training loss they scale with;
    beside it the local learning coefficient (with its spread over chains; hollow grey where the
    calibration found it outside its regime); t_mem and t_grok dotted."""
    t = table[table["hessian_top1"].notna() & (table["epoch"] > 0)].sort_values("epoch")
    fig, (ax, bx) = subplots(1, 2, figsize=(12, 3.8))
    cols = ("hessian_top1", "hessian_trace", "sharpness_norm_scaled", "sharpness_scaled_hessian",
            "train_loss")  # fmt: skip
    for col in cols:
        v = t[col].astype(float)
        keep = v > 0
        ax.plot(t["epoch"][keep], v[keep], marker=".", label=LABELS[col])
    ax.set_yscale("log")
    ok = t["llc_reliable"].astype(float) > 0.5 if "llc_reliable" in t else t["llc"].notna()
    bx.errorbar(t["epoch"][ok], t["llc"][ok], yerr=t["llc_se"][ok], marker=".", color="k",
                ls="none", label="llc (calibrated, reliable)")  # fmt: skip
    if (~ok).any():
        bx.plot(t["epoch"][~ok], t["llc"][~ok], marker="o", mfc="none", color="0.6", ls="none",
                label="llc, not reliable")  # fmt: skip
    for a in (ax, bx):
        for when, color in ((t_mem, "tab:blue"), (t_grok, "tab:red")):
            if when:
                a.axvline(when, color=color, ls=":", lw=1)
        a.set_xscale("log")
        a.set_xlabel("epoch")
        a.legend(fontsize=7)
    ax.set_ylabel("curvature of the training loss")
    bx.set_ylabel("local learning coefficient")
    fig.tight_layout()
    return save_figure(fig, out).name
