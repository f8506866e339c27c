"""The structural-grokking tasks (Murty et al. 2023) checked against the grammar by independent
means: the McCoy, Frank & Linzen (2020) rules written out again here as a recursive-descent
parser, the question / tense / split rules re-derived from that parse, Dyck strings re-scanned
and the automaton's probabilities re-estimated from raw samples."""

import collections
import itertools

import numpy as np
import pytest
from scipy import stats

from grokscope.config import ConfigError
from grokscope.tasks.dyck import count_strings, dyck_task, sample_dyck
from grokscope.tasks.question_formation import question_formation_task
from grokscope.tasks.sequence import PAD, tree_spans
from grokscope.tasks.tense_inflection import tense_inflection_task

# ---------------------------------------------------------------- the lexicon, written out again
DET = set("the some my your our her".split())
NOUN = {
    "S": set(
        "newt orangutan peacock quail raven salamander tyrannosaurus unicorn vulture walrus "
        "xylophone yak zebra".split()
    ),
    "P": set(
        "newts orangutans peacocks quails ravens salamanders tyrannosauruses unicorns vultures "
        "walruses xylophones yaks zebras".split()
    ),
}
NOUN[None] = NOUN["S"] | NOUN["P"]
PREP = set("around near with upon by behind above below".split())
REL = {"who", "that"}
AUX = {"S": {"does", "doesn't"}, "P": {"do", "don't"}}
V_INTRANS = "giggle smile sleep swim wait move change read eat".split()
V_TRANS = "entertain amuse high_five applaud confuse admire accept remember comfort".split()
PAST_FORM = dict(
    zip(
        V_INTRANS + V_TRANS,
        "giggled smiled slept swam waited moved changed read ate entertained amused high_fived "
        "applauded confused admired accepted remembered comforted".split(),
        strict=True,
    )
)
SG_FORM = {v: v + "s" for v in V_INTRANS + V_TRANS}  # giggles, high_fives, ...


class Parser:
    """All parses of a word list under one variant of the grammar.

    ``mode``: ``qf`` (auxiliary + bare verb), ``past`` (past-tense verbs, any number) or
    ``present`` (present-tense verbs that agree with their own subject). A parse is a dict:
    ``tree`` (the documented bracketing), ``subject_end``, ``modifier`` (None / "pp" / "rc" on
    the subject), ``number`` (of the subject head).
    """

    def __init__(self, words, mode):
        self.w, self.mode = list(words), mode

    def is_(self, i, words):
        return i < len(self.w) and self.w[i] in words

    def verb(self, i, kind, num):
        """Is word i a verb of this kind ('i' / 't') that may agree with ``num``?"""
        lemmas = V_INTRANS if kind == "i" else V_TRANS
        if self.mode == "qf":
            forms = set(lemmas)
        elif self.mode == "past":
            forms = {PAST_FORM[v] for v in lemmas}
        else:
            forms = {SG_FORM[v] if num == "S" else v for v in lemmas}
        return self.is_(i, forms)

    def det_n(self, i, num):
        if self.is_(i, DET) and self.is_(i + 1, NOUN[num]):
            yield (i, i + 1), i + 2

    def pp(self, i):
        if self.is_(i, PREP):
            for dn, j in self.det_n(i + 1, None):
                yield (i, dn), j

    def rc(self, i, num):
        if not self.is_(i, REL):
            return
        j = i + 1
        if self.mode == "qf":
            if self.is_(j, AUX[num]) and self.verb(j + 1, "i", num):
                yield (i, (j, j + 1)), j + 2
            for y in "SP":
                for dn, k in self.det_n(j, y):
                    if self.is_(k, AUX[y]) and self.verb(k + 1, "t", y):
                        yield (i, (dn, (k, k + 1))), k + 2
            if self.is_(j, AUX[num]) and self.verb(j + 1, "t", num):
                for dn, k in self.det_n(j + 2, None):
                    yield (i, (j, (j + 1, dn))), k
        else:
            if self.verb(j, "i", num):
                yield (i, j), j + 1
            for y in "SP":
                for dn, k in self.det_n(j, y):
                    if self.verb(k, "t", y):
                        yield (i, (dn, k)), k + 1
            if self.verb(j, "t", num):
                for dn, k in self.det_n(j + 1, None):
                    yield (i, (j, dn)), k

    def np(self, i, num):
        for dn, j in self.det_n(i, num):
            yield dn, j, None
            for pp, k in self.pp(j):
                yield (dn, pp), k, "pp"
            for rc, k in self.rc(j, num):
                yield (dn, rc), k, "rc"

    def objects(self, i):
        for y in "SP":
            yield from self.np(i, y)

    def vp(self, i, num):
        if self.mode == "qf":
            if self.is_(i, AUX[num]) and self.verb(i + 1, "i", num):
                yield (i, i + 1), i + 2
            if self.is_(i, AUX[num]) and self.verb(i + 1, "t", num):
                for obj, j, _ in self.objects(i + 2):
                    yield (i, (i + 1, obj)), j
        else:
            if self.verb(i, "i", num):
                yield i, i + 1
            if self.verb(i, "t", num):
                for obj, j, _ in self.objects(i + 1):
                    yield (i, obj), j

    def parses(self):
        out = []
        for x in "SP":
            for subject, j, modifier in self.np(0, x):
                for vp, k in self.vp(j, x):
                    if k == len(self.w):
                        out.append(
                            {"tree": (subject, vp), "subject_end": j - 1, "modifier": modifier,
                             "number": x}
                        )  # fmt: skip
        return out


