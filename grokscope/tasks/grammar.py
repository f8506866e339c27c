"""The McCoy, Frank & Linzen (2020) grammars as data, and a seeded sampler with gold parses.

Murty, Sharma, Andreas & Manning (ACL 2023, "Grokking of hierarchical structure in vanilla
transformers") train language models on sentences from these grammars: the question-formation
variant (``"qf"``: auxiliaries do / does / don't / doesn't before bare verbs) and the
tense-inflection variant (``"tense"``: the same skeleton without auxiliaries; every verb carries
the number of its own subject in its category, e.g. ``V_trans_S``, and is stored as its lemma;
:mod:`grokscope.tasks.tense_inflection` inflects it).

A rule is ``(weight, shape)``; a shape is a symbol or a nested tuple of symbols, and the nesting
IS the gold bracketing (a tuple is a constituent; a symbol alone is a unary rule and adds no
constituent). Weights are equal unless REFERENCES shows otherwise (relative clauses 2/1/1/2).
The bracketing chosen (``X`` = S or P, number of the noun the phrase belongs to)::

    S      -> (NP_M_X VP_M_X)
    NP_M_X -> (Det N_X) | ((Det N_X) PP) | ((Det N_X) RC_X)
    NP_O   -> (Det N_S) | (Det N_P) | ((Det N_S) PP) | ((Det N_P) PP)
            | ((Det N_S) RC_S) | ((Det N_P) RC_P)
    PP     -> (Prep (Det N))                  N -> N_S | N_P
    qf:    VP_M_X -> (Aux_X V_intrans) | (Aux_X (V_trans NP_O))
           RC_X   -> (Rel (Aux_X V_intrans))                    weight 2
                   | (Rel ((Det N_S) (Aux_S V_trans)))          weight 1
                   | (Rel ((Det N_P) (Aux_P V_trans)))          weight 1
                   | (Rel (Aux_X (V_trans (Det N))))            weight 2
    tense: VP_M_X -> V_intrans_X | (V_trans_X NP_O)
           RC_X   -> (Rel V_intrans_X) | (Rel ((Det N_S) V_trans_S))
                   | (Rel ((Det N_P) V_trans_P)) | (Rel (V_trans_X (Det N)))   weights 2/1/1/2

So the subject noun phrase and the verb phrase are the two halves of the sentence, a determiner
and its noun always form a constituent, a modifier (PP or RC) attaches to the (Det N) it follows,
and verbs take their objects before their auxiliaries (Aux (V NP)). ``PP`` is a named symbol for
readability only (one rule: same language and probabilities as REFERENCES' flat rules).

The grammar is unambiguous (every sentence has one derivation), so counting derivations
(:func:`count_sentences`) counts distinct sentences.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from grokscope.config import ConfigError
from grokscope.tasks.sequence import Tree

Shape = str | tuple

DETERMINERS = ("the", "some", "my", "your", "our", "her")
NOUNS_SG = (
    "newt", "orangutan", "peacock", "quail", "raven", "salamander", "tyrannosaurus",
    "unicorn", "vulture", "walrus", "xylophone", "yak", "zebra",
)  # fmt: skip
NOUNS_PL = (
    "newts", "orangutans", "peacocks", "quails", "ravens", "salamanders", "tyrannosauruses",
    "unicorns", "vultures", "walruses", "xylophones", "yaks", "zebras",
)  # fmt: skip
VERBS_INTRANS = ("giggle", "smile", "sleep", "swim", "wait", "move", "change", "read", "eat")
VERBS_TRANS = (
    "entertain", "amuse", "high_five", "applaud", "confuse", "admire", "accept", "remember",
    "comfort",
)  # fmt: skip
AUX_SG = ("does", "doesn't")
AUX_PL = ("do", "don't")
PREPOSITIONS = ("around", "near", "with", "upon", "by", "behind", "above", "below")
RELATIVIZERS = ("who", "that")

_SHARED_LEXICON: dict[str, tuple[str, ...]] = {
    "Det": DETERMINERS,
    "N_S": NOUNS_SG,
    "N_P": NOUNS_PL,
    "Prep": PREPOSITIONS,
    "Rel": RELATIVIZERS,
}

_SHARED_RULES: dict[str, tuple[tuple[float, Shape], ...]] = {
    "S": ((1, ("NP_M_S", "VP_M_S")), (1, ("NP_M_P", "VP_M_P"))),
    "NP_M_S": ((1, ("Det", "N_S")), (1, (("Det", "N_S"), "PP")), (1, (("Det", "N_S"), "RC_S"))),
    "NP_M_P": ((1, ("Det", "N_P")), (1, (("Det", "N_P"), "PP")), (1, (("Det", "N_P"), "RC_P"))),
    "NP_O": (
        (1, ("Det", "N_S")),
        (1, ("Det", "N_P")),
        (1, (("Det", "N_S"), "PP")),
        (1, (("Det", "N_P"), "PP")),
        (1, (("Det", "N_S"), "RC_S")),
        (1, (("Det", "N_P"), "RC_P")),
    ),
    "PP": ((1, ("Prep", ("Det", "N"))),),
    "N": ((1, "N_S"), (1, "N_P")),
}

# question-formation variant: auxiliaries, bare verbs
QF_LEXICON: dict[str, tuple[str, ...]] = {
    **_SHARED_LEXICON,
    "Aux_S": AUX_SG,
    "Aux_P": AUX_PL,
    "V_intrans": VERBS_INTRANS,
    "V_trans": VERBS_TRANS,
}
QF_RULES: dict[str, tuple[tuple[float, Shape], ...]] = {
    **_SHARED_RULES,
    **{
        f"VP_M_{x}": ((1, (f"Aux_{x}", "V_intrans")), (1, (f"Aux_{x}", ("V_trans", "NP_O"))))
        for x in "SP"
    },
    **{
        f"RC_{x}": (
            (2, ("Rel", (f"Aux_{x}", "V_intrans"))),
            (1, ("Rel", (("Det", "N_S"), ("Aux_S", "V_trans")))),
            (1, ("Rel", (("Det", "N_P"), ("Aux_P", "V_trans")))),
            (2, ("Rel", (f"Aux_{x}", ("V_trans", ("Det", "N"))))),
        )
        for x in "SP"
    },
}

# tense variant: no auxiliaries; verbs (lemmas) carry their subject's number in the category
TENSE_LEXICON: dict[str, tuple[str, ...]] = {
    **_SHARED_LEXICON,
    **{f"V_intrans_{x}": VERBS_INTRANS for x in "SP"},
    **{f"V_trans_{x}": VERBS_TRANS for x in "SP"},
}
TENSE_RULES: dict[str, tuple[tuple[float, Shape], ...]] = {
    **_SHARED_RULES,
    **{f"VP_M_{x}": ((1, f"V_intrans_{x}"), (1, (f"V_trans_{x}", "NP_O"))) for x in "SP"},
    **{
        f"RC_{x}": (
            (2, ("Rel", f"V_intrans_{x}")),
            (1, ("Rel", (("Det", "N_S"), "V_trans_S"))),
            (1, ("Rel", (("Det", "N_P"), "V_trans_P"))),
            (2, ("Rel", (f"V_trans_{x}", ("Det", "N")))),
        )
        for x in "SP"
    },
}

GRAMMARS = {"qf": (QF_RULES, QF_LEXICON), "tense": (TENSE_RULES, TENSE_LEXICON)}


@dataclass(slots=True)
class Sentence:
    """One sampled declarative sentence (no full stop) and the facts the tasks read.

    ``words``: the words (verbs as lemmas in the tense variant); ``cats``: the preterminal
    category of each word (``Det``, ``N_S``, ``Aux_P``, ``V_trans_S`` ...); ``tree``: the gold
    parse over positions ``0 .. len(words) - 1``. ``subject_end``: last position of the subject
    noun phrase (relative clause / PP included); ``main_verb``: position of the main verb;
    ``main_aux``: position of the main auxiliary (``subject_end + 1``; -1 in the tense variant).
    ``subject_number``: ``"S"`` or ``"P"`` (number of the subject head, position 1);
    ``subject_rc`` / ``subject_pp``: whether the subject carries a relative clause / a PP.
    ``nouns`` / ``auxes`` / ``verbs`` (computed on access): positions of every noun /
    auxiliary / verb, in order.
    """

    words: tuple[str, ...]
    cats: tuple[str, ...]
    tree: Tree
    subject_end: int
    main_verb: int
    main_aux: int
    subject_number: str
    subject_rc: bool
    subject_pp: bool

    @property
    def nouns(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.cats) if c[0] == "N")

    @property
    def auxes(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.cats) if c[0] == "A")

    @property
    def verbs(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.cats) if c[0] == "V")

    def number(self, position: int) -> str:
        """``"S"`` or ``"P"``: the number a noun, auxiliary or (tense variant) verb carries."""
        return self.cats[position][-1]


def _uniforms(rng: np.random.Generator, block: int = 8192) -> Callable[[], float]:
    """A function returning the next uniform [0, 1) number of ``rng``, drawn in blocks (one
    numpy call per number would dominate the sampling time)."""
    blocks = iter(lambda: rng.random(block).tolist(), None)  # endless: a list is never None
    return itertools.chain.from_iterable(blocks).__next__


class GrammarSampler:
    """Seeded sampler of declarative sentences from one variant (``"qf"`` or ``"tense"``).

    ``allowed`` restricts, for the named nonterminals, which rules (by index) may be chosen; the
    weights of the allowed rules are renormalised. Restricting the subject (``NP_M_S``,
    ``NP_M_P``, used once per sentence) gives exactly the grammar's distribution conditioned on
    that choice; the tasks use it to draw generalization candidates faster, then filter them.

    Every choice (rule, word) reads one uniform number; the rule table is compiled once into
    closures so that a sentence costs ~12 us (the tasks draw ~10^5 of them).
    """

    def __init__(
        self,
        variant: str,
        rng: np.random.Generator,
        allowed: dict[str, tuple[int, ...]] | None = None,
    ):
        if variant not in GRAMMARS:
            raise ValueError(f"unknown grammar variant {variant!r}; choose qf or tense")
        self.variant = variant
        self.rules, self.lexicon = GRAMMARS[variant]
        self.allowed = allowed or {}
        self.draw = _uniforms(rng)
        self._compiled: dict[str, _Expand] = {}
        self._root = self._compile("S")

    def uniform(self) -> float:
        """A uniform [0, 1) number from the sampler's stream (for the tasks' own coin flips)."""
        return self.draw()

    def sample(self) -> Sentence:
        """One sentence and its facts."""
        words: list[str] = []
        cats: list[str] = []
        spans: list[tuple[str, int, int]] = []
        tree = self._root(words, cats, spans)
        return _facts(self.variant, words, cats, tree, spans)

    def _compile(self, shape: Shape) -> _Expand:
        """A function that expands ``shape``: appends words / categories (and, for a
        nonterminal, its span) and returns the subtree."""
        if isinstance(shape, tuple):
            parts = [self._compile(s) for s in shape]
            if len(parts) == 2:
                left, right = parts
                return lambda w, c, s: (left(w, c, s), right(w, c, s))
            return lambda w, c, s: tuple([f(w, c, s) for f in parts])
        if shape in self.lexicon:
            return self._compile_word(shape)
        if shape not in self._compiled:
            self._compiled[shape] = self._compile_rules(shape)
        return self._compiled[shape]

    def _compile_word(self, cat: str) -> _Expand:
        lex, k, draw = self.lexicon[cat], len(self.lexicon[cat]), self.draw

        def word(w: list[str], c: list[str], s: list) -> Tree:
            w.append(lex[int(draw() * k)])
            c.append(cat)
            return len(w) - 1

        return word

    def _compile_rules(self, name: str) -> _Expand:
        options = self.rules[name]
        keep = self.allowed.get(name, tuple(range(len(options))))
        if not keep:
            raise ValueError(f"no rule of {name} is allowed")
        cum, parts, total = [], [], 0.0
        for j in keep:
            total += float(options[j][0])
            cum.append(total)
            parts.append(self._compile(options[j][1]))
        last, draw = len(parts) - 1, self.draw
        role = next((r for r in _ROLES if name.startswith(r)), None)

        def expand(w: list[str], c: list[str], s: list) -> Tree:
            x, j = draw() * total, 0
            while j < last and x >= cum[j]:
                j += 1
            start = len(w)
            tree = parts[j](w, c, s)
            if role is not None:
                s.append((role, start, len(w) - 1))
            return tree

        return expand


_Expand = Callable[[list, list, list], Tree]
# the nonterminals whose spans the facts read (by name prefix)
_ROLES = ("NP_M", "VP_M", "RC", "PP")


def _facts(
    variant: str,
    words: list[str],
    cats: list[str],
    tree: Tree,
    spans: list[tuple[str, int, int]],
) -> Sentence:
    """The task facts of a sentence, read off its categories and the spans of its subject
    (``NP_M``), main verb phrase (``VP_M``), relative clauses and PPs."""
    subject_end = next(end for role, _, end in spans if role == "NP_M")
    vp_start = next(start for role, start, _ in spans if role == "VP_M")
    subject_rc = subject_pp = False
    for role, _, end in spans:
        if end <= subject_end:
            subject_rc = subject_rc or role == "RC"
            subject_pp = subject_pp or role == "PP"
    if variant == "qf":
        main_aux, main_verb = vp_start, vp_start + 1
    else:
        main_aux, main_verb = -1, vp_start
    return Sentence(
        words=tuple(words),
        cats=tuple(cats),
        tree=tree,
        subject_end=subject_end,
        main_verb=main_verb,
        main_aux=main_aux,
        subject_number=cats[1][-1],
        subject_rc=subject_rc,
        subject_pp=subject_pp,
    )


def count_sentences(
    variant: str, allowed: dict[str, tuple[int, ...]] | None = None, shape: Shape = "S"
) -> int:
    """Number of distinct word strings a shape (default: a whole sentence) of a variant derives,
    with ``allowed`` as in :class:`GrammarSampler` (only derivations using allowed rules).
    Exact: the grammar is finite (no recursion) and unambiguous, so derivations and sentences
    are in one-to-one correspondence."""
    rules, lexicon = GRAMMARS[variant]
    allowed = allowed or {}
    memo: dict[str, int] = {}

    def count(shape: Shape) -> int:
        if isinstance(shape, tuple):
            out = 1
            for s in shape:
                out *= count(s)
            return out
        if shape in lexicon:
            return len(lexicon[shape])
        if shape not in memo:
            options = rules[shape]
            keep = allowed.get(shape, tuple(range(len(options))))
            memo[shape] = sum(count(options[j][1]) for j in keep)
        return memo[shape]

    return count(shape)


def vocabulary(variant: str) -> tuple[str, ...]:
    """Every word of a variant's lexicon, once, in a fixed order (categories in table order)."""
    _, lexicon = GRAMMARS[variant]
    out: list[str] = []
    for words in lexicon.values():
        out.extend(w for w in words if w not in out)
    return tuple(out)


