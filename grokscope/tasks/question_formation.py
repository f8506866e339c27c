"""Question formation (McCoy, Frank & Linzen 2020), as set up by Murty, Sharma, Andreas & Manning
(ACL 2023) to study structural grokking.

Every line is a declarative sentence from the question-formation grammar
(:mod:`grokscope.tasks.grammar`), a full stop, a task marker and the output::

    <decl> . quest <question> ?     the question: the MAIN auxiliary (the first one after the
                                    whole subject noun phrase, relative clause or PP included)
                                    moved to the front
    <decl> . decl <decl> .          the identity task

Splits. The in-distribution pool is every line except questions whose subject carries a relative
clause: there the first auxiliary of the sentence is always the main one, so the linear rule
"front the first auxiliary" and the hierarchical rule agree on every training question.
``train`` / ``dev`` / ``test`` are distinct lines from that pool (published 100k / 1k / 10k).
``gen`` (~10k published): questions whose subject has a relative clause and which have exactly
two auxiliaries, of the same number and opposite polarity, so the two rules disagree and the
number does not give the answer away.

Sampling: a sentence from the grammar, then ``quest`` or ``decl`` with probability 1/2 each; a
subject-relative-clause question is discarded (so 40 % of the kept draws are questions);
duplicate lines are discarded (short questions repeat most: 38 % of the 100k distinct training
lines are questions). ``gen`` candidates are drawn with the subject forced to
carry a relative clause (exactly the grammar's distribution given that choice) and kept when they
meet the two-auxiliary condition.
"""

from __future__ import annotations

import numpy as np

from grokscope.tasks.grammar import (
    AUX_PL,
    AUX_SG,
    Sentence,
    check_line_counts,
    count_sentences,
    gc_paused,
    sample_lines,
    split_lines,
    vocabulary,
)
from grokscope.tasks.sequence import PAD, SequenceDataset, SequenceSplit, pack

# rule indices: the subject noun phrase with a relative clause
_SUBJECT_RC = {"NP_M_S": (2,), "NP_M_P": (2,)}
# every derivation with exactly two auxiliaries of the same number: subject relative clause, its
# auxiliary of the main number, no relative clause on the object
_GEN_SHAPE = {
    **_SUBJECT_RC,
    "RC_S": (0, 1, 3),
    "RC_P": (0, 2, 3),
    "NP_O": (0, 1, 2, 3),
}


def _negative(word: str) -> bool:
    return word.endswith("n't")


def is_gen_sentence(s: Sentence) -> bool:
    """Subject relative clause and exactly two auxiliaries, same number, opposite polarity."""
    if not s.subject_rc or len(s.auxes) != 2:
        return False
    a, b = s.auxes
    return s.number(a) == s.number(b) and _negative(s.words[a]) != _negative(s.words[b])


def question(s: Sentence) -> list[str]:
    """The question of a declarative sentence: its main auxiliary fronted (no '?')."""
    m = s.main_aux
    return [s.words[m], *s.words[:m], *s.words[m + 1 :]]


def distinct_lines() -> tuple[int, int]:
    """(in-distribution lines, generalization lines) the grammar can produce: every sentence as a
    ``decl`` line plus every sentence without a subject relative clause as a ``quest`` line; and
    the questions meeting :func:`is_gen_sentence` (half of the two-same-number-auxiliary
    sentences: the main auxiliary's polarity is free)."""
    n = count_sentences("qf")
    in_distribution = 2 * n - count_sentences("qf", _SUBJECT_RC)
    gen = count_sentences("qf", _GEN_SHAPE) // 2
    return in_distribution, gen


@gc_paused()
def question_formation_task(
    n_train: int, n_dev: int, n_test: int, n_gen: int, data_seed: int
) -> SequenceDataset:
    """The question-formation dataset (Murty et al. 2023 splits): see the module docstring.

    ``answer_start`` and ``target`` are both the position of the first output word (the fronted
    auxiliary of a question); ``sentence_len`` the number of declarative words; ``trees`` the
    gold parses of the declarative sentences. ``info``: ``aux_ids`` (do, does, don't, doesn't),
    ``marker_ids`` ({"quest", "decl"}), ``n_distinct`` (lines the grammar can produce).
    Raises :class:`ConfigError` for negative sizes or more lines than the grammar has.
    """
    sizes = (n_train, n_dev, n_test, n_gen)
    n_in, n_out = distinct_lines()
    check_line_counts("question formation", sizes, n_in, n_out)

    vocab = (PAD, ".", "?", "quest", "decl", *vocabulary("qf"))
    index = {w: i for i, w in enumerate(vocab)}
    markers = {"quest": index["quest"], "decl": index["decl"]}
    rng = np.random.default_rng(data_seed)

    lines, gen_lines = sample_lines(
        "qf",
        rng,
        sizes,
        forbidden=lambda s, quest: quest and s.subject_rc,
        gen_allowed=_SUBJECT_RC,
        is_gen=is_gen_sentence,
    )

    def build(chunk: list[tuple[Sentence, bool]]) -> SequenceSplit:
        seqs, starts, sent_lens, trees = [], [], [], []
        for s, quest in chunk:
            decl = [index[w] for w in s.words]
            n = len(decl)
            if quest:
                out = [index[w] for w in question(s)] + [index["?"]]
            else:
                out = decl + [index["."]]
            seqs.append(decl + [index["."], markers["quest" if quest else "decl"]] + out)
            starts.append(n + 2)
            sent_lens.append(n)
            trees.append(s.tree)
        return pack(seqs, starts, starts, sent_lens, trees)

    return SequenceDataset(
        name="question formation",
        vocab=vocab,
        splits=split_lines(lines, gen_lines, n_train, n_dev, build),
        info={
            "aux_ids": [index[w] for w in (AUX_PL[0], AUX_SG[0], AUX_PL[1], AUX_SG[1])],
            "marker_ids": markers,
            "n_distinct": {"in_distribution": n_in, "gen": n_out},
        },
    )