def the_parse(words, mode):
    """The one parse of a sentence (fails if it has none or several)."""
    found = Parser(words, mode).parses()
    assert len(found) == 1, (" ".join(words), mode, len(found))
    return found[0]


def leaves_and_arity(tree):
    """(leaves in order, set of child counts of internal nodes)."""
    if isinstance(tree, int | np.integer):
        return [int(tree)], set()
    leaves, arity = [], {len(tree)}
    for child in tree:
        lv, ar = leaves_and_arity(child)
        leaves += lv
        arity |= ar
    return leaves, arity


def check_tree(tree, n):
    leaves, arity = leaves_and_arity(tree)
    assert leaves == list(range(n))
    assert arity <= {2}


def number_of_noun(word):
    return "S" if word in NOUN["S"] else "P"


def lines(ds, split):
    s = ds.splits[split]
    return [ds.decode(s.sequence(i)) for i in range(len(s))]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def qf():
    return question_formation_task(2000, 200, 500, 500, data_seed=1)


@pytest.fixture(scope="module")
def tense():
    return tense_inflection_task(2000, 200, 500, 500, data_seed=1)


@pytest.fixture(scope="module")
def dyck():
    return dyck_task(4, 5, 2000, 200, 500, 300, data_seed=1)


# ----------------------------------------------------------------------- question formation


def test_qf_lines_parse_and_questions_front_the_main_auxiliary(qf):
    aux_ids = set(qf.info["aux_ids"])
    assert {qf.vocab[i] for i in aux_ids} == AUX["S"] | AUX["P"]
    assert qf.vocab[0] == PAD
    for split, s in qf.splits.items():
        for i, line in enumerate(lines(qf, split)):
            n = int(s.sentence_len[i])
            decl, tail = line[:n], line[n:]
            assert tail[0] == "." and tail[1] in ("quest", "decl")
            assert s.answer_start[i] == s.target[i] == n + 2
            parse = the_parse(decl, "qf")
            assert s.trees[i] == parse["tree"]
            check_tree(s.trees[i], n)
            out = tail[2:]
            if tail[1] == "decl":
                assert out == decl + ["."]
                continue
            # main auxiliary: the first word after the whole subject, agreeing with its head
            m = parse["subject_end"] + 1
            assert decl[m] in AUX[number_of_noun(decl[1])]
            assert out == [decl[m]] + decl[:m] + decl[m + 1 :] + ["?"]
            assert s.sequence(i)[s.target[i]] in aux_ids


