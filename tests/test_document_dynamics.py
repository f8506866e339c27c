"""Onsets of the edit responses and the marker-first verdict, on planted response curves with a
known answer, including curves with no effect (the two onsets exchangeable)."""

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from grokscope.dynamics.documents import marker_first, response_onsets


def table(marker: list[float], content: list[float]) -> pd.DataFrame:
    epochs = [0, *range(100, 100 * len(marker) + 1, 100)]
    return pd.DataFrame(
        {
            "epoch": epochs,
            "response_insert_marker": [9.0, *marker],  # epoch 0 is left out
            "response_swap_topic": [9.0, *content],
        }
    )


def test_onsets_are_sustained_crossings_and_censored_when_never_held():
    t = table([0.1, 0.6, 0.2, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4, 0.6, 0.6])
    on = response_onsets(t)
    assert on == {"insert_marker": 400, "swap_topic": 500}
    assert marker_first(on) is True
    # a crossing in the last checkpoint alone is censored
    assert response_onsets(table([0.1, 0.1, 0.9], [0.6, 0.7, 0.8]))["insert_marker"] is None


def test_verdicts_ordered_reversed_tied_and_censored():
    assert marker_first({"insert_marker": 200, "swap_topic": 100}) is False
    assert marker_first({"insert_marker": 200, "swap_topic": 200}) is None
    assert marker_first({"insert_marker": None, "swap_topic": None}) is None
    assert marker_first({"insert_marker": 300, "swap_topic": None}) is True
    assert marker_first({"swap_topic": 300}) is None  # unmarked: no marker edits


def test_no_effect_gives_marker_first_in_about_half_the_runs():
    """Response curves drawn from one distribution for both edits: the verdict is a fair coin
    among decided runs, and its exact binomial interval covers 1/2."""
    rng = np.random.default_rng(0)
    verdicts = []
    for _ in range(400):
        rise = rng.uniform(2, 18, size=2)
        steps = np.arange(1, 21)
        marker = 1 / (1 + np.exp(-(steps - rise[0]))) + rng.normal(0, 0.05, 20)
        content = 1 / (1 + np.exp(-(steps - rise[1]))) + rng.normal(0, 0.05, 20)
        verdicts.append(marker_first(response_onsets(table(list(marker), list(content)))))
    decided = [v for v in verdicts if v is not None]
    ci = binomtest(sum(decided), len(decided)).proportion_ci(0.99)
    assert len(decided) > 300 and ci.low < 0.5 < ci.high


def test_a_planted_marker_phase_is_found_in_every_run():
    rng = np.random.default_rng(1)
    steps = np.arange(1, 21)
    found = []
    for _ in range(50):
        marker = 1 / (1 + np.exp(-(steps - 4))) + rng.normal(0, 0.05, 20)
        content = 1 / (1 + np.exp(-(steps - 12))) + rng.normal(0, 0.05, 20)
        found.append(marker_first(response_onsets(table(list(marker), list(content)))))
    assert all(v is True for v in found)
