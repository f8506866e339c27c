"""Dyck-k of bounded depth (Hewitt, Hahn, Ganguli, Liang & Manning 2020), the bracket language
Murty, Sharma, Andreas & Manning (ACL 2023) also train language models on.

Strings come from Hewitt et al.'s probabilistic automaton: with an empty stack each of the k
openers has probability 1/(2k) and END 1/2 (END is refused before length 4: then each opener has
probability 1/k); at depth 1 .. d-1 each opener 1/(2k) and "close the top bracket" 1/2; at depth
d the top bracket is closed.

Tokens: ``<pad>`` (0), ``<end>`` (1), the openers ``(0 .. (k-1`` (ids 2 .. k+1) and the closers
``)0 .. )k-1`` (ids k+2 .. 2k+1). A sequence is the brackets followed by ``<end>``, with no start
token: the brackets are the "sentence" at positions ``0 .. n-1`` (``sentence_len = n``), exactly
as a grammar task's sentence sits before its full stop, so ``trees[i]`` spans the sentence
positions with no offset. The first bracket is never predicted (it is always an opener, so no
closing-bracket prediction is lost); ``answer_start = 1``: every later bracket and ``<end>`` is
predicted. ``target = -1``: the metric reads every position whose next token is a closer.

Gold tree: a matched pair with content C is the constituent ``(open, (C, close))`` (an empty pair
is ``(open, close)``); the pieces of a content, and of the whole string, are combined
right-branching: ``(p1, (p2, (... pm)))``. So every matched pair and every content is a
constituent, and the tree is binary.

Out-of-distribution split: Murty et al. hold out "strings whose sequence of top-level depth
patterns never occurs in training". We read a string's top-level pattern as the tuple of the
maximum depths of its top-level matched groups: ``(0)1(2(3)2)`` -> ``(1, 2)``. It records the
shape of the string at the coarsest level (how many groups and how deep each goes) while
ignoring bracket types and the inner arrangement, so a ``gen`` string combines depths in an order
or number never seen in training. ``train`` is drawn first; ``dev`` and ``test`` are further
distinct strings whose pattern occurs in ``train``; ``gen`` distinct strings whose pattern does
not.
"""

from __future__ import annotations

import numpy as np

from grokscope.config import ConfigError
from grokscope.tasks.grammar import check_sizes, gc_paused
from grokscope.tasks.sequence import PAD, SequenceDataset, SequenceSplit, Tree, pack

END = "<end>"
MIN_LEN = 4  # END is refused before this length


def _check(k: int, max_depth: int, max_len: int) -> None:
    if k < 1:
        raise ConfigError(f"dyck k (bracket types) must be >= 1, got {k}")
    if max_depth < 1:
        raise ConfigError(f"dyck max_depth must be >= 1, got {max_depth}")
    if max_len < 0 or 0 < max_len < MIN_LEN:
        raise ConfigError(
            f"dyck max_len must be 0 (no limit) or >= {MIN_LEN} (the shortest string the "
            f"automaton makes), got {max_len}"
        )


def sample_dyck(
    k: int, max_depth: int, n: int, rng: np.random.Generator, max_len: int = 0
) -> list[np.ndarray]:
    """``n`` strings from the automaton (duplicates kept), each an int array of bracket codes:
    opener of type t = t, closer of type t = k + t. With ``max_len`` > 0 longer strings are
    discarded and redrawn (the automaton's distribution conditioned on length <= max_len).

    All strings of a batch advance one step at a time together (numpy over the live strings).
    """
    _check(k, max_depth, max_len)
    out: list[np.ndarray] = []
    while len(out) < n:
        out.extend(_batch(k, max_depth, max(64, 2 * (n - len(out))), rng, max_len)[0])
    return out[:n]