def test_qf_split_rules(qf):
    seen = {}
    for split in ("train", "dev", "test", "gen"):
        for line in lines(qf, split):
            key = tuple(line)
            assert key not in seen, (split, seen.get(key))
            seen[key] = split
            n = line.index(".")
            decl, marker = line[:n], line[n + 1]
            parse = the_parse(decl, "qf")
            if split != "gen":
                assert not (marker == "quest" and parse["modifier"] == "rc")
                continue
            assert marker == "quest" and parse["modifier"] == "rc"
            auxes = [w for w in decl if w in AUX["S"] | AUX["P"]]
            assert len(auxes) == 2
            assert (
                auxes[0] in AUX["S"]
                and auxes[1] in AUX["S"]
                or (auxes[0] in AUX["P"] and auxes[1] in AUX["P"])
            )
            assert auxes[0].endswith("n't") != auxes[1].endswith("n't")
            # the linear rule (front the first auxiliary) gives the wrong first word
            assert line[n + 2] == auxes[1] != auxes[0]
    n_quest = sum(line[line.index(".") + 1] == "quest" for line in lines(qf, "train"))
    assert 0.33 < n_quest / len(qf.splits["train"]) < 0.45  # ~40 % by construction


def test_qf_distinct_line_counts():
    """The counts the generator reports against a closed form written out here."""
    d, n_sg, n_all, vi, vt, a, p, r = 6, 13, 26, 9, 9, 2, 8, 2
    pp = p * d * n_all
    rc = r * a * vi + 2 * r * (d * n_sg * a * vt) + r * a * vt * d * n_all
    np_m = d * n_sg * (1 + pp + rc)  # per number
    vp = a * vi + a * vt * 2 * np_m
    sentences = 2 * np_m * vp
    with_rc = 2 * d * n_sg * rc * vp
    rc_same = r * a * vi + r * (d * n_sg * a * vt) + r * a * vt * d * n_all
    vp_no_rc = vi + vt * 2 * d * n_sg * (1 + pp)  # main auxiliary fixed by polarity
    gen = 2 * d * n_sg * rc_same * vp_no_rc
    ds = question_formation_task(5, 0, 0, 0, data_seed=0)
    assert ds.info["n_distinct"] == {"in_distribution": 2 * sentences - with_rc, "gen": gen}
    with pytest.raises(ConfigError, match=str(2 * sentences - with_rc)) as e:
        question_formation_task(2 * sentences, 0, 0, 0, data_seed=0)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------- tense inflection


def test_tense_lines_parse_and_verbs_agree_with_their_subjects(tense):
    lemma = {**{v: k for k, v in PAST_FORM.items()}, **{v: k for k, v in SG_FORM.items()}}
    lemma.update({v: v for v in V_INTRANS + V_TRANS})
    for split, s in tense.splits.items():
        for i, line in enumerate(lines(tense, split)):
            n = int(s.sentence_len[i])
            src, tail = line[:n], line[n:]
            assert tail[0] == "." and tail[1] in ("PAST", "PRESENT") and tail[-1] == "."
            out = tail[2:-1]
            parse = the_parse(src, "past")
            assert s.trees[i] == parse["tree"]
            check_tree(s.trees[i], n)
            main = parse["subject_end"] + 1
            assert s.answer_start[i] == n + 2 and s.target[i] == n + 2 + main
            if tail[1] == "PAST":
                assert out == src
                continue
            # every verb agrees with its own subject: the output parses under agreement ...
            assert the_parse(out, "present")["tree"] == parse["tree"]
            # ... and only the verbs changed, to the same lemma
            for a, b in zip(src, out, strict=True):
                assert a == b or lemma[a] == lemma[b]
            head = number_of_noun(src[1])
            main_verb = line[s.target[i]]
            assert main_verb == (SG_FORM[lemma[main_verb]] if head == "S" else lemma[main_verb])


