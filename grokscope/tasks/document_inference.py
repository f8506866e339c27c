"""Exact next-token predictors of a document language, one per level, by the forward algorithm.

**Levels.** Each level's language is the document language with the latents above that level
drawn independently at each use (the construction of hierarchical filtering, Garnier-Brun,
Mezard, Moscato & Saglietti, ICML 2025, carried over to documents; the levels and their
languages are ours):

- 4 ``genre``: the full language. The best predictor infers the genre (its paragraph count,
  opening topics and drift direction) from the document so far.
- 3 ``trajectory``: a fresh genre at each use: the first topic from the genres' average opening
  distribution, each next topic from the genres' average kernel (a step either way), the
  number of paragraphs from its marginal distribution (one hazard per paragraph index).
- 2 ``paragraph``: the topic of each paragraph drawn independently from the topics'
  paragraph-weighted marginal; paragraphs, their lengths, markers and the document's shape as
  at level 3. The best predictor infers the current paragraph's topic from the paragraph so far.
- 1 ``sentence``: the topic drawn independently for each sentence from the topics'
  sentence-weighted marginal: the sentence templates, function words and the marker's
  position are known, the topic only from the sentence so far.
- 0 ``frequency``: tokens independent, from the language's token frequencies (expected count
  of each token over expected length, exact).

q_k(x_t | x_<t) is the level-k language's conditional; its cross-entropy H_k on the data is
the level-k plateau: the best loss with structure up to level k.

**Exact inference.** Each level 1-4 is a chain over *upper states* u (genre, paragraph index,
topic, sentence count in the paragraph, as the level keeps them) that moves only between
sentences, and a sentence grammar below it: the latent state at a token is (u, template). The
observed ``.``, ``<par>`` and ``<eos>`` tokens and the word count since the sentence began fix
where in the sentence each token is, so the forward algorithm runs exactly over (u, template)
within a sentence and over u between sentences (:func:`forward`). A flag carried through each
sentence says whether it began a new paragraph, which gives the exact posterior of a boundary
before the sentence and the predictors conditioned on either answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.tasks.documents import (
    CONTENT,
    EOS_ID,
    LEVELS,
    MARK_ID,
    STOP_ID,
    DocumentError,
    DocumentGrammar,
)

# exact references held at once (levels x documents x positions x vocabulary, float64)
MAX_REFERENCE_BYTES = 2 * 2**30


@dataclass(frozen=True)
class LevelMachine:
    """One level's chain over upper states: ``topic`` (U,) the topic of each state's sentence,
    ``init`` (U,) the first sentence's state, and after a sentence in state u the next
    sentence's state with (``*_mark``) or without (``*_plain``) a ``<par>`` between, continuing
    the paragraph (``cont_*``) or opening a new one (``new_*``); ``end`` (U,) the document ends.
    Each row of the four matrices plus ``end`` sums to 1 on reachable states."""

    level: int
    topic: np.ndarray
    init: np.ndarray
    cont_plain: np.ndarray
    cont_mark: np.ndarray
    new_plain: np.ndarray
    new_mark: np.ndarray
    end: np.ndarray

    @property
    def plain(self) -> np.ndarray:
        return self.cont_plain + self.new_plain

    @property
    def marked(self) -> np.ndarray:
        return self.cont_mark + self.new_mark


def stop_probability(g: DocumentGrammar) -> np.ndarray:
    """(S,) P(the paragraph ends after its sentence c), c = 0..S-1."""
    p = np.full(g.sentences, g.par_end)
    p[-1] = 1.0
    return p


def full_machine(g: DocumentGrammar) -> LevelMachine:
    """Level 4: upper states (genre, paragraph index, topic, sentence in paragraph)."""
    G, P, T, S = g.genres, g.max_paragraphs, g.topics, g.sentences
    U = G * P * T * S

    def idx(gen, i, z, c):
        return ((gen * P + i) * T + z) * S + c

    mats = {k: np.zeros((U, U)) for k in ("cp", "cm", "np", "nm")}
    end, init, topic = np.zeros(U), np.zeros(U), np.zeros(U, dtype=np.int64)
    stop = stop_probability(g)
    hit, false = g.mark_hit, g.mark_false
    for gen in range(G):
        kernel = g.topic_kernel(gen)
        for z in range(T):
            init[idx(gen, 0, z, 0)] = g.starts[gen, z] / G
        for i in range(P):
            for z in range(T):
                for c in range(S):
                    u = idx(gen, i, z, c)
                    topic[u] = z
                    if i >= g.paragraph_counts[gen]:
                        continue
                    if c < S - 1:
                        go = 1 - stop[c]
                        mats["cm"][u, idx(gen, i, z, c + 1)] = go * false
                        mats["cp"][u, idx(gen, i, z, c + 1)] = go * (1 - false)
                    if i == g.paragraph_counts[gen] - 1:
                        end[u] = stop[c]
                        continue
                    for z2 in range(T):
                        v = idx(gen, i + 1, z2, 0)
                        mats["nm"][u, v] = stop[c] * kernel[z, z2] * hit
                        mats["np"][u, v] = stop[c] * kernel[z, z2] * (1 - hit)
    return LevelMachine(4, topic, init, mats["cp"], mats["cm"], mats["np"], mats["nm"], end)


def expected_visits(m: LevelMachine) -> np.ndarray:
    """(U,) expected number of sentences spent in each upper state per document."""
    q = m.plain + m.marked
    return np.linalg.solve((np.eye(len(q)) - q).T, m.init)


def _marginals(g: DocumentGrammar) -> dict[str, np.ndarray]:
    """What the lower levels keep of the full language: the topics' sentence-weighted (``nu``)
    and paragraph-weighted (``mu``) marginals, the genres' average opening distribution and
    kernel, and the hazard of the document ending after paragraph i."""
    full = full_machine(g)
    visits = expected_visits(full)
    S = g.sentences
    first = (np.arange(len(visits)) % S) == 0
    nu = np.bincount(full.topic, visits, g.topics)
    mu = np.bincount(full.topic, visits * first, g.topics)
    counts = np.bincount(g.paragraph_counts, minlength=g.max_paragraphs + 1) / g.genres
    reach = counts[::-1].cumsum()[::-1]  # P(N >= n)
    hazard = np.array([counts[i + 1] / reach[i + 1] for i in range(g.max_paragraphs)])
    return {
        "nu": nu / nu.sum(),
        "mu": mu / mu.sum(),
        "start": g.starts.mean(0),
        "kernel": np.mean([g.topic_kernel(k) for k in range(g.genres)], axis=0),
        "hazard": hazard,
    }


def lower_machine(g: DocumentGrammar, level: int) -> LevelMachine:
    """Level 1, 2 or 3 (module docstring): upper states (paragraph index, topic, sentence in
    paragraph)."""
    if level not in (1, 2, 3):
        raise ValueError(f"lower_machine builds levels 1-3, not {level}")
    mg = _marginals(g)
    P, T, S = g.max_paragraphs, g.topics, g.sentences
    U = P * T * S

    def idx(i, z, c):
        return (i * T + z) * S + c

    opening = {1: mg["nu"], 2: mg["mu"], 3: mg["start"]}[level]
    stop = stop_probability(g)
    hit, false = g.mark_hit, g.mark_false
    mats = {k: np.zeros((U, U)) for k in ("cp", "cm", "np", "nm")}
    end, init, topic = np.zeros(U), np.zeros(U), np.zeros(U, dtype=np.int64)
    for z in range(T):
        init[idx(0, z, 0)] = opening[z]
    for i in range(P):
        for z in range(T):
            next_topic = {1: mg["nu"], 2: mg["mu"], 3: mg["kernel"][z]}[level]
            same = mg["nu"] if level == 1 else np.eye(T)[z]
            for c in range(S):
                u = idx(i, z, c)
                topic[u] = z
                if c < S - 1:
                    for z2 in range(T):
                        go = (1 - stop[c]) * same[z2]
                        mats["cm"][u, idx(i, z2, c + 1)] = go * false
                        mats["cp"][u, idx(i, z2, c + 1)] = go * (1 - false)
                h = mg["hazard"][i]
                end[u] = stop[c] * h
                if i + 1 >= P:
                    continue
                for z2 in range(T):
                    go = stop[c] * (1 - h) * next_topic[z2]
                    mats["nm"][u, idx(i + 1, z2, 0)] = go * hit
                    mats["np"][u, idx(i + 1, z2, 0)] = go * (1 - hit)
    return LevelMachine(level, topic, init, mats["cp"], mats["cm"], mats["np"], mats["nm"], end)


def machines(g: DocumentGrammar) -> dict[int, LevelMachine]:
    """The chains of levels 1-4."""
    out = {k: lower_machine(g, k) for k in (1, 2, 3)}
    out[4] = full_machine(g)
    return out


class _Emissions:
    """The sentence grammar's emissions: ``fun`` (templates, slot, V) the function and ``.``
    part, ``content`` (templates, slot) whether a slot draws the topic's words, ``lengths``."""

    def __init__(self, g: DocumentGrammar) -> None:
        longest = max(len(t) for t in g.templates)
        n = len(g.templates)
        self.fun = np.zeros((n, longest + 2, g.d_vocab))
        self.content = np.zeros((n, longest + 2))
        fc = g.function_given_class()
        for t, slots in enumerate(g.templates):
            for j, cls in enumerate(slots):
                if cls == CONTENT:
                    self.content[t, j] = 1.0
                else:
                    self.fun[t, j] = fc[cls]
            self.fun[t, len(slots), STOP_ID] = 1.0
        self.lengths = np.array([len(t) for t in g.templates])
        self.prior = np.full(n, 1.0 / n)
        self.last = longest + 1


