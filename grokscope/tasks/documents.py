"""A document language: documents of a genre, made of paragraphs, each paragraph about one topic,
topics drifting from paragraph to paragraph along a topic graph, sentences drawn from a small
sentence grammar whose content words come from the current topic's vocabulary. Every latent
(genre, paragraph, topic, sentence, template) of every token is kept.

The generative model (ours; built to ask what happens at a paragraph boundary):

- **genre** g, uniform over ``genres``. A genre fixes a template: its number of paragraphs
  N_g (spread evenly over ceil(P / 2) .. P for P = ``paragraphs``), the topics its documents
  open with (topics z with z mod G = g mod G) and the direction d_g of its topic drift
  (+1 for even g, -1 for odd g).
- **topics** lie on a ring of ``topics`` nodes. The first paragraph's topic is uniform over the
  genre's opening topics; each next topic is z + d_g * s (mod T) with step s = 1 or 2
  (probabilities ``DRIFT``), or, with probability ``JUMP``, any other topic: the next topic
  is related to the last (a neighbour), not the same.
- **vocabularies**: content words sit on a ring too; topic z owns ``topic_words`` consecutive
  words starting at z * (topic_words - overlap), so neighbouring topics share ``overlap``
  words (related but distinct). A content slot draws a word of the topic's own vocabulary,
  uniformly, or with probability ``OFF_TOPIC`` any content word. Function words are shared by
  all topics, split into up to three classes.
- **sentences**: a sentence picks one of the templates (uniformly); a template is a sequence
  of 2-5 slots, each a function class or a content slot, then ``.``.
- **paragraphs**: after each sentence the paragraph ends with probability ``PAR_END``, and
  always after ``sentences`` sentences. After the last paragraph the document ends (``<eos>``).
- **boundaries** (``boundary``): ``marked``: a ``<par>`` token at every paragraph boundary and
  nowhere else; ``unmarked``: no marker, the boundary is to be inferred from content;
  ``unreliable``: the marker appears at a boundary with probability ``MARK_HIT`` and after a
  sentence inside a paragraph with probability ``MARK_FALSE``.

The off-topic and jump probabilities keep every well-formed document possible under every
level's language (so the exact predictors are defined on intervened documents too).

A document is ``<bos>`` followed by its tokens and ``<eos>``; sizes are bounded
(P paragraphs of at most ``sentences`` sentences of at most 6 tokens).

Levels (:mod:`grokscope.tasks.document_inference`): 0 token frequencies, 1 sentence, 2
paragraph topic, 3 topic trajectory, 4 genre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.errors import GrokscopeError
from grokscope.tasks.sequence import PAD, SequenceDataset, SequenceSplit

BOS, EOS, STOP, MARK = "<bos>", "<eos>", ".", "<par>"
SPECIAL = (PAD, BOS, EOS, STOP, MARK)
BOS_ID, EOS_ID, STOP_ID, MARK_ID = 1, 2, 3, 4
FIRST_WORD = len(SPECIAL)
LEVEL_NAMES = ("frequency", "sentence", "paragraph", "trajectory", "genre")
LEVELS = len(LEVEL_NAMES) - 1
BOUNDARIES = ("marked", "unmarked", "unreliable")

PAR_END = 0.5  # probability that a paragraph ends after a sentence (before its last allowed)
DRIFT = (0.7, 0.3)  # probability of a topic step of 1, 2 in the genre's direction
JUMP = 0.05  # probability that the next topic is any other topic instead
OFF_TOPIC = 0.05  # probability that a content slot draws any content word
MARK_HIT, MARK_FALSE = 0.8, 0.15  # the unreliable marker: at a boundary, inside a paragraph
FUNCTION_CLASSES = 3
TEMPLATE_LENGTHS = (2, 5)  # slots of a sentence template, inclusive
CONTENT = -1  # slot class of a content slot

# token roles (gold latents): which kind of token each position holds
ROLE_BOS, ROLE_WORD, ROLE_STOP, ROLE_MARK, ROLE_FALSE_MARK, ROLE_EOS = range(6)


class DocumentError(GrokscopeError, ValueError):
    """A document language that cannot exist or cannot be computed: one line naming it."""


@dataclass(frozen=True)
class DocumentGrammar:
    """A document language (module docstring). ``templates[t]`` the slot classes of template
    t (``CONTENT`` or a function class); ``function_classes[f]`` the function words (indices
    into the function vocabulary) of class f; ``paragraph_counts[g]`` N_g; ``starts`` (G, T) each
    genre's opening-topic distribution."""

    genres: int
    topics: int
    topic_words: int
    overlap: int
    function_words: int
    sentences: int
    boundary: str
    templates: tuple[tuple[int, ...], ...]
    function_classes: tuple[tuple[int, ...], ...]
    paragraph_counts: tuple[int, ...]
    starts: np.ndarray
    par_end: float = PAR_END
    drift: tuple[float, ...] = DRIFT
    jump: float = JUMP
    off_topic: float = OFF_TOPIC

    @property
    def content_words(self) -> int:
        return self.topics * (self.topic_words - self.overlap)

    @property
    def d_vocab(self) -> int:
        return FIRST_WORD + self.function_words + self.content_words

    @property
    def max_paragraphs(self) -> int:
        return max(self.paragraph_counts)

    @property
    def mark_hit(self) -> float:
        return {"marked": 1.0, "unmarked": 0.0, "unreliable": MARK_HIT}[self.boundary]

    @property
    def mark_false(self) -> float:
        return {"marked": 0.0, "unmarked": 0.0, "unreliable": MARK_FALSE}[self.boundary]

    @property
    def max_length(self) -> int:
        """The longest document: ``<bos>``, every sentence at the longest template with its
        ``.`` and a marker after it, ``<eos>``."""
        longest = max(len(t) for t in self.templates) + 2
        return 2 + self.max_paragraphs * self.sentences * longest

    def vocab(self) -> tuple[str, ...]:
        words = [f"f{i}" for i in range(self.function_words)]
        words += [f"w{i}" for i in range(self.content_words)]
        return (*SPECIAL, *words)

    def topic_vocabulary(self, z: int) -> np.ndarray:
        """Token ids of topic z's own content words."""
        first = z * (self.topic_words - self.overlap)
        idx = (first + np.arange(self.topic_words)) % self.content_words
        return FIRST_WORD + self.function_words + idx

    def word_given_topic(self) -> np.ndarray:
        """(T, V) the distribution of a content slot's token under each topic."""
        w = np.zeros((self.topics, self.d_vocab))
        first = FIRST_WORD + self.function_words
        w[:, first:] = self.off_topic / self.content_words
        for z in range(self.topics):
            w[z, self.topic_vocabulary(z)] += (1 - self.off_topic) / self.topic_words
        return w

    def function_given_class(self) -> np.ndarray:
        """(F, V) the distribution of a function slot's token under each function class."""
        e = np.zeros((len(self.function_classes), self.d_vocab))
        for f, words in enumerate(self.function_classes):
            e[f, FIRST_WORD + np.array(words)] = 1.0 / len(words)
        return e

    def topic_kernel(self, genre: int) -> np.ndarray:
        """(T, T) P(next paragraph's topic | this one) in genre ``genre``."""
        t = self.topics
        direction = 1 if genre % 2 == 0 else -1
        k = np.zeros((t, t))
        for z in range(t):
            for s, p in enumerate(self.drift, start=1):
                k[z, (z + direction * s) % t] += (1 - self.jump) * p
            others = [y for y in range(t) if y != z]
            k[z, others] += self.jump / len(others)
        return k


