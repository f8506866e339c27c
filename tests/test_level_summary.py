"""Per-cell level statistics of a tree-language sweep on a hand-made runs table."""

import math

import pandas as pd

from grokscope.kinds.tree_language.sweep_summary import level_cells, size_needed


def runs_table() -> pd.DataFrame:
    """Two depths x three sizes x two seeds: level 1 reached everywhere, level 2 from P = 1000
    at depth 4 but only by one seed at P = 1000 at depth 2, level 3 by nobody."""
    rows = []
    for depth in (2, 4):
        for size in (100, 1000, 10000):
            for seed in (0, 1):
                l2 = size >= 1000 and (depth == 4 or size == 10000 or seed == 0)
                rows.append(
                    {
                        "run": f"{depth}-{size}-{seed}", "cell": f"c{depth}-{size}", "seed": seed,
                        "task.n_train": size, "model.n_layers": depth, "state": "done",
                        "t_star_l1": 200, "t_star_l2": 900 if l2 else None, "t_star_l3": None,
                        "progress_l1": 1.0, "progress_l2": 0.8 if l2 else 0.1,
                        "progress_l3": 0.0, "in_order": True,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_cells_count_reached_levels_and_sizes_bracket_the_need():
    fields = ["task.n_train", "model.n_layers"]
    cells = level_cells(runs_table(), fields)
    c = cells.set_index("cell")
    assert c.loc["c2-1000", "reached_l2"] == 1 and c.loc["c4-1000", "reached_l2"] == 2
    assert c.loc["c4-1000", "t_star_l2"] == "900,900"
    assert c.loc["c2-100", "t_star_l2"] == "-" and c.loc["c2-100", "reached_l3"] == 0
    assert math.isclose(c.loc["c2-1000", "progress_l2_mean"], 0.45)
    sizes = size_needed(cells, fields).set_index("model.n_layers")
    assert sizes.loc[2, "p_needed_l1"] == 100
    assert sizes.loc[2, "p_needed_l2"] == 10000 and sizes.loc[4, "p_needed_l2"] == 1000
    assert sizes.loc[4, "p_needed_l3"] is None or math.isnan(sizes.loc[4, "p_needed_l3"])
