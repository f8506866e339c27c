"""Edits of documents that separate a surface pattern (the paragraph marker) from structure
(content, topic trajectory), and the responses of a predictor to them (ours).

Each edit makes pairs of an original document and an edited twin, with probe positions aligned
between the two: the outputs predicting the first ``PROBES`` content words after the edit, and
a target topic per pair.

- ``insert_marker``: a ``<par>`` after a sentence inside a paragraph (content continues); the
  target is the paragraph's topic, and the response is how far the edit lowers the share of
  that topic's words in the prediction (a reset of the topic at the marker).
- ``remove_marker``: the ``<par>`` of a true boundary deleted (content changes unannounced);
  target the previous paragraph's topic, response how far the edit raises its share (the old
  topic held on without the marker).
- ``swap_topic``: the content words of a new paragraph's first sentence replaced by those of
  the most distant topic on the ring (the marker kept); target that distant topic, response how
  far the edit raises its share at the probes after that sentence (following content).
- ``shuffle``: the first two paragraphs exchanged (their boundary marker kept in place) in
  documents of three or more paragraphs: the probes are the last paragraph's first content
  words, whose tokens do not move; target the last paragraph's topic, response how far the edit
  lowers its share (the trajectory pointed at it, the shuffled one does not).

The share of a topic is the probability of its own words over that of all content words. A
response (:func:`edit_response`) is the mean change of share at the probes, signed as above, for
the model and for the exact predictor, and their ratio: 1 for a model that responds as the
optimal one, 0 for one that ignores the edit, above 1 for one that over-reacts. A change of
share rather than a distance between distributions: inserting or deleting any token moves an
untrained model's predictions (its positions shift), but not towards or away from a topic, so
an untrained model scores about 0. The signature of a predictor driven by the marker alone is a
marker response above 1 (it resets where the exact predictor, knowing markers can mislead,
discounts them), and of one that ignores the marker a marker response near 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.tasks.documents import (
    FIRST_WORD,
    MARK_ID,
    ROLE_MARK,
    ROLE_STOP,
    ROLE_WORD,
    DocumentGrammar,
)

PROBES = 4
EDITS = ("insert_marker", "remove_marker", "swap_topic", "shuffle")
# +1: the response is the rise of the target topic's share under the edit; -1: its fall
SIGN = {"insert_marker": -1, "remove_marker": 1, "swap_topic": 1, "shuffle": -1}


@dataclass
class Pairs:
    """Original and edited documents, right-padded (m, T), their lengths, the target topic of
    each pair (m,), and the aligned probe outputs: ``probe_doc`` (p,) the pair of each probe,
    ``probe_orig`` / ``probe_edit`` (p,) the output index in each document."""

    orig: np.ndarray
    orig_len: np.ndarray
    edit: np.ndarray
    edit_len: np.ndarray
    target: np.ndarray
    probe_doc: np.ndarray
    probe_orig: np.ndarray
    probe_edit: np.ndarray

    def __len__(self) -> int:
        return len(self.orig_len)


def _content_after(content: np.ndarray, start: int, n: int = PROBES) -> np.ndarray:
    """The first ``n`` content-word positions at or after ``start``."""
    pos = np.flatnonzero(content)
    return pos[pos >= start][:n]


def make_edits(
    g: DocumentGrammar,
    docs: list[np.ndarray],
    lats: list[dict],
    most: int = 200,
    max_len: int | None = None,
) -> dict[str, Pairs]:
    """Pairs for every edit (module docstring) from documents ``docs`` with their gold latents
    (``lats[i][name]`` per token, ``content`` included); at most ``most`` pairs an edit. The
    marker edits are made only where the language has markers; an inserted marker that would
    make a document longer than ``max_len`` (the model's context) is not made."""
    edits: dict[str, list] = {name: [] for name in EDITS}
    for d, lat in zip(docs, lats, strict=True):
        # the token before a probe's word is always real: probes are content words after t >= 1
        role, par, content = lat["role"], lat["paragraph"], lat["content"]
        # insert_marker: after the first "." whose next token is a word of the same paragraph
        if g.boundary != "unmarked":
            stops = [
                t for t in np.flatnonzero(role == ROLE_STOP)
                if t + 1 < len(d) and role[t + 1] == ROLE_WORD and par[t + 1] == par[t]
            ]  # fmt: skip
            if stops and (max_len is None or len(d) < max_len):
                t = stops[0] + 1
                probes = _content_after(content, t)
                edit = np.concatenate([d[:t], [MARK_ID], d[t:]])
                target = int(lat["topic"][t])
                edits["insert_marker"].append((d, edit, probes - 1, probes, target))
            marks = np.flatnonzero(role == ROLE_MARK)
            if len(marks):
                t = int(marks[0])
                probes = _content_after(content, t)
                edit = np.delete(d, t)
                target = int(lat["topic"][t - 1])
                edits["remove_marker"].append((d, edit, probes - 1, probes - 2, target))
        # swap_topic: the second paragraph's first sentence, content words to the far topic
        second = np.flatnonzero((par == 1) & (role == ROLE_WORD))
        if len(second):
            sentence = lat["sentence"][second[0]]
            words = np.flatnonzero(content & (lat["sentence"] == sentence))
            far = (int(lat["topic"][second[0]]) + g.topics // 2) % g.topics
            vocab = g.topic_vocabulary(far)
            edit = d.copy()
            edit[words] = vocab[np.arange(len(words)) % len(vocab)]
            end = int(np.flatnonzero((lat["sentence"] == sentence) & (role == ROLE_STOP))[0])
            probes = _content_after(content, end + 1)
            edits["swap_topic"].append((d, edit, probes - 1, probes - 1, far))
        # shuffle: exchange paragraphs 0 and 1 (3 or more paragraphs)
        if par.max() >= 2:
            body0 = np.flatnonzero((par == 0) & (role != ROLE_MARK))
            body1 = np.flatnonzero((par == 1) & (role != ROLE_MARK))
            mark1 = np.flatnonzero((par == 1) & (role == ROLE_MARK))
            edit = np.concatenate([d[: body0[0]], d[body1], d[mark1], d[body0], d[body1[-1] + 1 :]])
            last = np.flatnonzero(par == par.max())[0]
            probes = _content_after(content, last)
            target = int(lat["topic"][last])
            edits["shuffle"].append((d, edit, probes - 1, probes - 1, target))
    return {name: _pairs(rows[:most]) for name, rows in edits.items() if rows}


def _pairs(rows: list) -> Pairs:
    width = max(max(len(a), len(b)) for a, b, *_ in rows)

    def pad(seqs):
        out = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return out, np.array([len(s) for s in seqs], dtype=np.int64)

    orig, orig_len = pad([r[0] for r in rows])
    edit, edit_len = pad([r[1] for r in rows])
    doc = np.concatenate([np.full(len(r[2]), i) for i, r in enumerate(rows)])
    target = np.array([r[4] for r in rows], dtype=np.int64)
    return Pairs(
        orig, orig_len, edit, edit_len, target, doc.astype(np.int64),
        np.concatenate([r[2] for r in rows]).astype(np.int64),
        np.concatenate([r[3] for r in rows]).astype(np.int64),
    )  # fmt: skip


def probe_predictions(pairs: Pairs, predict) -> tuple[np.ndarray, np.ndarray]:
    """(p, V) predictions at the probes of the original and edited documents; ``predict`` maps
    (tokens (m, T), lengths (m,)) to probabilities (m, T - 1, V)."""
    a = predict(pairs.orig, pairs.orig_len)[pairs.probe_doc, pairs.probe_orig]
    b = predict(pairs.edit, pairs.edit_len)[pairs.probe_doc, pairs.probe_edit]
    return a, b


def topic_share(probs: np.ndarray, topics: np.ndarray, g: DocumentGrammar) -> np.ndarray:
    """(p,) the probability of topic ``topics[i]``'s own words over that of all content words in
    each prediction ``probs[i]`` (V,)."""
    first = FIRST_WORD + g.function_words
    content = probs[:, first : first + g.content_words]
    own = np.zeros((g.topics, g.content_words))
    for z in range(g.topics):
        own[z, g.topic_vocabulary(z) - first] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (content * own[topics]).sum(1) / content.sum(1)


def edit_response(
    name: str,
    pairs: Pairs,
    g: DocumentGrammar,
    p: tuple[np.ndarray, np.ndarray],
    q: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """The response to edit ``name`` (module docstring): ``model`` and ``exact`` the mean signed
    change of the target topic's share at the probes, from the model's predictions ``p``
    (original, edited; (p, V) each, :func:`probe_predictions`) and the exact predictor's ``q``;
    ``ratio`` model / exact. Probes where an edited document is impossible under the language
    (the exact prediction undefined: e.g. a marker removed where every boundary is marked makes
    a paragraph longer than the language allows) are left out; ``probes`` counts those kept."""
    topics = pairs.target[pairs.probe_doc]
    change = {}
    for who, (a, b) in (("model", p), ("exact", q)):
        change[who] = SIGN[name] * (topic_share(b, topics, g) - topic_share(a, topics, g))
    ok = np.isfinite(change["model"]) & np.isfinite(change["exact"])
    if not ok.any():
        return {"model": float("nan"), "exact": float("nan"), "ratio": float("nan"), "probes": 0}
    model, exact = float(change["model"][ok].mean()), float(change["exact"][ok].mean())
    ratio = model / exact if abs(exact) > 1e-9 else float("nan")
    return {"model": model, "exact": exact, "ratio": ratio, "probes": int(ok.sum())}
