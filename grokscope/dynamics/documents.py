"""Across the checkpoints of a document-language run: when the model starts to respond to each
edit of the document, and whether the paragraph marker moves it before content does (ours).

The response to an edit (:mod:`grokscope.measures.document_interventions`) is the model's change
of prediction at the probes over the exact predictor's: 0 when the model ignores the edit, 1
when it responds as an optimal model. Its onset is the first checkpoint from which the response
is >= ``ONSET`` (one half of the optimal response) at ``SUSTAIN`` checkpoints in a row
(:func:`grokscope.events.first_sustained`, the one rule; censored, None, when never or only in
the last checkpoint). One half is the threshold of the level transitions t*_k too
(:mod:`grokscope.dynamics.levels`): a response crossing it carries as much of the optimal
response as it misses.

The conjecture (docs/documents.md) predicts an early phase in which the marker alone moves the
model and a later one in which content does: the onset of ``insert_marker`` (a marker inside a
paragraph, content continuing) before the onset of ``swap_topic`` (a new paragraph's content
changed, its marker kept). :func:`marker_first` reads it on one run: True (marker strictly
first), False (content strictly first), None (undecided: both at one checkpoint, which the
checkpoint interval cannot order, or neither reached; one reached and the other censored counts
as ordered, the censored one later). Across seeds the share of ordered runs with the marker
first is a proportion with an exact binomial interval; with no effect (the two onsets
exchangeable) it is 1/2 in expectation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from grokscope.events import first_sustained

ONSET = 0.5
SUSTAIN = 2


def response_onsets(
    table: pd.DataFrame, threshold: float = ONSET, sustain: int = SUSTAIN
) -> dict[str, int | None]:
    """The onset (checkpoint epoch, or None) of every edit's response in an analysis table
    (columns ``response_{edit}``; ``epoch``); checkpoints at epoch 0 are left out (an untrained
    model's response is noise around its own arbitrary predictions)."""
    t = table[table["epoch"] > 0].sort_values("epoch")
    out: dict[str, int | None] = {}
    names = [
        c.removeprefix("response_")
        for c in t.columns
        if c.startswith("response_") and not c.endswith(("_model", "_exact", "_probes"))
    ]
    for name in names:
        col = f"response_{name}"
        ratio = t[col].to_numpy(float)
        i = first_sustained(np.nan_to_num(ratio, nan=-np.inf) >= threshold, sustain)
        out[name] = None if i is None else int(t["epoch"].iloc[i])
    return out


def marker_first(onsets: dict[str, int | None]) -> bool | None:
    """Whether the response to an inserted marker began strictly before the response to a
    changed topic (module docstring); None when undecided or the edits were not made."""
    if "insert_marker" not in onsets or "swap_topic" not in onsets:
        return None
    a, b = onsets["insert_marker"], onsets["swap_topic"]
    if a is None and b is None:
        return None
    a_ = math.inf if a is None else a
    b_ = math.inf if b is None else b
    if a_ == b_:
        return None
    return a_ < b_