def unigram(g: DocumentGrammar) -> np.ndarray:
    """(V,) the level-0 reference: each token's expected count per document over the expected
    number of predicted tokens (everything after ``<bos>``)."""
    full = full_machine(g)
    visits = expected_visits(full)
    em = _Emissions(g)
    w = g.word_given_topic()
    counts = np.zeros(g.d_vocab)
    per_topic = np.bincount(full.topic, visits, g.topics)
    for t, slots in enumerate(g.templates):
        for j in range(len(slots) + 1):
            counts += visits.sum() * em.prior[t] * em.fun[t, j]
            counts += em.prior[t] * em.content[t, j] * (per_topic @ w)
    counts[MARK_ID] += float(visits @ full.marked.sum(1))
    counts[EOS_ID] += float(visits @ full.end)
    return counts / counts.sum()


EXPECT, INSIDE, AFTER_STOP, ENDED = range(4)


@dataclass
class Forward:
    """The forward algorithm's output for padded documents (n, T): ``pred`` (n, T - 1, V) the
    next-token distribution at each position (output t predicts token t + 1; NaN past a
    document's end); ``boundary`` (n, T - 1) the posterior, given tokens up to t, that token
    t + 1, if it is a word, belongs to a sentence that began a new paragraph (inside a sentence:
    the current one; after ``.``, ``<par>`` or ``<bos>``: the next one); ``pred_new`` /
    ``pred_cont`` the predictions conditioned on that sentence having begun a new paragraph /
    continuing one (when asked for)."""

    pred: np.ndarray
    boundary: np.ndarray
    pred_new: np.ndarray | None = None
    pred_cont: np.ndarray | None = None