def test_tense_split_rules(tense):
    seen = set()
    n_present = collections.Counter()
    for split in ("train", "dev", "test", "gen"):
        for line in lines(tense, split):
            key = tuple(line)
            assert key not in seen
            seen.add(key)
            n = line.index(".")
            src, marker = line[:n], line[n + 1]
            parse = the_parse(src, "past")
            main = parse["subject_end"] + 1
            last_noun = [w for w in src[:main] if w in NOUN[None]][-1]
            agrees = number_of_noun(last_noun) == number_of_noun(src[1])
            n_present[split] += marker == "PRESENT"
            if split == "gen":
                assert marker == "PRESENT" and parse["modifier"] in ("pp", "rc") and not agrees
            elif marker == "PRESENT":
                assert agrees
    share = n_present["train"] / len(tense.splits["train"])
    assert 0.36 < share < 0.46  # published 41,184 of 100k
    assert n_present["gen"] == len(tense.splits["gen"])


def test_tense_distinct_line_counts():
    d, n_sg, n_all, vi, vt, p, r = 6, 13, 26, 9, 9, 8, 2
    pp = p * d * n_all
    rc = r * vi + 2 * r * d * n_sg * vt + r * vt * d * n_all
    np_m = d * n_sg * (1 + pp + rc)
    vp = vi + vt * 2 * np_m
    sentences = 2 * np_m * vp
    agree_subjects = d * n_sg * (1 + p * d * n_sg + r * vi + r * d * n_sg * vt + r * vt * d * n_sg)
    agree = 2 * agree_subjects * vp
    ds = tense_inflection_task(5, 0, 0, 0, data_seed=0)
    assert ds.info["n_distinct"] == {"in_distribution": sentences + agree, "gen": sentences - agree}


# ---------------------------------------------------------------------------------- Dyck


def scan(names):
    """Bracket names -> (balanced with matching types, max depth, top-level pattern, pairs)."""
    stack, depth_max, pattern, pairs = [], 0, [], []
    for i, name in enumerate(names):
        kind, t = name[0], int(name[1:])
        if kind == "(":
            stack.append((t, i))
            depth_max = max(depth_max, len(stack))
        else:
            if not stack or stack[-1][0] != t:
                return False, depth_max, (), pairs
            pairs.append((stack.pop()[1], i))
        if not stack:
            pattern.append(depth_max)
            depth_max = 0
    return not stack, max(pattern, default=0), tuple(pattern), pairs


def test_dyck_strings_trees_and_splits(dyck):
    k, d = 4, 5
    assert len(dyck.info["open_ids"]) == len(dyck.info["close_ids"]) == k
    assert [dyck.vocab[i] for i in dyck.info["close_ids"]] == [f"){t}" for t in range(k)]
    patterns, keys = {}, {}
    for split, s in dyck.splits.items():
        patterns[split] = set()
        for i in range(len(s)):
            names = dyck.decode(s.sequence(i))
            assert names[-1] == "<end>" and "<end>" not in names[:-1]
            n = int(s.sentence_len[i])
            assert n == len(names) - 1 >= 4
            assert s.answer_start[i] == 1 and s.target[i] == -1
            ok, depth, pattern, pairs = scan(names[:-1])
            assert ok and 1 <= depth <= d
            check_tree(s.trees[i], n)
            spans = tree_spans(s.trees[i])
            assert all(pair in spans for pair in pairs)  # every matched pair is a constituent
            patterns[split].add(pattern)
            key = tuple(names)
            assert key not in keys, (split, keys.get(key))
            keys[key] = split
    assert patterns["dev"] <= patterns["train"] and patterns["test"] <= patterns["train"]
    assert not patterns["gen"] & patterns["train"]