def make_grammar(
    genres: int,
    paragraphs: int,
    topics: int,
    topic_words: int,
    overlap: int,
    function_words: int,
    templates: int,
    sentences: int,
    boundary: str,
    seed: int,
) -> DocumentGrammar:
    """A seeded document language (module docstring); the templates are drawn from ``seed``."""
    check_settings(
        genres, paragraphs, topics, topic_words, overlap, function_words, templates, sentences,
        boundary,
    )  # fmt: skip
    rng = np.random.default_rng([seed, 7207])
    n_classes = min(FUNCTION_CLASSES, function_words)
    classes = tuple(tuple(range(f, function_words, n_classes)) for f in range(n_classes))
    drawn = []
    for _ in range(templates):
        length = int(rng.integers(TEMPLATE_LENGTHS[0], TEMPLATE_LENGTHS[1] + 1))
        slots = [
            CONTENT if rng.random() < 0.5 else int(rng.integers(n_classes)) for _ in range(length)
        ]
        # every sentence carries topic evidence and sentence structure
        if CONTENT not in slots:
            slots[int(rng.integers(length))] = CONTENT
        if all(s == CONTENT for s in slots):
            slots[int(rng.integers(length))] = int(rng.integers(n_classes))
        drawn.append(tuple(slots))
    low = -(-paragraphs // 2)
    if genres == 1:
        counts = (paragraphs,)
    else:
        spread = (paragraphs - low) / (genres - 1)
        counts = tuple(int(round(low + g * spread)) for g in range(genres))
    starts = np.zeros((genres, topics))
    for g in range(genres):
        opening = [z for z in range(topics) if z % genres == g % genres]
        starts[g, opening] = 1.0 / len(opening)
    return DocumentGrammar(
        genres, topics, topic_words, overlap, function_words, sentences, boundary,
        tuple(drawn), classes, counts, starts,
    )  # fmt: skip


def check_settings(
    genres: int,
    paragraphs: int,
    topics: int,
    topic_words: int,
    overlap: int,
    function_words: int,
    templates: int,
    sentences: int,
    boundary: str,
) -> None:
    """DocumentError (one line) for a document language that cannot exist."""
    if boundary not in BOUNDARIES:
        raise DocumentError(
            f"unknown task.doc_boundary {boundary!r}; choose one of {', '.join(BOUNDARIES)}"
        )
    if topic_words < 1:
        raise DocumentError(
            f"task.doc_topic_words must be >= 1 (a topic needs its own words), got {topic_words}"
        )
    if not 0 <= overlap < topic_words:
        raise DocumentError(
            f"task.doc_topic_overlap must lie in 0..{topic_words - 1} (neighbouring topics share "
            f"fewer words than a topic has), got {overlap}"
        )
    if topics < 3:
        raise DocumentError(
            f"task.doc_topics must be >= 3 (a ring whose next topic differs from the last), "
            f"got {topics}"
        )
    if not 1 <= genres <= topics:
        raise DocumentError(
            f"task.doc_genres must lie in 1..{topics} (each genre opens on its own topics), "
            f"got {genres}"
        )
    for name, value in (
        ("doc_paragraphs", paragraphs), ("doc_function_words", function_words),
        ("doc_templates", templates), ("doc_sentences", sentences),
    ):  # fmt: skip
        if value < 1:
            raise DocumentError(f"task.{name} must be >= 1, got {value}")


def sample_documents(
    g: DocumentGrammar, n: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """``n`` documents (token ids, ``<bos>`` .. ``<eos>``) and their gold latents, per token:
    ``genre``, ``paragraph`` (index in the document), ``topic``, ``sentence`` (index in the
    document), ``template``, ``slot`` (position in the sentence; -1 off sentences) and ``role``
    (``ROLE_*``); -1 where a latent does not apply (``<bos>``, ``<eos>``)."""
    words = [g.topic_vocabulary(z) for z in range(g.topics)]
    first_content = FIRST_WORD + g.function_words
    kernels = [np.cumsum(g.topic_kernel(k), 1) for k in range(g.genres)]
    docs, lats = [], []
    for _ in range(n):
        genre = int(rng.integers(g.genres))
        z = int(rng.choice(g.topics, p=g.starts[genre]))
        toks, lat = [BOS_ID], [(-1, -1, -1, -1, -1, -1, ROLE_BOS)]
        sentence = 0
        for par in range(g.paragraph_counts[genre]):
            if par > 0:
                z = int(np.searchsorted(kernels[genre][z], rng.random(), side="right"))
                z = min(z, g.topics - 1)
                if rng.random() < g.mark_hit:
                    toks.append(MARK_ID)
                    lat.append((genre, par, z, sentence, -1, -1, ROLE_MARK))
            for c in range(g.sentences):
                if c > 0 and rng.random() < g.mark_false:
                    toks.append(MARK_ID)
                    lat.append((genre, par, z, sentence, -1, -1, ROLE_FALSE_MARK))
                t = int(rng.integers(len(g.templates)))
                for j, slot in enumerate(g.templates[t]):
                    if slot == CONTENT:
                        if rng.random() < g.off_topic:
                            w = first_content + int(rng.integers(g.content_words))
                        else:
                            w = int(words[z][rng.integers(g.topic_words)])
                    else:
                        cls = g.function_classes[slot]
                        w = FIRST_WORD + cls[int(rng.integers(len(cls)))]
                    toks.append(w)
                    lat.append((genre, par, z, sentence, t, j, ROLE_WORD))
                toks.append(STOP_ID)
                lat.append((genre, par, z, sentence, t, len(g.templates[t]), ROLE_STOP))
                sentence += 1
                if c == g.sentences - 1 or rng.random() < g.par_end:
                    break
        toks.append(EOS_ID)
        lat.append((-1, -1, -1, -1, -1, -1, ROLE_EOS))
        docs.append(np.array(toks, dtype=np.int64))
        arr = np.array(lat, dtype=np.int64)
        lats.append({name: arr[:, i] for i, name in enumerate(LATENT_NAMES)})
    return docs, lats


LATENT_NAMES = ("genre", "paragraph", "topic", "sentence", "template", "slot", "role")


def _split(docs: list[np.ndarray]) -> SequenceSplit:
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)
    n = len(docs)
    return SequenceSplit(
        tokens=flat,
        offsets=offsets,
        answer_start=np.ones(n, dtype=np.int64),
        target=np.full(n, -1, dtype=np.int64),
        sentence_len=lengths.copy(),
        trees=tuple(tuple(range(int(m))) if m > 1 else 0 for m in lengths),
    )


def flat_latents(lats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-document latents concatenated (aligned with a split's flat tokens)."""
    if not lats:
        return {name: np.zeros(0, dtype=np.int64) for name in LATENT_NAMES}
    return {name: np.concatenate([d[name] for d in lats]) for name in LATENT_NAMES}


def documents_task(
    g: DocumentGrammar, n_train: int, n_dev: int, n_test: int, n_gen: int, seed: int
) -> SequenceDataset:
    """A document-language dataset: every split sampled from the full language, the grammar's
    templates seeded by ``seed``, each split by (seed, split). ``gen`` is a further independent
    sample (the documents the interventions are made on). ``info``: the grammar and each
    split's gold latents (``latents[split][name]``, flat, aligned with the split's tokens)."""
    splits, latents = {}, {}
    sizes = {"train": n_train, "dev": n_dev, "test": n_test, "gen": n_gen}
    for index, (name, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, index, 8123])
        docs, lats = sample_documents(g, n, rng)
        splits[name] = _split(docs)
        latents[name] = flat_latents(lats)
    info = {"grammar": g, "latents": latents, "boundary": g.boundary}
    return SequenceDataset("documents", g.vocab(), splits, info)