def _normalize(a: np.ndarray) -> np.ndarray:
    total = a.reshape(len(a), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(total > 0, total, np.nan)
    return a / total.reshape((-1,) + (1,) * (a.ndim - 1))


def forward(
    g: DocumentGrammar,
    m: LevelMachine,
    tokens: np.ndarray,
    lengths: np.ndarray,
    conditional: bool = False,
) -> Forward:
    """Exact next-token distributions of level ``m.level``'s language for documents ``tokens``
    (n, T), right-padded, each ``lengths[i]`` long and starting with ``<bos>`` (module
    docstring); ``conditional``: also the predictions given that the current sentence began a
    new paragraph or continued one. A document impossible under the level gives NaN from the
    impossible token on."""
    em = _Emissions(g)
    n, width = tokens.shape
    V = g.d_vocab
    wu = g.word_given_topic()[m.topic]  # (U, V)
    first = em.prior @ em.fun[:, 0]  # (V,)
    first_content = float(em.prior @ em.content[:, 0])
    p_first = first[None, :] + first_content * wu  # (U, V)
    plain, marked = (m.cont_plain, m.new_plain), (m.cont_mark, m.new_mark)
    U, Tm = len(m.topic), len(em.prior)
    # state: EXPECT holds (n, 2, U) over (new-paragraph flag, next sentence's state);
    # INSIDE holds (n, 2, U, Tm); AFTER_STOP holds (n, U) the finished sentence's state
    expect = np.zeros((n, 2, U))
    expect[:, 1] = m.init
    inside = np.zeros((n, 2, U, Tm))
    after = np.zeros((n, U))
    mode = np.full(n, EXPECT)
    j = np.zeros(n, dtype=np.int64)
    pred = np.full((n, width - 1, V), np.nan)
    boundary = np.full((n, width - 1), np.nan)
    cond = [np.full((n, width - 1, V), np.nan) for _ in range(2)] if conditional else None

    def inside_pred(a: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """(k, V) from (k, U, Tm) posterior mass at sentence positions jj."""
        per_t = a.sum(1)  # (k, Tm)
        out = np.einsum("kt,tkv->kv", per_t, em.fun[:, jj])
        cont = np.einsum("kut,tk->ku", a, em.content[:, jj])
        return out + cont @ wu

    for t in range(width - 1):
        live = t + 1 < lengths
        for md in (EXPECT, INSIDE, AFTER_STOP):
            sel = np.flatnonzero(live & (mode == md))
            if not len(sel):
                continue
            if md == EXPECT:
                e = expect[sel]
                pred[sel, t] = _normalize(e.sum(1)) @ p_first
                mass = e.sum(2)
                boundary[sel, t] = mass[:, 1] / mass.sum(1)
                if cond is not None:
                    for f in (0, 1):
                        cond[f][sel, t] = _normalize(e[:, f]) @ p_first
            elif md == INSIDE:
                a = inside[sel]
                pred[sel, t] = inside_pred(_normalize(a.sum(1)), j[sel])
                mass = a.sum((2, 3))
                boundary[sel, t] = mass[:, 1] / mass.sum(1)
                if cond is not None:
                    for f in (0, 1):
                        cond[f][sel, t] = inside_pred(_normalize(a[:, f]), j[sel])
            else:
                b = _normalize(after[sel])
                p = (b @ (plain[0] + plain[1])) @ p_first
                p[:, MARK_ID] += (b @ (marked[0] + marked[1])).sum(1)
                p[:, EOS_ID] += b @ m.end
                pred[sel, t] = p
                # the next sentence, if a word comes next (no marker between)
                cont, new = b @ plain[0], b @ plain[1]
                mass = np.stack([cont.sum(1), new.sum(1)], 1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    boundary[sel, t] = mass[:, 1] / mass.sum(1)
                if cond is not None:
                    cond[0][sel, t] = _normalize(cont) @ p_first
                    cond[1][sel, t] = _normalize(new) @ p_first
        # consume token t + 1
        x = tokens[:, min(t + 1, width - 1)]
        word = x > MARK_ID
        stop_ = live & (mode == AFTER_STOP)
        to_mark = np.flatnonzero(stop_ & (x == MARK_ID))
        if len(to_mark):
            b = after[to_mark]
            expect[to_mark] = np.stack([b @ marked[0], b @ marked[1]], 1)
            expect[to_mark] = _normalize(expect[to_mark])
            mode[to_mark] = EXPECT
        mode[stop_ & (x == EOS_ID)] = ENDED
        to_word = np.flatnonzero(stop_ & word)
        if len(to_word):
            b = after[to_word]
            expect[to_word] = np.stack([b @ plain[0], b @ plain[1]], 1)
            mode[to_word] = EXPECT
        begin = np.flatnonzero(live & (mode == EXPECT) & word)
        if len(begin):
            xb = x[begin]
            emit = (
                em.fun[:, 0, xb].T[:, None, :]
                + em.content[None, None, :, 0] * wu[:, xb].T[:, :, None]
            )  # (k, U, Tm)
            a = expect[begin][:, :, :, None] * (em.prior[None, None, None, :] * emit[:, None])
            inside[begin] = _normalize(a)
            j[begin] = 1
            mode[begin] = INSIDE
        # a sentence that has just consumed its first word takes no INSIDE update below
        skip = np.zeros(n, dtype=bool)
        skip[begin] = True
        ins = live & (mode == INSIDE) & ~skip
        ended = np.flatnonzero(ins & (x == STOP_ID))
        if len(ended):
            done = (em.lengths[None, :] == j[ended][:, None]).astype(float)  # (k, Tm)
            a = inside[ended].sum(1)  # flags summed: the boundary is settled by then
            after[ended] = _normalize(np.einsum("kut,kt->ku", a, done))
            mode[ended] = AFTER_STOP
        cont = np.flatnonzero(ins & word)
        if len(cont):
            xc, jc = x[cont], j[cont]
            emit = (
                em.fun[:, jc, xc].T[:, None, :]
                + em.content[:, jc].T[:, None, :] * wu[:, xc].T[:, :, None]
            )  # (k, U, Tm)
            inside[cont] = _normalize(inside[cont] * emit[:, None])
            j[cont] = np.minimum(jc + 1, em.last)
        bad = np.flatnonzero(ins & ((x == MARK_ID) | (x == EOS_ID)))
        if len(bad):  # a marker or the end inside a sentence: impossible at every level
            inside[bad] = np.nan
    out = Forward(pred, boundary)
    if cond is not None:
        out.pred_cont, out.pred_new = cond
    return out


def reference_bytes(n: int, width: int, d_vocab: int) -> int:
    """Bytes the exact references of ``n`` documents of ``width`` tokens take (float64)."""
    return (LEVELS + 1) * n * width * d_vocab * 8


def references(g: DocumentGrammar, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(L + 1, n, T - 1, V) float64: every level's exact next-token distribution (level 0 the
    token frequencies) at every position of documents ``tokens``; NaN past each end."""
    n, width = tokens.shape
    need = reference_bytes(n, width, g.d_vocab)
    if need > MAX_REFERENCE_BYTES:
        raise DocumentError(
            f"the exact references of {n} documents would take {need / 2**30:.1f} GiB (limit "
            f"{MAX_REFERENCE_BYTES / 2**30:.0f} GiB): lower task.n_test / task.n_gen or the "
            "document size"
        )
    out = np.full((LEVELS + 1, n, width - 1, g.d_vocab), np.nan)
    live = np.arange(1, width)[None, :] < lengths[:, None]
    out[0][live] = unigram(g)
    for k, m in machines(g).items():
        out[k] = forward(g, m, tokens, lengths).pred
    return out
