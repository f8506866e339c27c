"""Figures of a run's analysis (matplotlib Agg, PNG): losses with phases, progress measures,
embedding Fourier norms and circles, neuron frequencies and the logits' 2-D Fourier spectrum.

Reads the analysis table, the summary and a few final-checkpoint arrays; writes PNGs only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from grokscope.measures.fourier import (
    basis_labels,
    centre_grid,
    embed_fourier,
    fourier_2d,
    frequency_norms,
    frequency_rows,
)
from grokscope.measures.neurons import dominant_frequencies
from grokscope.report.figure_io import save_figure, subplots

PHASE_STYLE = (
    ("memorization", "#f4d35e"),
    ("circuit formation", "#7ec4cf"),
    ("cleanup", "#b8e0a8"),
)


def shade_phases(ax, summary: dict, label: bool = True) -> list:
    """Shade the found phases (each band from the previous boundary to its own end, the first
    from epoch 0); returns the band handles (for a legend)."""
    ph = summary.get("phases") or {}
    ends = [ph.get("memorization_end"), ph.get("circuit_formation_end"), ph.get("cleanup_end")]
    left, handles = 0, []
    for (name, color), end in zip(PHASE_STYLE, ends, strict=True):
        if end is None:
            break
        if end > left:
            handles.append(
                ax.axvspan(
                    left, end, color=color, alpha=0.35, lw=0, label=name if label else "_nolegend_"
                )
            )
        left = end
    return handles


def _event_lines(ax, summary: dict) -> None:
    for key, style in (("t_mem_epoch", ":"), ("t_grok_epoch", "--")):
        if summary.get(key) is not None:
            ax.axvline(summary[key], color="0.3", ls=style, lw=1, label=key.replace("_epoch", ""))


def loss_figure(table: pd.DataFrame, summary: dict, path: Path) -> str:
    """Train and test loss (log axis) with the phase bands and t_mem / t_grok."""
    fig, ax = subplots(figsize=(7, 4))
    shade_phases(ax, summary)
    ax.plot(table["epoch"], table["train_loss"], color="C0", label="train loss")
    ax.plot(table["epoch"], table["test_loss"], color="C3", label="test loss")
    _event_lines(ax, summary)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (float64)")
    ax.set_title(f"{summary.get('task', '')}: loss and phases")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3, which="major")
    return save_figure(fig, path).name


def progress_figure(table: pd.DataFrame, summary: dict, path: Path) -> str:
    """Four panels over training: the four losses, Gini, weight norm, Fourier shares."""
    fig, axes = subplots(2, 2, figsize=(11, 7.5), sharex=True)
    ep = table["epoch"]
    bands = []
    for ax in axes.ravel():
        bands = shade_phases(ax, summary, label=False)
    ax = axes[0, 0]
    for col, color in (
        ("train_loss", "C0"),
        ("test_loss", "C3"),
        ("restricted_loss", "C2"),
        ("excluded_loss", "C1"),
    ):
        if table[col].notna().any():
            ax.plot(ep, table[col], color=color, label=col.replace("_", " "))
    ax.set_yscale("log")
    ax.set_title("losses")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for col, color, label in (
        ("gini_embed", "C4", "Gini of W_E Fourier norms"),
        ("gini_unembed", "C5", "Gini of W_L Fourier norms"),
    ):
        if table[col].notna().any():
            ax.plot(ep, table[col], color=color, label=label)
    ax.set_ylim(0, 1)
    ax.set_title("Fourier sparsity (Gini)")
    if ax.get_lines():
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "not applicable\n(no Fourier basis)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.4",
        )
    ax = axes[1, 0]
    ax.plot(ep, table["weight_norm_sq"], color="k")
    ax.set_title("sum of squared weights")
    ax.set_xlabel("epoch")
    ax = axes[1, 1]
    plotted = False
    for col, color, label in (
        ("logit_var_explained", "C2", "logit variance in key directions"),
        ("neuron_single_freq_share", "C6", "neurons with >= 85 % in one freq."),
        ("test_acc", "C3", "test accuracy"),
        ("train_acc", "C0", "train accuracy"),
    ):
        if col in table and table[col].notna().sum() > 1:
            ax.plot(ep, table[col], color=color, label=label)
            plotted = True
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("shares")
    ax.set_xlabel("epoch")
    if plotted:
        ax.legend(fontsize=8)
    keys = summary.get("key_frequencies")
    fig.suptitle(
        f"{summary.get('task', '')}: progress measures"
        + (f" (key frequencies {keys})" if keys else "")
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    if bands:
        fig.legend(
            bands,
            [name for name, _ in PHASE_STYLE[: len(bands)]],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.955),
            ncol=3,
            fontsize=8,
            frameon=False,
        )
    return save_figure(fig, path).name


def embed_norms_figure(embed: np.ndarray, p: int, keys: list[int], path: Path) -> str:
    """Norm of each frequency of the embedding (cos and sin rows together); keys in red."""
    norms = frequency_norms(embed_fourier(embed, p), p)
    fig, ax = subplots(figsize=(max(6, p / 10), 3.5))
    colors = ["C3" if k in keys else "0.6" for k in range(len(norms))]
    ax.bar(np.arange(len(norms)), norms, color=colors, width=0.8)
    for k in keys:
        ax.annotate(str(k), (k, norms[k]), ha="center", va="bottom", fontsize=8, color="C3")
    ax.set_xlabel("frequency k (0 = constant)")
    ax.set_ylabel("norm of W_E component")
    ax.set_title("embedding in the Fourier basis (key frequencies in red)")
    ax.set_xlim(-1, len(norms))
    return save_figure(fig, path).name


def embed_circles_figure(
    embed: np.ndarray,
    p: int,
    keys: list[int],
    path: Path,
    residues: np.ndarray | None = None,
    generator: int | None = None,
) -> str:
    """For each key frequency k: every residue a's embedding projected on the cos k and sin k
    directions of W_E; a Fourier embedding puts a at angle w_k a on a circle.

    With ``generator`` g, row i of ``embed`` is the residue ``residues[i]`` = g^i (the grid of
    x*y and x/y, over Z_p with p = len(embed) = modulus - 1): points are labelled with their
    residue and coloured by their log i, at angle w_k i for a Fourier embedding over logs."""
    coeffs = embed_fourier(embed, p)
    n = len(keys)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = subplots(
        rows, cols, figsize=(4.4 * cols + 1, 4.4 * rows), squeeze=False, layout="constrained"
    )
    E = np.asarray(embed, dtype=np.float64)[:p]
    a = np.arange(p)
    names = a if residues is None else np.asarray(residues)
    for ax, k in zip(axes.ravel(), keys, strict=False):
        r = frequency_rows(p, k)
        u = coeffs[r[0]] / np.linalg.norm(coeffs[r[0]])
        x = E @ u
        if len(r) > 1:
            v = coeffs[r[1]] / np.linalg.norm(coeffs[r[1]])
            y = E @ v
        else:
            y = np.zeros(p)
        order = np.argsort((k * a) % p)
        ax.plot(x[order], y[order], color="0.8", lw=0.8, zorder=1)
        sc = ax.scatter(x, y, c=a, cmap="viridis", s=14, zorder=2)
        for i in a:
            ax.annotate(
                str(names[i]),
                (x[i], y[i]),
                fontsize=5 if p > 60 else 7,
                ha="center",
                va="bottom",
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"k = {k}", fontsize=10)
        ax.set_xlabel(f"W_E[a] . cos {k} direction", fontsize=8)
        ax.set_ylabel(f"W_E[a] . sin {k} direction", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if generator is None:
        label = "residue a"
        how = "a Fourier embedding puts a at angle 2 pi k a / p; grey line: a in order of k a mod p"
    else:
        label = f"i = log_{generator} a"
        how = (
            f"over logs: a = {generator}^i at angle 2 pi k i / {p}; "
            f"grey line: in order of k i mod {p}"
        )
    fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.6, label=label)
    fig.suptitle(
        f"Embedding of each residue a on the key frequencies' cos / sin directions\n({how})",
        fontsize=10,
    )
    return save_figure(fig, path).name


def neuron_histogram_figure(
    fractions: np.ndarray, keys: list[int] | None, threshold: float, path: Path
) -> str:
    """Neurons per dominant frequency; the part with >= ``threshold`` of their energy in it."""
    dom = dominant_frequencies(fractions)
    clean = fractions.max(axis=1) >= threshold
    n_freq = fractions.shape[1]
    all_counts = np.bincount(dom, minlength=n_freq + 1)[1:]
    clean_counts = np.bincount(dom[clean], minlength=n_freq + 1)[1:]
    k = np.arange(1, n_freq + 1)
    fig, ax = subplots(figsize=(max(6, n_freq / 5), 3.5))
    ax.bar(k, all_counts, color="0.75", label="all neurons (dominant frequency)")
    ax.bar(k, clean_counts, color="C0", label=f">= {threshold:.0%} of energy in it")
    for kk in keys or []:
        ax.annotate(
            f"{kk}", (kk, all_counts[kk - 1]), ha="center", va="bottom", fontsize=8, color="C3"
        )
    ax.set_xlabel("frequency k")
    ax.set_ylabel("neurons")
    share = float(clean.mean())
    ax.set_title(f"MLP neurons by dominant frequency ({share:.0%} single-frequency; keys in red)")
    ax.legend(fontsize=8)
    ax.set_xlim(0, n_freq + 1)
    return save_figure(fig, path).name


def logit_spectrum_figure(
    logits: np.ndarray, p: int, keys: list[int], path: Path, generator: int | None = None
) -> str:
    """Norm over classes 0..p-1 of each 2-D Fourier component (a-row, b-column) of the centred
    logits on the grid, log colour scale."""
    z = centre_grid(np.asarray(logits, dtype=np.float64)[:, :p].reshape(p, p, p), p)
    norms = np.sqrt(np.square(fourier_2d(z, p)).sum(axis=2))
    fig, ax = subplots(figsize=(6.5, 5.5))
    vmax = norms.max() if norms.max() > 0 else 1.0
    img = ax.imshow(
        np.maximum(norms, vmax * 1e-4),
        cmap="magma",
        norm=LogNorm(vmin=vmax * 1e-4, vmax=vmax),
        origin="upper",
    )
    if keys:
        # one tick per key frequency, between its cos and sin rows
        ticks = [0.0] + [float(np.mean(frequency_rows(p, k))) for k in keys]
        names = ["const"] + [f"k={k}" for k in keys]
    else:
        ticks = [float(i) for i in range(0, p, max(1, p // 16))]
        names = [basis_labels(p)[int(i)] for i in ticks]
    ax.set_xticks(ticks, names, rotation=90, fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    over = "" if generator is None else f"log_{generator} "
    ax.set_xlabel(f"Fourier component over {over}b (const, cos 1, sin 1, cos 2, ...)")
    ax.set_ylabel(f"Fourier component over {over}a")
    classes = "0..p-1" if generator is None else f"1..{p}"
    ax.set_title(
        f"2-D Fourier spectrum of the centred logits\n(norm over classes {classes}"
        + ("; ticks: key frequencies)" if keys else ")"),
        fontsize=10,
    )
    fig.colorbar(img, ax=ax, label="component norm")
    return save_figure(fig, path).name


def write_analysis_figures(
    folder: Path,
    table: pd.DataFrame,
    summary: dict,
    embed: np.ndarray | None = None,
    fractions: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    p: int | None = None,
    residues: np.ndarray | None = None,
    generator: int | None = None,
) -> list[str]:
    """Write every figure that applies to the run; returns the file names written. For x*y and
    x/y, ``embed`` and ``logits`` are on the discrete-log grid (``p`` = modulus - 1), whose
    residues and generator label the embedding figure."""
    folder = Path(folder)
    keys = summary.get("key_frequencies") or []
    names = [
        loss_figure(table, summary, folder / "loss_phases.png"),
        progress_figure(table, summary, folder / "progress_measures.png"),
    ]
    if embed is not None and p is not None:
        names.append(embed_norms_figure(embed, p, keys, folder / "embedding_fourier_norms.png"))
        if keys:
            names.append(
                embed_circles_figure(
                    embed, p, keys, folder / "key_frequency_circles.png", residues, generator
                )
            )
    if fractions is not None:
        threshold = summary.get("key_frequency_rule", {}).get("single_threshold", 0.85)
        names.append(
            neuron_histogram_figure(
                fractions, keys, threshold, folder / "neuron_frequency_histogram.png"
            )
        )
    if logits is not None and p is not None:
        names.append(
            logit_spectrum_figure(logits, p, keys, folder / "logit_fourier_spectrum.png", generator)
        )
    return names
