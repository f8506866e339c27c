"""The document language's exact per-level predictors against brute-force enumeration of every
document of a tiny language, generated straight from each level's definition (no chain, no
forward algorithm), and the sampler against the enumerated distribution."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from grokscope.tasks.document_inference import forward, machines, references, unigram
from grokscope.tasks.documents import (
    BOS_ID,
    CONTENT,
    EOS_ID,
    FIRST_WORD,
    MARK_ID,
    STOP_ID,
    DocumentError,
    DocumentGrammar,
    make_grammar,
    sample_documents,
)
from grokscope.tasks.sequence import padded


def tiny(boundary: str) -> DocumentGrammar:
    """2 genres (1 and 2 paragraphs), 3 topics of 2 words sharing 1, one function word, a
    one-slot and a two-slot template, at most 2 sentences a paragraph."""
    starts = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    return DocumentGrammar(
        genres=2, topics=3, topic_words=2, overlap=1, function_words=1, sentences=2,
        boundary=boundary, templates=((CONTENT,), (0, CONTENT)), function_classes=((0,),),
        paragraph_counts=(1, 2), starts=starts,
    )  # fmt: skip


def _sentences(g: DocumentGrammar, topic_dist: np.ndarray):
    """Every sentence (tokens, prob) with its topic drawn from ``topic_dist``."""
    w = g.word_given_topic()
    out = defaultdict(float)
    for z, pz in enumerate(topic_dist):
        if pz == 0:
            continue
        for slots in g.templates:
            paths = [((), pz / len(g.templates))]
            for cls in slots:
                dist = w[z] if cls == CONTENT else np.eye(g.d_vocab)[FIRST_WORD + cls]
                paths = [(s + (x,), p * dist[x]) for s, p in paths for x in np.flatnonzero(dist)]
            for s, p in paths:
                out[s + (STOP_ID,)] += p
    return list(out.items())


def _paragraph(g, topic_for_sentence, last: bool):
    """Every paragraph body (tokens, prob, flags per token: 1 on the first sentence's tokens)
    given a function from sentence index to topic distribution; ``last`` is unused (the
    document's end is decided by the paragraph count)."""
    out = []

    def grow(prefix, flags, p, c):
        for sent, ps in _sentences(g, topic_for_sentence(c)):
            toks = prefix + sent
            fl = flags + (1 if c == 0 else 0,) * len(sent)
            stop = 1.0 if c == g.sentences - 1 else g.par_end
            out.append((toks, fl, p * ps * stop))
            if c < g.sentences - 1:
                go = p * ps * (1 - stop)
                if g.mark_false > 0:
                    grow(toks + (MARK_ID,), fl + (0,), go * g.mark_false, c + 1)
                if g.mark_false < 1:
                    grow(toks, fl, go * (1 - g.mark_false), c + 1)

    grow((), (), 1.0, 0)
    return out


def enumerate_level(g: DocumentGrammar, level: int, stats: dict | None = None):
    """Every document of level ``level``'s language as (tokens, flags, prob), generated from
    the level's definition; ``stats`` from the full language (the topic marginals)."""
    T = g.topics
    counts = np.bincount(g.paragraph_counts, minlength=g.max_paragraphs + 1) / g.genres
    docs = []

    def para_topic_dists(genre):
        """(first topic distribution, kernel(z) -> next distribution) of the level."""
        if level == 4:
            return g.starts[genre], lambda z: g.topic_kernel(genre)[z]
        if level == 3:
            mean_kernel = np.mean([g.topic_kernel(k) for k in range(g.genres)], 0)
            return g.starts.mean(0), lambda z: mean_kernel[z]
        dist = stats["mu"] if level == 2 else stats["nu"]
        return dist, lambda z: dist

    def run(genre, n_par, p0):
        first, nxt = para_topic_dists(genre)

        def grow(i, z, prefix, flags, p):
            if level == 1:
                body = _paragraph(g, lambda c: stats["nu"], False)
            else:
                body = _paragraph(g, lambda c: np.eye(T)[z], False)
            for toks, fl, pb in body:
                t2, f2, p2 = prefix + toks, flags + fl, p * pb
                if i == n_par - 1:
                    docs.append((t2 + (EOS_ID,), f2 + (0,), p2))
                    continue
                for z2, pz in enumerate(nxt(z)):
                    if pz == 0:
                        continue
                    if g.mark_hit > 0:
                        grow(i + 1, z2, t2 + (MARK_ID,), f2 + (0,), p2 * pz * g.mark_hit)
                    if g.mark_hit < 1:
                        grow(i + 1, z2, t2, f2, p2 * pz * (1 - g.mark_hit))

        for z, pz in enumerate(first):
            if pz > 0:
                grow(0, z, (BOS_ID,), (0,), p0 * pz)

    if level == 4:
        for genre in range(g.genres):
            run(genre, g.paragraph_counts[genre], 1.0 / g.genres)
    else:
        for n_par in np.flatnonzero(counts):
            run(0, int(n_par), float(counts[n_par]))
    return docs


def full_stats(g: DocumentGrammar) -> dict:
    """Topic marginals of the full language, counted over the enumerated latent paths (each
    genre, topic path and paragraph length spelled out)."""
    nu, mu = np.zeros(g.topics), np.zeros(g.topics)
    stop = [g.par_end] * (g.sentences - 1) + [1.0]
    n_sentences = np.zeros(g.sentences + 1)
    for c in range(g.sentences):  # P(paragraph has c + 1 sentences)
        n_sentences[c + 1] = np.prod([1 - s for s in stop[:c]]) * stop[c]
    mean_sentences = float(n_sentences @ np.arange(g.sentences + 1))
    for genre in range(g.genres):
        dist = g.starts[genre] / g.genres
        for _ in range(g.paragraph_counts[genre]):
            mu += dist
            nu += dist * mean_sentences
            dist = dist @ g.topic_kernel(genre)
    return {"nu": nu / nu.sum(), "mu": mu / mu.sum()}


def conditionals(docs, vocab: int):
    """prefix -> (V,) next-token distribution, and prefix -> P(the sentence of the last token
    began a paragraph)."""
    mass = defaultdict(float)
    flag_mass = defaultdict(float)
    for toks, flags, p in docs:
        for t in range(1, len(toks) + 1):
            mass[toks[:t]] += p
            flag_mass[toks[:t]] += p * flags[t - 1]
    return mass, flag_mass


@pytest.mark.parametrize("boundary", ["marked", "unmarked", "unreliable"])
def test_every_level_equals_brute_force(boundary):
    g = tiny(boundary)
    stats = full_stats(g)
    rng = np.random.default_rng(3)
    docs, _ = sample_documents(g, 40, rng)
    width = max(len(d) for d in docs)
    tokens = np.zeros((len(docs), width), dtype=np.int64)
    lengths = np.array([len(d) for d in docs])
    for i, d in enumerate(docs):
        tokens[i, : len(d)] = d
    ms = machines(g)
    for level in (1, 2, 3, 4):
        enum = enumerate_level(g, level, stats)
        assert sum(p for *_, p in enum) == pytest.approx(1.0, abs=1e-12)
        mass, flag_mass = conditionals(enum, g.d_vocab)
        fw = forward(g, ms[level], tokens, lengths)
        worst, worst_flag, checked = 0.0, 0.0, 0
        for i, d in enumerate(docs):
            for t in range(len(d) - 1):
                prefix = tuple(int(x) for x in d[: t + 1])
                want = np.array([mass.get(prefix + (x,), 0.0) for x in range(g.d_vocab)])
                want /= mass[prefix]
                worst = max(worst, float(np.abs(fw.pred[i, t] - want).max()))
                # P(the next token's sentence began a paragraph | prefix, the next is a word)
                words = [prefix + (x,) for x in range(5, g.d_vocab)]
                total = sum(mass.get(w, 0.0) for w in words)
                if total > 0:
                    exact = sum(flag_mass.get(w, 0.0) for w in words) / total
                    worst_flag = max(worst_flag, abs(fw.boundary[i, t] - exact))
                    checked += 1
        assert worst < 1e-12, (level, worst)
        assert worst_flag < 1e-12 and checked > 100, (level, worst_flag, checked)


def test_unigram_equals_enumerated_frequencies():
    g = tiny("unreliable")
    count, length = np.zeros(g.d_vocab), 0.0
    for toks, _, p in enumerate_level(g, 4):
        np.add.at(count, np.array(toks[1:]), p)
        length += p * (len(toks) - 1)
    np.testing.assert_allclose(unigram(g), count / length, rtol=0, atol=1e-12)


def test_sampler_draws_the_enumerated_distribution():
    g = tiny("unreliable")
    enum = defaultdict(float)
    for toks, _, p in enumerate_level(g, 4):
        enum[toks] += p
    n = 40_000
    docs, lats = sample_documents(g, n, np.random.default_rng(11))
    seen = defaultdict(int)
    for d in docs:
        seen[tuple(int(x) for x in d)] += 1
    assert set(seen) <= set(enum)  # nothing the language cannot make
    # every document of probability >= 1e-3: frequency within 5 binomial sigmas
    for toks, p in enum.items():
        if p >= 1e-3:
            sigma = np.sqrt(p * (1 - p) / n)
            assert abs(seen[toks] / n - p) < 5 * sigma + 1e-12, (toks, seen[toks] / n, p)
    # total variation over all documents, against its sampling noise: 20 multinomial draws of
    # the same size from the enumerated distribution itself
    keys = list(enum)
    probs = np.array([enum[k] for k in keys])
    tv = 0.5 * np.abs(np.array([seen[k] for k in keys]) / n - probs).sum()
    noise = [
        0.5 * np.abs(np.random.default_rng(s).multinomial(n, probs / probs.sum()) / n - probs).sum()
        for s in range(20)
    ]
    assert tv < 1.2 * max(noise), (tv, noise)
    # gold latents line up with the tokens
    for d, lat in zip(docs[:200], lats[:200], strict=True):
        assert len(lat["role"]) == len(d)
        assert (d[lat["role"] == 2] == STOP_ID).all()


def test_plateaus_are_ordered_on_a_default_language():
    g = make_grammar(2, 4, 6, 6, 2, 8, 4, 4, "unreliable", 0)
    docs, _ = sample_documents(g, 300, np.random.default_rng(5))
    from grokscope.tasks.documents import _split

    tokens, lengths = padded(_split(docs))
    refs = references(g, tokens, lengths)
    nxt = tokens[:, 1:, None]
    live = np.arange(1, tokens.shape[1])[None] < lengths[:, None]
    h = [-np.log(np.take_along_axis(refs[k], nxt, -1)[..., 0][live]).mean() for k in range(5)]
    assert all(a > b for a, b in zip(h[:-1], h[1:], strict=True)), h


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"topic_words": 0}, "doc_topic_words"),
        ({"overlap": 6}, "doc_topic_overlap"),
        ({"topics": 2}, "doc_topics"),
        ({"genres": 7}, "doc_genres"),
        ({"boundary": "sometimes"}, "doc_boundary"),
        ({"templates": 0}, "doc_templates"),
    ],
)
def test_impossible_languages_are_refused_in_one_line(kwargs, words):
    settings = dict(
        genres=2, paragraphs=4, topics=6, topic_words=6, overlap=2, function_words=8,
        templates=4, sentences=4, boundary="marked", seed=0,
    )  # fmt: skip
    settings.update(kwargs)
    with pytest.raises(DocumentError, match=words) as err:
        make_grammar(**settings)
    assert "\n" not in str(err.value)