def check_sizes(n_train: int, n_dev: int, n_test: int, n_gen: int) -> None:
    """Split sizes every sequence task accepts: at least one training line, none negative."""
    if n_train < 1:
        raise ConfigError(f"n_train must be >= 1, got {n_train}")
    for name, n in (("n_dev", n_dev), ("n_test", n_test), ("n_gen", n_gen)):
        if n < 0:
            raise ConfigError(f"{name} must be >= 0, got {n}")


Line = tuple["Sentence", bool]  # a sampled sentence and its task flag (quest / PRESENT)


def sample_lines(
    variant: str,
    rng: np.random.Generator,
    sizes: tuple[int, int, int, int],
    forbidden: Callable[[Sentence, bool], bool],
    gen_allowed: dict,
    is_gen: Callable[[Sentence], bool],
) -> tuple[list[Line], list[Line]]:
    """The distinct in-distribution lines (train + dev + test) and generalization lines of a
    grammar task, seeded by ``rng``. ``sizes`` = (n_train, n_dev, n_test, n_gen).

    In distribution: a sentence from the whole grammar and a fair coin for the task flag, refused
    when ``forbidden(sentence, flag)`` (the split rule) or when the line was drawn before.
    Generalization: sentences with the subject rule restricted to ``gen_allowed``, flag True,
    kept when ``is_gen`` holds and the line is new. Check the sizes first
    (:func:`check_line_counts`): asking for more lines than the grammar has would never end."""
    n_train, n_dev, n_test, n_gen = sizes
    n_in = n_train + n_dev + n_test
    seen: set[tuple[tuple[str, ...], bool]] = set()
    sampler = GrammarSampler(variant, rng)
    lines: list[Line] = []
    while len(lines) < n_in:
        s = sampler.sample()
        flag = sampler.uniform() < 0.5
        if forbidden(s, flag):
            continue
        key = (s.words, flag)
        if key not in seen:
            seen.add(key)
            lines.append((s, flag))
    gen_lines: list[Line] = []
    gen_sampler = GrammarSampler(variant, rng, allowed=gen_allowed)
    while len(gen_lines) < n_gen:
        s = gen_sampler.sample()
        key = (s.words, True)
        if is_gen(s) and key not in seen:
            seen.add(key)
            gen_lines.append((s, True))
    return lines, gen_lines


