"""What a reader sees in the figures: legends in words (no raw column keys), every line a
caption or legend names is drawn or said to be missing, phases named by the run's own phase
ends, and induced trees drawn without crossing lines."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from grokscope.report import geometry_figures, structural_figures
from grokscope.report.geometry_figures import LABELS, phase_tag


@pytest.fixture
def captured(monkeypatch):
    """The figures the drawing functions save, kept open for inspection."""
    figs = []

    def keep(fig, out, *args, **kwargs):
        figs.append(fig)
        return out

    monkeypatch.setattr(geometry_figures, "save_figure", keep)
    monkeypatch.setattr(structural_figures, "save_figure", keep)
    return figs


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_geometry_legends_are_words_and_ildr_is_drawn(captured, tmp_path):
    epochs = np.array([0, 10, 100, 1000])
    table = pd.DataFrame({"epoch": epochs})
    for col in LABELS:
        table[col] = np.linspace(0.1, 0.9, len(epochs))
    table["ildr"] = [1.0, 1.5, 3.0, 9.0]
    geometry_figures.geometry_figure(table, 10, 100, tmp_path / "g.png")
    texts = _legend_texts(captured[0])
    assert LABELS["ildr"] in texts  # computed and drawn
    raw = [t for t in texts if t in LABELS]  # a raw column key as a legend entry
    assert not raw and all(" " in t for t in texts), texts


def test_an_epoch_is_named_by_the_run_phases_not_by_t_mem():
    phases = {"memorization_end": 200, "circuit_formation_end": 8000, "cleanup_end": 13000}
    # past t_mem but inside circuit formation: not "memorized"
    assert phase_tag(5000, phases, t_mem=200, t_grok=9000) == " (circuit formation)"
    assert phase_tag(100, phases, 200, 9000) == " (memorization)"
    assert phase_tag(12000, phases, 200, 9000) == " (cleanup)"
    assert phase_tag(20000, phases, 200, 9000) == " (after cleanup)"
    # no phases found: only what the events say
    assert phase_tag(5000, None, 200, 9000) == " (after t_mem)"
    assert phase_tag(9500, {"memorization_end": 200}, 200, 9000) == " (after t_grok)"
    assert phase_tag(50, None, 200, None) == ""


def test_the_accuracy_figure_says_which_events_were_not_reached(captured, tmp_path):
    steps = np.arange(0, 1000, 100)
    metrics = pd.DataFrame({
        "epoch": steps, "id_acc": np.linspace(0.1, 0.86, 10), "gen_acc": np.linspace(0, 0.5, 10),
        "train_loss": 1.0, "test_loss": 1.0, "gen_loss": 1.0,
    })  # fmt: skip
    events = {"t_id_step": None, "t_gen_step": None}
    structural_figures.accuracy_figure(
        metrics, events, "t", tmp_path / "a.png", (0.99, 0.8), "agreement with the exact predictor"
    )
    fig = captured[0]
    texts = _legend_texts(fig)
    assert "t_id not reached (< 0.99)" in texts and "t_gen not reached (< 0.8)" in texts
    assert fig.axes[0].get_ylabel() == "agreement with the exact predictor"
    assert not fig.axes[0].lines[2:] or all(  # no event line drawn at all
        len(set(line.get_xdata())) != 1 for line in fig.axes[0].lines
    )


def _crossings(segments) -> list:
    """Pairs of segments that cross, or lie on one line and overlap beyond a shared end point
    (an end of one on the middle of another is a join: a child hanging from its bar)."""

    def orient(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on(p, q, r) -> bool:  # r on segment pq, given collinear
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(
            p[1], q[1]
        )

    bad = []
    for s, t in itertools.combinations(segments, 2):
        p, q, r, u = (s[0], s[1]), (s[2], s[3]), (t[0], t[1]), (t[2], t[3])
        shared = {p, q} & {r, u}
        o1, o2, o3, o4 = orient(p, q, r), orient(p, q, u), orient(r, u, p), orient(r, u, q)
        if o1 * o2 < 0 and o3 * o4 < 0:
            bad.append((s, t))  # a proper crossing
        elif o1 == o2 == 0 and (on(p, q, r) or on(p, q, u) or on(r, u, p)):
            ends = {x for x in (r, u) if on(p, q, x)} | {x for x in (p, q) if on(r, u, x)}
            if not ends <= shared:  # collinear and overlapping beyond a shared end
                bad.append((s, t))
    return bad


TREES = [
    (0, ((((1, 2), 3), 4), ((5, (6, 7)), (8, 9)))),  # the diagonal layout crossed here
    (0, ((1, 2), (3, (4, 5)))),
    (((0, 1), 2), (3, (4, (5, 6)))),
    ((0, 1, 2), ((3, 4), 5, (6, (7, 8)))),  # not binary
    (0, (1, (2, (3, (4, 5))))),
]


@pytest.mark.parametrize("tree", TREES)
def test_induced_trees_are_drawn_without_crossing_lines(tree):
    segments, height = structural_figures._layout(tree)
    assert not _crossings(segments), _crossings(segments)[:2]
    leaves = sorted(x for x0, y0, x1, y1 in segments for x, y in ((x0, y0), (x1, y1)) if y == 0)
    assert leaves == list(range(len(leaves)))  # each leaf reached once, at its word
    assert height == max(max(y0, y1) for _, y0, _, y1 in segments)


def test_the_crossing_check_sees_a_crossing():
    """The check itself: two diagonals that cross, and a bar through a vertical's middle."""
    assert _crossings([(0, 0, 2, 2), (0, 2, 2, 0)])
    assert _crossings([(0, 1, 2, 1), (1, 0, 1, 2)])
    assert _crossings([(0, 1, 2, 1), (1, 1, 3, 1)])  # two bars overlapping on one line
    assert not _crossings([(0, 1, 2, 1), (0, 1, 0, 0)])  # a bar and a drop meeting at a corner
    # the diagonal layout this replaced (a node at the middle of its leaves, a straight line to
    # each child): in (0, ((((1, 2), 3), 4), ((5, (6, 7)), (8, 9)))) the root's line down to
    # leaf 0 crosses the line from node (2.5, 3) to its child (2, 2)
    assert _crossings([(4.5, 5.0, 0.0, 0.0), (2.5, 3.0, 2.0, 2.0)])
