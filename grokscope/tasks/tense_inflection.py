"""Tense inflection (McCoy, Frank & Linzen 2020), as set up by Murty, Sharma, Andreas & Manning
(ACL 2023) to study structural grokking.

Every line is a sentence from the tense variant of the grammar (:mod:`grokscope.tasks.grammar`:
the question-formation skeleton without auxiliaries) with every verb in the past tense, a full
stop, a task marker and the output::

    <past> . PAST <past> .          copy
    <past> . PRESENT <present> .    re-inflect: each verb in the present tense, agreeing in
                                    number with ITS OWN subject (3rd person singular: -s; plural:
                                    the bare form)

Past tense hides number, so the PRESENT task needs the subject of every verb. Splits: a PRESENT
line enters the in-distribution pool only when the last noun before the main verb agrees in
number with the subject head, so the linear rule "agree with the most recent noun" fits every
training example; ``gen`` is PRESENT lines whose subject carries an attractor (the noun of a PP
or relative clause on the subject, last before the main verb) of the other number, where the
linear and the hierarchical rule disagree.

Train mix: a sentence, then PAST or PRESENT with probability 1/2 each, PRESENT lines that break
the rule discarded. A subject's last noun disagrees with probability 5/18 (PP: 1/3 x 1/2;
relative clause: 1/3 x 1/3), so PRESENT is 13/31 = 41.9 % of the kept draws; duplicate lines
are discarded (short PRESENT lines repeat most), leaving about 40.3 % PRESENT among 100k
distinct training lines (published: 41,184 of 100k = 41.2 %). No quota is imposed: the mix is
what the published recipe (a fair coin, then the agreement filter) produces.
"""

from __future__ import annotations

import numpy as np

from grokscope.tasks.grammar import (
    DETERMINERS,
    NOUNS_PL,
    NOUNS_SG,
    PREPOSITIONS,
    RELATIVIZERS,
    VERBS_INTRANS,
    VERBS_TRANS,
    Sentence,
    check_line_counts,
    count_sentences,
    gc_paused,
    sample_lines,
    split_lines,
    vocabulary,
)
from grokscope.tasks.sequence import PAD, SequenceDataset, SequenceSplit, pack

# past tense of every verb lemma (irregulars: sleep, swim, read, eat)
PAST = {
    "giggle": "giggled",
    "smile": "smiled",
    "sleep": "slept",
    "swim": "swam",
    "wait": "waited",
    "move": "moved",
    "change": "changed",
    "read": "read",
    "eat": "ate",
    "entertain": "entertained",
    "amuse": "amused",
    "high_five": "high_fived",
    "applaud": "applauded",
    "confuse": "confused",
    "admire": "admired",
    "accept": "accepted",
    "remember": "remembered",
    "comfort": "comforted",
}
# present tense: 3rd person singular adds -s to every lemma here; plural is the lemma itself
PRESENT = {
    "S": {lemma: lemma + "s" for lemma in PAST},
    "P": {lemma: lemma for lemma in PAST},
}
assert set(PAST) == set(VERBS_INTRANS) | set(VERBS_TRANS)

# rule indices of a subject with a PP or a relative clause (where an attractor can be)
_SUBJECT_MODIFIED = {"NP_M_S": (1, 2), "NP_M_P": (1, 2)}


def past_words(s: Sentence) -> list[str]:
    """The sentence with every verb in the past tense."""
    verbs = set(s.verbs)
    return [PAST[w] if i in verbs else w for i, w in enumerate(s.words)]


def present_words(s: Sentence) -> list[str]:
    """The sentence with every verb in the present tense, agreeing with its own subject (the
    number its grammar category carries)."""
    verbs = set(s.verbs)
    return [PRESENT[s.number(i)][w] if i in verbs else w for i, w in enumerate(s.words)]


def last_noun_agrees(s: Sentence) -> bool:
    """Whether the last noun before the main verb has the number of the subject head."""
    last = max(p for p in s.nouns if p < s.main_verb)
    return s.number(last) == s.subject_number