def check_line_counts(task: str, sizes: tuple[int, int, int, int], n_in: int, n_out: int) -> None:
    """Refuse (one line) more in-distribution or generalization lines than the grammar has."""
    n_train, n_dev, n_test, n_gen = sizes
    check_sizes(n_train, n_dev, n_test, n_gen)
    if n_train + n_dev + n_test > n_in:
        raise ConfigError(
            f"{task} has only {n_in} distinct in-distribution lines; asked for "
            f"{n_train + n_dev + n_test} (train + dev + test)"
        )
    if n_gen > n_out:
        raise ConfigError(
            f"{task} has only {n_out} distinct generalization lines; asked for {n_gen}"
        )


def split_lines(lines: list, gen_lines: list, n_train: int, n_dev: int, build: Callable) -> dict:
    """``train`` / ``dev`` / ``test`` (the in-distribution lines in order) and ``gen``, each
    built by ``build``."""
    a, b = n_train, n_train + n_dev
    return {
        "train": build(lines[:a]),
        "dev": build(lines[a:b]),
        "test": build(lines[b:]),
        "gen": build(gen_lines),
    }


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Build a large acyclic dataset without the cyclic garbage collector (usable as a
    decorator).

    The gold trees are millions of small nested tuples. CPython keeps such tuples tracked for
    many collections (each pass untracks only the innermost level), so every later full
    collection would scan them all: for 100k Dyck strings that is ~10^7 objects and seconds per
    pass, during generation (it doubled the time) and after it, in whatever the process does
    next. So: collect once first (nothing pending is left behind), pause the collector while
    building, then :func:`gc.freeze` everything alive (the new immutable, cycle-free dataset
    among it) so no later collection scans it, and resume. Nothing changes when the collector
    was already disabled.
    """
    if not gc.isenabled():
        yield
        return
    gc.collect()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        gc.enable()
