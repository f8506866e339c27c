"""The dataset every sequence (language-model) task builds: token sequences by split, the answer
span the metrics read, and the gold parse of every input sentence.

A sequence task is a language-modelling task: the model reads a whole line (input sentence, a
task marker, the output) and is trained to predict every next token (Murty et al. 2023 train
this way), or only the tokens of the answer span. Sequences have different lengths, so a split
stores them flat: ``tokens[offsets[i]:offsets[i + 1]]`` is sequence i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

PAD = "<pad>"

# a gold parse: a word position (int) or a tuple of two or more subtrees
Tree = int | tuple


@dataclass(frozen=True)
class SequenceSplit:
    """One split of a sequence task.

    ``tokens`` flat int64 token ids of every sequence, one after another; ``offsets`` (n + 1,)
    int64 the start of each sequence in ``tokens`` (``offsets[-1] == len(tokens)``).
    ``answer_start`` (n,) int64: the position (within its sequence) of the first token of the
    answer span; the span runs to the end of the sequence. For question formation and tense
    inflection it is the first token of the output sentence (the token after the task marker),
    for Dyck it is 1 (every next bracket is an answer).
    ``target`` (n,) int64: the position (within its sequence) of the token the task's accuracy
    reads: the first word of the question (question formation), the main verb of the output
    (tense inflection); -1 where the metric reads several positions (Dyck: every position whose
    next token is a closing bracket).
    ``sentence_len`` (n,) int64: number of words of the input sentence, which occupies positions
    ``0 .. sentence_len - 1`` (the full-stop and everything after it excluded); the gold parse
    ``trees[i]`` is over those positions. For Dyck the whole string is the sentence.
    ``trees``: the gold parse of each input sentence as nested tuples of word positions, e.g.
    ``((0, 1), (2, (3, 4)))``; binary wherever the grammar's constituents are.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    answer_start: np.ndarray
    target: np.ndarray
    sentence_len: np.ndarray
    trees: tuple[Tree, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class SequenceDataset:
    """All splits of a sequence task.

    ``vocab``: token strings, the id of a token is its index; ``vocab[0]`` is :data:`PAD`, never
    part of a sequence. ``splits``: ``train``, ``dev``, ``test`` (in distribution) and ``gen``
    (the generalization set: structurally novel for the grammar tasks, unseen depth patterns for
    Dyck). ``info``: task-specific facts (e.g. the token ids of the four auxiliaries,
    ``aux_ids``; the closing-bracket ids, ``close_ids``).
    """

    name: str
    vocab: tuple[str, ...]
    splits: dict[str, SequenceSplit]
    info: dict = field(default_factory=dict)

    @property
    def d_vocab(self) -> int:
        return len(self.vocab)

    @property
    def max_len(self) -> int:
        return max(int(s.lengths.max()) for s in self.splits.values() if len(s))

    @property
    def n_ctx(self) -> int:
        """The context a model needs: the longest sequence of any split."""
        return self.max_len

    def token_ids(self, words: list[str]) -> list[int]:
        index = {w: i for i, w in enumerate(self.vocab)}
        return [index[w] for w in words]

    def decode(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]


def padded(split, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences ``rows`` (default: all) of ``split``, right-padded with 0 (:data:`PAD`) to
    the longest of them: tokens (n, T) int64 and lengths (n,)."""
    rows = np.arange(len(split)) if rows is None else np.asarray(rows)
    lengths = split.lengths[rows]
    width = int(lengths.max()) if len(rows) else 1
    cols = np.arange(width)
    idx = split.offsets[rows][:, None] + cols[None, :]
    real = cols[None, :] < lengths[:, None]
    toks = np.where(real, split.tokens[np.minimum(idx, max(len(split.tokens) - 1, 0))], 0)
    return toks.astype(np.int64), lengths


def pack(
    sequences: list[list[int]],
    answer_start: list[int],
    target: list[int],
    sentence_len: list[int],
    trees: list[Tree],
) -> SequenceSplit:
    """A :class:`SequenceSplit` from Python lists (one entry per sequence)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(offsets[-1]))
    return SequenceSplit(
        tokens=flat,
        offsets=offsets,
        answer_start=np.asarray(answer_start, dtype=np.int64),
        target=np.asarray(target, dtype=np.int64),
        sentence_len=np.asarray(sentence_len, dtype=np.int64),
        trees=tuple(trees),
    )


def tree_spans(tree: Tree) -> set[tuple[int, int]]:
    """The (first, last) word positions of every constituent of ``tree`` (inclusive), single
    words and the whole sentence included."""
    out: set[tuple[int, int]] = set()

    def walk(t: Tree) -> tuple[int, int]:
        if isinstance(t, int | np.integer):
            out.add((int(t), int(t)))
            return int(t), int(t)
        ends = [walk(c) for c in t]
        span = (ends[0][0], ends[-1][1])
        out.add(span)
        return span

    walk(tree)
    return out


def sequence_tables(ds: SequenceDataset) -> dict:
    """One table (pandas) per split of a sequence dataset, one row per line (``grokscope
    export-data``): ``tokens`` (ids), ``text`` (tokens joined by spaces), ``answer_start``,
    ``target``, ``sentence_len`` and ``tree`` (the gold parse as nested lists, JSON)."""
    import pandas as pd

    out = {}
    for name, split in ds.splits.items():
        seqs = [split.sequence(i).tolist() for i in range(len(split))]
        out[name] = pd.DataFrame(
            {
                "tokens": seqs,
                "text": [" ".join(ds.vocab[t] for t in s) for s in seqs],
                "answer_start": split.answer_start,
                "target": split.target,
                "sentence_len": split.sentence_len,
                "tree": [json.dumps(t) for t in split.trees],
            }
        )
    return out