def distinct_lines() -> tuple[int, int]:
    """(in-distribution lines, generalization lines) the grammar can produce: every sentence as
    a PAST line plus every sentence whose last noun before the main verb agrees as a PRESENT
    line; the remaining sentences as gen PRESENT lines. The agreeing subjects are counted shape
    by shape: bare, PP with a noun of the head's number, each relative clause whose last noun
    (if any) has the head's number."""
    n = count_sentences("tense")
    agree = 0
    for x in "SP":
        head = ("Det", f"N_{x}")
        subjects = (
            head,
            (head, "Prep", "Det", f"N_{x}"),
            (head, "Rel", f"V_intrans_{x}"),
            (head, "Rel", "Det", f"N_{x}", f"V_trans_{x}"),
            (head, "Rel", f"V_trans_{x}", "Det", f"N_{x}"),
        )
        n_subjects = sum(count_sentences("tense", shape=s) for s in subjects)
        agree += n_subjects * count_sentences("tense", shape=f"VP_M_{x}")
    return n + agree, n - agree


@gc_paused()
def tense_inflection_task(
    n_train: int, n_dev: int, n_test: int, n_gen: int, data_seed: int
) -> SequenceDataset:
    """The tense-inflection dataset (Murty et al. 2023 splits): see the module docstring.

    ``answer_start``: position of the first output word; ``target``: position of the main verb
    of the output (the token the main-verb accuracy reads is ``sequence[target]``);
    ``sentence_len``: words of the input sentence; ``trees``: its gold parse. ``info``:
    ``marker_ids`` ({"PAST", "PRESENT"}), ``pos_ids`` (each token's coarse part of speech,
    :data:`POS_TAGS`), ``n_distinct`` (lines the grammar can produce).
    Raises :class:`ConfigError` for negative sizes or more lines than the grammar has.
    """
    sizes = (n_train, n_dev, n_test, n_gen)
    n_in, n_out = distinct_lines()
    check_line_counts("tense inflection", sizes, n_in, n_out)

    lemmas = set(PAST)
    words = [w for w in vocabulary("tense") if w not in lemmas]
    forms = [*PAST.values(), *PRESENT["S"].values(), *PRESENT["P"].values()]
    verb_forms = list(dict.fromkeys(forms))  # 'read' is past and plural present
    vocab = (PAD, ".", "PAST", "PRESENT", *words, *verb_forms)
    index = {w: i for i, w in enumerate(vocab)}
    markers = {"PAST": index["PAST"], "PRESENT": index["PRESENT"]}
    pos_ids = [_part_of_speech(w) for w in vocab]
    rng = np.random.default_rng(data_seed)

    lines, gen_lines = sample_lines(
        "tense",
        rng,
        sizes,
        forbidden=lambda s, present: present and not last_noun_agrees(s),
        gen_allowed=_SUBJECT_MODIFIED,
        is_gen=lambda s: not last_noun_agrees(s),
    )

    def build(chunk: list[tuple[Sentence, bool]]) -> SequenceSplit:
        seqs, starts, targets, sent_lens, trees = [], [], [], [], []
        for s, present in chunk:
            source = [index[w] for w in past_words(s)]
            n = len(source)
            out = [index[w] for w in present_words(s)] if present else source
            marker = markers["PRESENT" if present else "PAST"]
            seqs.append(source + [index["."], marker] + out + [index["."]])
            starts.append(n + 2)
            targets.append(n + 2 + s.main_verb)
            sent_lens.append(n)
            trees.append(s.tree)
        return pack(seqs, starts, targets, sent_lens, trees)

    return SequenceDataset(
        name="tense inflection",
        vocab=vocab,
        splits=split_lines(lines, gen_lines, n_train, n_dev, build),
        info={
            "marker_ids": markers,
            "pos_ids": pos_ids,
            "n_distinct": {"in_distribution": n_in, "gen": n_out},
        },
    )


# coarse parts of speech of the vocabulary, for the released metric's part-of-speech check
POS_TAGS = ("other", "det", "noun", "verb", "prep", "rel", "stop", "marker")


def _part_of_speech(word: str) -> int:
    """The coarse part of speech of a vocabulary word (an index into :data:`POS_TAGS`)."""
    if word in DETERMINERS:
        return 1
    if word in NOUNS_SG or word in NOUNS_PL:
        return 2
    if word in PREPOSITIONS:
        return 4
    if word in RELATIVIZERS:
        return 5
    if word == ".":
        return 6
    if word in ("PAST", "PRESENT"):
        return 7
    verbs = {*PAST, *PAST.values(), *PRESENT["S"].values(), *PRESENT["P"].values()}
    return 3 if word in verbs else 0