def _batch(
    k: int, d: int, size: int, rng: np.random.Generator, max_len: int
) -> tuple[list[np.ndarray], list[tuple[int, ...]]]:
    """Run ``size`` automata to END: the strings (in order) that stayed within ``max_len``, and
    their top-level depth patterns."""
    stack = np.zeros((size, d), dtype=np.int64)
    depth = np.zeros(size, dtype=np.int64)
    length = np.zeros(size, dtype=np.int64)
    live = np.arange(size)
    kept = np.ones(size, dtype=bool)
    who: list[np.ndarray] = []  # per step: which strings emitted ...
    what: list[np.ndarray] = []  # ... which code
    while live.size:
        u = rng.random(live.size)
        dp, ln = depth[live], length[live]
        empty, full = dp == 0, dp == d
        # END: empty stack, long enough, u < 1/2
        ends = empty & (ln >= MIN_LEN) & (u < 0.5)
        # close: stack at maximum depth, or in between and u < 1/2
        close = ~empty & (full | (u < 0.5))
        # open: everything else; its type from the rest of u (from all of u when END is refused)
        refused = empty & (ln < MIN_LEN)
        kind_u = np.where(refused, u, (u - 0.5) * 2.0)
        kind = np.minimum((kind_u * k).astype(np.int64), k - 1)
        opens = ~ends & ~close
        top = stack[live, np.maximum(dp - 1, 0)]  # type of the bracket a close would match
        codes = np.where(close, k + top, kind)
        emit = ~ends
        who.append(live[emit])
        what.append(codes[emit])
        o = live[opens]
        stack[o, depth[o]] = kind[opens]
        depth[o] += 1
        depth[live[close]] -= 1
        length[live[emit]] += 1
        still = emit.copy()
        if max_len > 0:
            too_long = length[live] > max_len
            kept[live[too_long]] = False
            still &= ~too_long
        live = live[still]
    ids = np.concatenate(who)
    order = np.argsort(ids, kind="stable")
    ids, codes_all = ids[order], np.concatenate(what)[order]
    keep = kept[ids]
    ids, codes_all = ids[keep], codes_all[keep]
    counts = np.bincount(ids, minlength=size)[kept]
    starts = np.concatenate([[0], np.cumsum(counts)])
    strings = [codes_all[starts[i] : starts[i + 1]] for i in range(len(counts))]
    return strings, _patterns(codes_all, starts, k)