def test_dyck_automaton_frequencies():
    """Re-estimate every transition probability from raw samples (Hewitt et al. 2020)."""
    k, d = 3, 4
    strings = sample_dyck(k, d, 6000, np.random.default_rng(5))
    events = collections.Counter()
    open_types = collections.Counter()
    for codes in strings:
        depth, stack = 0, []
        for length, c in enumerate(codes.tolist()):
            state = "start" if depth == 0 and length < 4 else (
                "empty" if depth == 0 else "full" if depth == d else "mid"
            )  # fmt: skip
            if c < k:
                events[state, "open"] += 1
                open_types[c] += 1
                stack.append(c)
                depth += 1
            else:
                assert stack.pop() == c - k
                events[state, "close"] += 1
                depth -= 1
        assert depth == 0 and len(codes) >= 4
        events["empty", "end"] += 1
    assert events["start", "close"] == 0 and events["full", "open"] == 0
    assert events["full", "close"] > 0

    def z(hits, total, p):
        return abs(hits - total * p) / np.sqrt(total * p * (1 - p))

    empty = events["empty", "end"] + events["empty", "open"]
    assert z(events["empty", "end"], empty, 0.5) < 4
    mid = events["mid", "open"] + events["mid", "close"]
    assert z(events["mid", "close"], mid, 0.5) < 4
    counts = [open_types[t] for t in range(k)]
    assert stats.chisquare(counts).pvalue > 1e-4


def test_dyck_max_len_and_counts():
    # count_strings against brute-force enumeration
    for k, depth, max_len in ((1, 2, 8), (2, 3, 8), (3, 1, 6)):
        brute = 0
        for n in range(4, max_len + 1, 2):
            for shape in itertools.product("()", repeat=n):
                h, ok, top = 0, True, 0
                for ch in shape:
                    h += 1 if ch == "(" else -1
                    top = max(top, h)
                    ok &= h >= 0
                if ok and h == 0 and top <= depth:
                    brute += k ** (n // 2)
        assert count_strings(k, depth, max_len) == brute
    ds = dyck_task(2, 3, 50, 5, 5, 5, data_seed=0, max_len=10)
    assert max(int(s.sentence_len.max()) for s in ds.splits.values()) <= 10


def test_bad_settings_raise_one_line_config_errors():
    bad = [
        lambda: dyck_task(0, 3, 10, 1, 1, 1, 0),
        lambda: dyck_task(2, 0, 10, 1, 1, 1, 0),
        lambda: dyck_task(2, 3, 10, 1, 1, 1, 0, max_len=2),
        lambda: dyck_task(1, 1, 5, 0, 0, 0, 0, max_len=4),  # only "()()" exists
        lambda: dyck_task(1, 1, 3, 0, 0, 1, 0, max_len=8),  # every pattern is in train
        lambda: question_formation_task(0, 1, 1, 1, 0),
        lambda: question_formation_task(10, -1, 1, 1, 0),
        lambda: tense_inflection_task(10, 1, 1, -2, 0),
    ]
    for make in bad:
        with pytest.raises(ConfigError) as e:
            make()
        assert "\n" not in str(e.value) and str(e.value)
    with pytest.raises(ConfigError, match="only 1 distinct"):
        dyck_task(1, 1, 5, 0, 0, 0, 0, max_len=4)


# ------------------------------------------------------------------------ determinism, size


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: question_formation_task(300, 20, 50, 50, seed),
        lambda seed: tense_inflection_task(300, 20, 50, 50, seed),
        lambda seed: dyck_task(3, 4, 300, 20, 50, 20, seed),
    ],
)
def test_same_seed_same_data_other_seed_other_data(make):
    a, b, c = make(0), make(0), make(1)
    assert a.vocab == b.vocab and a.info == b.info
    for name in a.splits:
        x, y = a.splits[name], b.splits[name]
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.offsets, y.offsets)
        assert x.trees == y.trees
        assert np.array_equal(x.target, y.target)
    assert not np.array_equal(a.splits["train"].tokens[:500], c.splits["train"].tokens[:500])


def test_published_sizes_are_built_distinct():
    """The published sizes (100k / 1k / 10k / 10k), every line distinct across the splits (their
    generation time is measured in benchmarks/bench_structural.py, not here)."""
    ds = question_formation_task(100_000, 1_000, 10_000, 10_000, data_seed=0)
    assert {k: len(s) for k, s in ds.splits.items()} == {
        "train": 100_000, "dev": 1_000, "test": 10_000, "gen": 10_000,
    }  # fmt: skip
    all_lines = {
        s.sequence(i).tobytes() for s in ds.splits.values() for i in range(len(s))
    }  # fmt: skip
    assert len(all_lines) == 121_000
