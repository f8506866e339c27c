"""Figures of a fitted latent-state training map (Hu, Chen, Saphra & Cho, TMLR 2023).

Three PNGs: the state transition graph (the paper's "training map"), every run's decoded
state over epochs, and the BIC curve used to choose the number of states. Figures are made
and saved by :mod:`grokscope.report.figure_io` (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from grokscope.dynamics.hmm import TrainingMap
from grokscope.report.figure_io import new_figure, save_figure


def _state_colours(n_states: int) -> ListedColormap:
    """A qualitative colour per state (tab10, or tab20 beyond ten states)."""
    base = colormaps["tab10" if n_states <= 10 else "tab20"]
    return ListedColormap([base(i % base.N) for i in range(n_states)])


def _layout(tm: TrainingMap) -> np.ndarray:
    """Node positions: x follows the state order (by when states are occupied); obligatory
    states sit on the centre line, optional ones alternate above and below it."""
    pos = np.zeros((tm.n_states_, 2))
    side = 1.0
    for s in tm.states_:
        pos[s.id, 0] = s.id
        if not s.obligatory:
            pos[s.id, 1] = side
            side = -side
    return pos


def plot_training_map(tm: TrainingMap, path: str | Path) -> Path:
    """Draw the state transition graph of a fitted TrainingMap and save it as a PNG.

    Node area is proportional to occupancy, node colour is the mean convergence epoch of
    the runs that visit the state (grey where unknown), detour states get a red outline, and
    each decoded transition is an arrow labelled with its model probability and count.
    """
    pos = _layout(tm)
    fig = new_figure(figsize=(max(6.0, 1.6 * tm.n_states_ + 2.5), 4.8), layout="constrained")
    ax = fig.add_subplot()

    conv = [s.mean_convergence_epoch_visitors for s in tm.states_]
    known = [c for c in conv if c is not None]
    norm = Normalize(min(known), max(known)) if known else Normalize(0.0, 1.0)
    if known and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 1.0, norm.vmax + 1.0)
    cmap = colormaps["viridis"]
    sizes = 300.0 + 4000.0 * np.asarray(tm.occupancy_)
    radius_pts = np.sqrt(sizes / np.pi)

    max_count = max((t.count for t in tm.transitions_), default=1)
    for t in tm.transitions_:
        arrow = FancyArrowPatch(
            tuple(pos[t.source]),
            tuple(pos[t.target]),
            connectionstyle="arc3,rad=0.25",
            arrowstyle="-|>",
            mutation_scale=14,
            linewidth=0.8 + 2.5 * t.count / max_count,
            color="0.35",
            shrinkA=radius_pts[t.source] + 2,
            shrinkB=radius_pts[t.target] + 2,
            zorder=1,
        )
        ax.add_patch(arrow)
        # Label at the bulge of the arc: midpoint pushed sideways, as arc3 bends it.
        mid = (pos[t.source] + pos[t.target]) / 2
        delta = pos[t.target] - pos[t.source]
        normal = np.array([delta[1], -delta[0]]) * 0.25 / 2
        ax.annotate(
            f"p={t.probability:.2f}\nn={t.count}",
            mid + normal,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.8", "alpha": 0.9},
            zorder=3,
        )

    colours = [cmap(norm(c)) if c is not None else (0.7, 0.7, 0.7, 1.0) for c in conv]
    edge = ["crimson" if s.detour else "black" for s in tm.states_]
    width = [3.0 if s.detour else 1.0 for s in tm.states_]
    ax.scatter(
        pos[:, 0], pos[:, 1], s=sizes, c=colours, edgecolors=edge, linewidths=width, zorder=2
    )
    for s in tm.states_:
        ax.annotate(
            f"S{s.id}",
            pos[s.id],
            ha="center",
            va="center",
            fontsize=9,
            fontweight="bold",
            color="white",
            zorder=4,
        )
        above = pos[s.id, 1] > 0  # keep the caption away from the arrows below/above
        offset = radius_pts[s.id] + 4
        ax.annotate(
            f"{s.occupancy:.0%} of time\n{len(s.visited_runs)}/{tm.n_runs_} runs",
            pos[s.id],
            xytext=(0, offset if above else -offset),
            textcoords="offset points",
            ha="center",
            va="bottom" if above else "top",
            fontsize=7,
            zorder=4,
        )

    if known:
        fig.colorbar(
            ScalarMappable(norm, cmap), ax=ax, label="mean convergence epoch of visiting runs"
        )
    ax.legend(
        handles=[
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                mfc="white",
                mec="crimson",
                mew=2.5,
                ms=11,
                label="detour state",
            ),
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                mfc="white",
                mec="black",
                ms=11,
                label="other state (size = occupancy)",
            ),
            Line2D(
                [],
                [],
                color="0.35",
                lw=2,
                label="decoded transition: p = model probability per\n"
                "checkpoint, n = times seen (width ~ n)",
            ),
        ],
        loc="upper left",
        fontsize=7,
        frameon=False,
    )
    ax.set_xlim(-0.7, tm.n_states_ - 0.3)
    ax.set_ylim(pos[:, 1].min() - 1.0, pos[:, 1].max() + 1.0)
    ax.set_xticks(range(tm.n_states_))
    ax.set_xlabel("state (numbered by when runs occupy it)")
    ax.set_yticks([])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    plural = "s" if tm.n_states_ != 1 else ""
    note = "" if known else "\n(no convergence epochs: nodes grey)"
    ax.set_title(f"Training map: {tm.n_states_} latent state{plural}, {tm.n_runs_} runs{note}")
    return save_figure(fig, path)


def plot_state_sequences(
    tm: TrainingMap, epochs: list[np.ndarray] | None, path: str | Path
) -> Path:
    """Raster of every run's decoded state over epochs (rows sorted by convergence epoch).

    ``epochs`` gives each run's checkpoint epochs (None: those passed to ``fit``). Runs that
    never converged are placed last; black ticks mark each run's convergence epoch.
    """
    epochs = tm.epochs_ if epochs is None else [np.asarray(e, dtype=float) for e in epochs]
    conv = tm.convergence_epochs_
    order = np.argsort(np.where(np.isnan(conv), np.inf, conv), kind="stable")
    n = tm.n_states_
    cmap = _state_colours(n)
    norm = BoundaryNorm(np.arange(-0.5, n), n)

    fig = new_figure(figsize=(8.0, min(9.0, 2.2 + 0.16 * tm.n_runs_)), layout="constrained")
    ax = fig.add_subplot()
    for row, run in enumerate(order):
        ep = epochs[run]
        mids = (ep[1:] + ep[:-1]) / 2
        edges = np.concatenate([[ep[0] - (mids[0] - ep[0])], mids, [ep[-1] + (ep[-1] - mids[-1])]])
        ax.pcolormesh(edges, [row, row + 1], tm.paths_[run][None, :], cmap=cmap, norm=norm)
        if np.isfinite(conv[run]):
            ax.plot([conv[run]] * 2, [row + 0.1, row + 0.9], color="black", lw=1.5)
    ax.set_ylim(tm.n_runs_, 0)
    step = max(1, tm.n_runs_ // 25)
    ax.set_yticks(np.arange(0, tm.n_runs_, step) + 0.5, [str(r) for r in order[::step]], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("run (sorted by convergence epoch)")
    n_cens = int(np.isnan(conv).sum())
    censored = f"; {n_cens} never-converged runs at the bottom" if n_cens else ""
    ax.set_title(f"Decoded latent state per checkpoint{censored}")
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, ticks=range(n))
    bar.set_ticklabels([f"S{s}" + (" (detour)" if s in tm.detours_ else "") for s in range(n)])
    bar.set_label("state")
    ax.legend(
        handles=[Line2D([], [], color="black", lw=1.5, label="convergence epoch")],
        loc="lower right",
        fontsize=7,
    )
    return save_figure(fig, path)


def plot_bic(tm: TrainingMap, path: str | Path) -> Path:
    """BIC against the number of states, with the chosen number marked."""
    ns = np.array(sorted(tm.bic_))
    bic = np.array([tm.bic_[n] for n in ns], dtype=float)
    ok = np.isfinite(bic)
    fig = new_figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ns[ok], bic[ok], marker="o", color="tab:blue", label="BIC")
    ax.axvline(tm.n_states_, color="crimson", ls="--", label=f"chosen: {tm.n_states_} states")
    ax.set_xticks(ns)
    ax.set_xlabel("number of latent states")
    where = "held-out runs" if tm.selection_on_heldout_ else "training runs (no held-out run)"
    ax.set_ylabel(f"BIC on {where}")
    ax.set_title("Model selection for the training map (lower is better)")
    ax.legend()
    return save_figure(fig, path)
