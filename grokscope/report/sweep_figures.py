"""Sweep figures: grokking time against a swept field, and a phase diagram over two fields.

Both read the tables of :mod:`grokscope.sweep.summary` (runs and cells) and write PNGs; nothing
is computed here that the tables do not already hold.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from grokscope.dynamics.sweep_stats import PHASES
from grokscope.report.figure_io import save_figure, subplots

PHASE_COLORS = {
    "comprehension": "#4daf4a",
    "grokking": "#984ea3",
    "memorization": "#e41a1c",
    "confusion": "#999999",
}
SHORT = {"comprehension": "comp", "grokking": "grok", "memorization": "mem", "confusion": "conf"}
SERIES_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def _label(field: str) -> str:
    return field.split(".")[-1].replace("_", " ")


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _ordered(values: pd.Series) -> list:
    """Distinct values in order of appearance (the cells follow the sweep file's grid order)."""
    return list(dict.fromkeys(values.tolist()))


def grok_time_figure(
    runs: pd.DataFrame,
    cells: pd.DataFrame,
    field: str,
    others: list[str],
    path: Path,
    title: str = "",
) -> Path:
    """t_grok against ``field``: every seed (filled dot = grokked at that epoch, open triangle =
    not grokked by the epoch it reached, i.e. censored; a cross = diverged, which never groks and
    stays at risk to the budget), the Kaplan-Meier median (black bar)
    and its interval (line; an arrow when the upper end is unbounded), and k/n grokked."""
    xs = _ordered(cells[field])
    groups = [()] if not others else list(dict.fromkeys(map(tuple, cells[others].values.tolist())))
    width = 0.7 / max(len(groups), 1)
    fig, ax = subplots(figsize=(max(8.5, 1.1 * len(xs) * max(1, len(groups)) ** 0.5 + 4), 4.8))
    top = max(float(runs["epochs_budget"].max() or 1), 1.0)
    handles = []
    for gi, group in enumerate(groups):
        color = SERIES_COLORS[gi % len(SERIES_COLORS)] if others else "#1f77b4"
        sel = np.ones(len(cells), dtype=bool)
        rsel = np.ones(len(runs), dtype=bool)
        for f, v in zip(others, group, strict=True):
            sel &= (cells[f] == v).to_numpy()
            rsel &= (runs[f] == v).to_numpy()
        offset = (gi - (len(groups) - 1) / 2) * width
        for xi, xv in enumerate(xs):
            c = cells[sel & (cells[field] == xv).to_numpy()]
            r = runs[rsel & (runs[field] == xv).to_numpy()]
            if c.empty:
                continue
            c = c.iloc[0]
            x = xi + offset
            jitter = np.linspace(-0.25, 0.25, len(r)) * width if len(r) > 1 else np.zeros(len(r))
            grokked = r["t_grok_epoch"].notna().to_numpy()
            diverged = (r["state"] == "diverged").to_numpy()
            t = np.where(grokked, r["t_grok_epoch"].fillna(0).astype(float), r["epochs_done"])
            ax.scatter(x + jitter[grokked], t[grokked], s=28, color=color, alpha=0.75, zorder=3)
            ax.scatter(x + jitter[diverged], t[diverged], s=36, marker="x", color=color, zorder=3)
            waiting = ~grokked & ~diverged
            ax.scatter(
                x + jitter[waiting],
                t[waiting],
                s=36,
                marker="^",
                facecolors="none",
                edgecolors=color,
                linewidths=1.2,
                zorder=3,
            )
            lo, med, hi = c["t_grok_lo"], c["t_grok_median"], c["t_grok_hi"]
            if not math.isnan(lo):
                upper = hi if not math.isnan(hi) else top * 1.6
                ax.plot([x, x], [lo, upper], color="black", lw=1.2, zorder=2)
                if math.isnan(hi):
                    ax.annotate(
                        "",
                        xy=(x, top * 1.9),
                        xytext=(x, top * 1.5),
                        arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2},
                    )
            if not math.isnan(med):
                ax.plot(
                    [x - 0.3 * width, x + 0.3 * width], [med, med], color="black", lw=2.5, zorder=4
                )
            ax.text(
                x,
                top * 2.6,
                f"{int(c['n_grokked'])}/{int(c['n_runs'])}",
                ha="center",
                va="bottom",
                fontsize=8,
                color=color if others else "black",
            )
        if others:
            name = ", ".join(f"{_label(f)}={_fmt(v)}" for f, v in zip(others, group, strict=True))
            handles.append(Patch(color=color, label=name))
    ax.set_yscale("log")
    low = runs["t_grok_epoch"].dropna()
    bottom = max(1.0, float(low.min()) / 2) if len(low) else 1.0
    ax.set_ylim(bottom, top * 4.5)
    ax.axhline(top, color="0.6", ls=":", lw=1)
    ax.text(-0.55, top * 1.08, "budget", va="bottom", ha="left", fontsize=8, color="0.4")
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.set_xlabel(_label(field))
    ax.set_ylabel("epochs to grok (test acc >= threshold)")
    marker_handles = [
        Line2D([], [], marker="o", ls="", color="0.3", label="seed: grokked at"),
        Line2D(
            [],
            [],
            marker="^",
            ls="",
            markerfacecolor="none",
            color="0.3",
            label="seed: not grokked by (censored)",
        ),
        Line2D(
            [], [], marker="x", ls="", color="0.3", label="seed: diverged (at risk to the budget)"
        ),
        Line2D([], [], color="black", lw=2.5, label="Kaplan-Meier median, 95 % interval"),
    ]
    ax.legend(
        handles=marker_handles + handles,
        fontsize=8,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
    )
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}grokking time vs {_label(field)} (k/n: seeds that grokked)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def phase_diagram(
    cells: pd.DataFrame, x_field: str, y_field: str | None, path: Path, title: str = ""
) -> Path:
    """Two panels over (x_field, y_field): the majority phase class of each cell (with its
    counts), and the Kaplan-Meier median grokking time (grey: median not reached)."""
    xs = _ordered(cells[x_field])
    ys = _ordered(cells[y_field]) if y_field else [None]
    if y_field:  # side by side
        fig, (ax_p, ax_t) = subplots(
            1, 2, figsize=(2 * (1.25 * len(xs) + 1.2) + 1.5, 0.85 * len(ys) + 2.6)
        )
    else:  # one row of cells: the two panels stacked
        fig, (ax_p, ax_t) = subplots(2, 1, figsize=(max(7.0, 1.15 * len(xs) + 2.5), 5.2))
    times = np.full((len(ys), len(xs)), np.nan)
    for (yi, yv), (xi, xv) in itertools.product(enumerate(ys), enumerate(xs)):
        sel = cells[x_field] == xv
        if y_field:
            sel &= cells[y_field] == yv
        c = cells[sel]
        if c.empty:
            continue
        c = c.iloc[0]
        phase = c["phase"]
        ax_p.add_patch(
            Rectangle(
                (xi - 0.5, yi - 0.5), 1, 1, color=PHASE_COLORS.get(phase, "white"), alpha=0.85
            )
        )
        counts = ", ".join(f"{SHORT[p]} {int(c[f'n_{p}'])}" for p in PHASES if c[f"n_{p}"])
        ax_p.text(xi, yi, f"{phase or '?'}\n{counts}", ha="center", va="center", fontsize=8)
        times[yi, xi] = c["t_grok_median"]
        label = "not\nreached" if math.isnan(c["t_grok_median"]) else f"{c['t_grok_median']:g}"
        ax_t.text(
            xi,
            yi,
            f"{label}\n{int(c['n_grokked'])}/{int(c['n_runs'])}",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    for ax in (ax_p, ax_t):
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_ylim(-0.5, len(ys) - 0.5)
        ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)), [_fmt(v) for v in ys] if y_field else [""])
        ax.set_xlabel(_label(x_field))
        if y_field:
            ax.set_ylabel(_label(y_field))
    finite = times[np.isfinite(times)]
    cmap = colormaps["viridis"]
    cmap = cmap.with_extremes(bad="0.85")
    if len(finite):
        norm = LogNorm(vmin=max(finite.min(), 1), vmax=max(finite.max(), finite.min() + 1))
        img = ax_t.imshow(
            np.ma.masked_invalid(times),
            origin="lower",
            cmap=cmap,
            norm=norm,
            aspect="auto",
            extent=(-0.5, len(xs) - 0.5, -0.5, len(ys) - 0.5),
            alpha=0.8,
        )
        fig.colorbar(img, ax=ax_t, label="median epochs to grok")
    else:
        ax_t.set_facecolor("0.85")
    legend = [Patch(color=PHASE_COLORS[p], label=p) for p in PHASES]
    ax_p.legend(
        handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )
    rule = f" (grokking: {cells['phase_rule'].iloc[0]})" if "phase_rule" in cells else ""
    ax_p.set_title(
        f"phase (Liu et al. 2022) of the majority of seeds{rule};\n"
        "counts: seeds per phase (comp., grok., mem., conf.)",
        fontsize=9,
    )
    ax_t.set_title("Kaplan-Meier median epochs to grok; k/n grokked", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_figures(
    runs: pd.DataFrame, cells: pd.DataFrame, fields: list[str], folder: Path, title: str = ""
) -> list[Path]:
    """grok_time_<field>.png for the first swept field (the others as series) and
    phase_diagram.png over the first two (further fields: one diagram per value combination)."""
    folder = Path(folder)
    paths = [
        grok_time_figure(
            runs,
            cells,
            fields[0],
            fields[1:],
            folder / f"grok_time_{fields[0].split('.')[-1]}.png",
            title,
        )
    ]
    y_field = fields[1] if len(fields) > 1 else None
    rest = fields[2:]
    if not rest:
        paths.append(phase_diagram(cells, fields[0], y_field, folder / "phase_diagram.png", title))
    else:
        combos = list(dict.fromkeys(map(tuple, cells[rest].values.tolist())))
        for i, combo in enumerate(combos):
            sel = np.ones(len(cells), dtype=bool)
            for f, v in zip(rest, combo, strict=True):
                sel &= (cells[f] == v).to_numpy()
            name = ", ".join(f"{_label(f)}={_fmt(v)}" for f, v in zip(rest, combo, strict=True))
            paths.append(
                phase_diagram(
                    cells[sel],
                    fields[0],
                    y_field,
                    folder / f"phase_diagram_{i}.png",
                    f"{title} ({name})" if title else name,
                )
            )
    return paths