def _patterns(codes: np.ndarray, starts: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """:func:`depth_pattern` of every string of a flat array of balanced strings (string i is
    ``codes[starts[i]:starts[i + 1]]``), without a Python loop over positions."""
    if len(codes) == 0:
        return [() for _ in range(len(starts) - 1)]
    depth = np.cumsum(np.where(codes < k, 1, -1))  # each string returns to 0 at its end
    group_starts = np.flatnonzero(np.concatenate([[0], depth[:-1]]) == 0)
    maxima = np.maximum.reduceat(depth, group_starts).tolist()
    cuts = np.searchsorted(group_starts, starts).tolist()  # string i: groups cuts[i]..cuts[i+1]
    return [tuple(maxima[cuts[i] : cuts[i + 1]]) for i in range(len(starts) - 1)]


def depth_pattern(codes: np.ndarray, k: int) -> tuple[int, ...]:
    """The maximum depth of each top-level matched group, in order (see the module docstring)."""
    depth = np.cumsum(np.where(codes < k, 1, -1))
    starts = np.flatnonzero(np.concatenate([[0], depth[:-1]]) == 0)
    return tuple(int(m) for m in np.maximum.reduceat(depth, starts))


def dyck_tree(codes: np.ndarray, k: int) -> Tree:
    """The gold tree of a balanced string (see the module docstring)."""
    pieces: list[list[Tree]] = [[]]  # per open bracket (and the top level): finished pieces
    opens: list[int] = []
    for i, c in enumerate(codes.tolist()):
        if c < k:
            opens.append(i)
            pieces.append([])
            continue
        content, o = pieces.pop(), opens.pop()
        if content:
            tree = content[-1]
            for p in content[-2::-1]:  # right-branching
                tree = (p, tree)
            pieces[-1].append((o, (tree, i)))
        else:
            pieces[-1].append((o, i))
    top = pieces[0]
    tree = top[-1]
    for p in top[-2::-1]:
        tree = (p, tree)
    return tree


def count_strings(k: int, max_depth: int, max_len: int) -> int:
    """Number of distinct strings the automaton can make of length <= ``max_len`` (> 0):
    balanced, depth <= max_depth, length >= 4; each of the n/2 pairs has k types."""
    # ways[h]: bracket skeletons of the current length ending at depth h
    ways = [1] + [0] * max_depth
    total = 0
    for length in range(1, max_len + 1):
        ways = [
            (ways[h - 1] if h > 0 else 0) + (ways[h + 1] if h < max_depth else 0)
            for h in range(max_depth + 1)
        ]
        if length >= MIN_LEN and length % 2 == 0:
            total += ways[0] * k ** (length // 2)
    return total


@gc_paused()
def dyck_task(
    k: int,
    max_depth: int,
    n_train: int,
    n_dev: int,
    n_test: int,
    n_gen: int,
    data_seed: int,
    max_len: int = 0,
) -> SequenceDataset:
    """Dyck-k strings of depth <= ``max_depth`` split by top-level depth pattern (module
    docstring). ``info``: ``open_ids`` / ``close_ids`` (type order), ``end_id``, ``k``,
    ``max_depth``. Raises :class:`ConfigError` for bad settings or when the language (under
    ``max_len``) cannot fill the splits."""
    _check(k, max_depth, max_len)
    check_sizes(n_train, n_dev, n_test, n_gen)
    if max_len > 0:
        n_all = count_strings(k, max_depth, max_len)
        asked = n_train + n_dev + n_test + n_gen
        if asked > n_all:
            raise ConfigError(
                f"Dyck-{k} of depth <= {max_depth} has only {n_all} distinct strings of length "
                f"<= {max_len}; asked for {asked}"
            )
    rng = np.random.default_rng(data_seed)
    vocab = (PAD, END, *(f"({t}" for t in range(k)), *(f"){t}" for t in range(k)))
    first = 2  # id of code 0

    seen: set[bytes] = set()
    train: list[np.ndarray] = []
    rest = {"dev": [], "test": [], "gen": []}
    want = {"dev": n_dev, "test": n_test, "gen": n_gen}
    train_patterns: set[tuple[int, ...]] = set()
    batch, idle, draws = max(256, n_train // 4), 0, 0
    while len(train) < n_train or any(len(rest[s]) < want[s] for s in rest):
        progress = False
        for codes, pattern in zip(*_batch(k, max_depth, batch, rng, max_len), strict=True):
            draws += 1
            key = codes.astype(np.int16).tobytes()
            if key in seen:
                continue
            if len(train) < n_train:
                seen.add(key)
                train.append(codes)
                train_patterns.add(pattern)
                progress = True
                continue
            if pattern in train_patterns:
                split = "dev" if len(rest["dev"]) < n_dev else "test"
            else:
                split = "gen"
            if len(rest[split]) < want[split]:
                seen.add(key)
                rest[split].append(codes)
                progress = True
        idle = 0 if progress else idle + 1
        if idle >= 20:
            short = {s: f"{len(rest[s])}/{want[s]}" for s in rest if len(rest[s]) < want[s]}
            raise ConfigError(
                f"Dyck-{k} depth {max_depth} (max_len {max_len}): no new string for the "
                f"{short} split(s) in the last {20 * batch} of {draws} draws"
            )

    def build(strings: list[np.ndarray]) -> SequenceSplit:
        seqs = [[*(codes + first).tolist(), 1] for codes in strings]
        n = len(strings)
        return pack(
            seqs,
            [1] * n,
            [-1] * n,
            [len(c) for c in strings],
            [dyck_tree(c, k) for c in strings],
        )

    splits = {"train": build(train), **{s: build(rest[s]) for s in ("dev", "test", "gen")}}
    return SequenceDataset(
        name=f"Dyck-{k} depth {max_depth}",
        vocab=vocab,
        splits=splits,
        info={
            "open_ids": list(range(first, first + k)),
            "close_ids": list(range(first + k, first + 2 * k)),
            "end_id": 1,
            "k": k,
            "max_depth": max_depth,
        },
    )
