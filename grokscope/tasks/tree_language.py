"""Tree-structured languages: the Random Hierarchy Model, its hierarchical filtering, and the
exact Bayes-optimal next-token predictor of every level.

The grammar (Random Hierarchy Model; Cagnetta, Petrini, Tomasini, Favero & Wyart, PRX 2024):
L levels above the tokens, ``v`` symbols per level, each symbol with ``m`` production rules
(synonyms), each rule an ``s``-tuple of symbols of the level below, the rules of different
symbols disjoint (so ``v * m <= v ** s``). A unit's root (level L) is uniform over its ``v``
symbols, each node picks one of its ``m`` rules uniformly, and the ``s ** L`` leaves (level 0)
are the tokens. In the docs the levels are named phrase (1), sentence (2), paragraph (3) and
section (4): a level-k node spans ``s ** k`` tokens.

Filtering at level k, two rules (``filter_rule``):

- ``garnier_brun``: hierarchical filtering as Garnier-Brun, Mezard, Moscato & Saglietti (ICML
  2025) define it in their released code: the root is drawn, then the level-k nodes
  independently *given the root*, each from the distribution the grammar gives that node under
  that root, then the grammar below them. The root stays a shared variable, so blocks remain
  correlated through it (and the level-k predictor must infer it from the earlier blocks).
  Their k counts factorised layers from the root (k = 0: the full model): their k is our L - k.
  Their grammar also draws rules with non-uniform weights over all tuples; ours is the Random
  Hierarchy Model's (uniform rules, disjoint synonyms).
- ``marginal`` (ours): the level-k nodes independently from their unconditional marginals, the
  root removed too. It keeps every correlation inside a level-k block and none between blocks,
  a stricter language than Garnier-Brun et al.'s: the data contain the levels 0..k only.

Filtering at k = L is the full grammar under both rules.

The exact references. For a prefix of a unit, ``q_k(x_i | x_<i)`` is the next-token distribution
of the level-k filtered language: the posterior over the level-k ancestor of token i given the
earlier tokens of its block (and, under the Garnier-Brun rule, the posterior over the root given
the earlier blocks), passed down the tree (belief propagation on a tree is exact). It is
the best prediction any model can make from correlations up to level k; ``q_0`` is the marginal
of each position and ``q_L`` the Bayes-optimal predictor of the full language. Their
cross-entropies on the language, H_0 >= H_1 >= ... >= H_L, are the plateaus a learner can sit
on (conditioning on more of the past never raises the expected log-loss).

A sequence is ``<bos>`` followed by ``units`` independent trees' leaves, with a boundary token
``<sep>`` between units when asked for. Which level a prediction needs: for the token at leaf
position j > 0 of its unit, the level of the lowest common ancestor of leaves j - 1 and j (the
smallest unit both lie in: a phrase's later tokens need level 1, the first token of a new phrase
needs its sentence, level 2, the first token of a new sentence needs the paragraph, level 3);
the first token of a unit needs level 0 only (units are independent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.config import MAX_REFERENCE_GIB
from grokscope.errors import GrokscopeError
from grokscope.tasks.sequence import PAD, SequenceDataset, SequenceSplit, Tree

BOS = "<bos>"
SEP = "<sep>"
LEVEL_NAMES = ("token", "phrase", "sentence", "paragraph", "section")
# exact references held in memory at once (levels x sequences x positions x vocabulary, float64)
MAX_REFERENCE_BYTES = int(MAX_REFERENCE_GIB * 2**30)  # the one limit, set in config


class GrammarError(GrokscopeError, ValueError):
    """A tree language that cannot exist or cannot be computed: one line naming the setting."""


@dataclass(frozen=True)
class Grammar:
    """A Random Hierarchy Model. ``rules[l - 1]`` (v, m, s) int64: the m rules of each level-l
    symbol, as s-tuples of level-(l - 1) symbols, for l = 1..L."""

    levels: int
    vocab: int
    rules_per_symbol: int
    branching: int
    rules: tuple[np.ndarray, ...]

    @property
    def leaves(self) -> int:
        """Tokens per unit, ``s ** L``."""
        return self.branching**self.levels


def make_grammar(levels: int, vocab: int, rules: int, branching: int, seed: int) -> Grammar:
    """A seeded Random Hierarchy Model: at every level, ``vocab * rules`` distinct s-tuples drawn
    without replacement from the ``vocab ** branching`` possible ones, ``rules`` to a symbol."""
    if levels < 1 or vocab < 2 or rules < 1 or branching < 2:
        raise GrammarError(
            f"a tree language needs levels >= 1, vocab >= 2, rules >= 1 and branching >= 2; got "
            f"levels={levels}, vocab={vocab}, rules={rules}, branching={branching}"
        )
    tuples = vocab**branching
    if vocab * rules > tuples:
        raise GrammarError(
            f"{vocab} symbols x {rules} synonymous rules need {vocab * rules} distinct "
            f"{branching}-tuples, but only {tuples} exist: lower task.tree_rules to at most "
            f"{tuples // vocab}"
        )
    rng = np.random.default_rng([seed, 4471])
    out = []
    for _ in range(levels):
        flat = rng.choice(tuples, size=vocab * rules, replace=False)
        digits = (flat[:, None] // vocab ** np.arange(branching - 1, -1, -1)[None, :]) % vocab
        out.append(digits.reshape(vocab, rules, branching).astype(np.int64))
    return Grammar(levels, vocab, rules, branching, tuple(out))


def node_priors(g: Grammar) -> list[np.ndarray]:
    """``priors[l]`` (s ** (L - l), v): the marginal distribution of each level-l node of a unit
    under the full grammar (root uniform), l = 0..L."""
    v, m, s = g.vocab, g.rules_per_symbol, g.branching
    priors = [np.zeros(0)] * (g.levels + 1)
    priors[g.levels] = np.full((1, v), 1.0 / v)
    for lev in range(g.levels, 0, -1):
        parent = priors[lev]
        child = np.zeros((parent.shape[0], s, v))
        for j in range(s):
            onehot = np.zeros((v, m, v))
            np.put_along_axis(onehot, g.rules[lev - 1][:, :, j : j + 1], 1.0, axis=2)
            child[:, j] = parent @ (onehot.sum(1) / m)
        priors[lev - 1] = child.reshape(-1, v)
    return priors


FILTER_RULES = ("marginal", "garnier_brun")


def node_given_root(g: Grammar, level: int) -> np.ndarray:
    """(v, s ** (L - level), v): P(level-``level`` node i = a | root = r) under the grammar, by
    passing each root symbol down through the rule averages."""
    v, m, s = g.vocab, g.rules_per_symbol, g.branching
    dist = np.eye(v)[:, None, :]  # (root, node, symbol) at level L
    for lev in range(g.levels, level, -1):
        child = np.zeros((v, dist.shape[1], s, v))
        for j in range(s):
            onehot = np.zeros((v, m, v))
            np.put_along_axis(onehot, g.rules[lev - 1][:, :, j : j + 1], 1.0, axis=2)
            child[:, :, j] = dist @ (onehot.sum(1) / m)
        dist = child.reshape(v, -1, v)
    return dist


def _check_rule(rule: str) -> None:
    if rule not in FILTER_RULES:
        raise GrammarError(f"unknown filter rule {rule!r}; choose {', '.join(FILTER_RULES)}")


def _draw(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One symbol per row of the distributions ``p`` (..., v), by inverse CDF."""
    cum = np.cumsum(p, axis=-1)
    u = rng.random(p.shape[:-1])
    return np.minimum((u[..., None] > cum).sum(-1), p.shape[-1] - 1).astype(np.int64)


def sample_units(
    g: Grammar,
    n: int,
    rng: np.random.Generator,
    filter_level: int | None = None,
    rule: str = "marginal",
) -> list[np.ndarray]:
    """``n`` units of the (level-k filtered) language: ``latents[l]`` (n, s ** (L - l)) the
    symbols of level l (level 0: the tokens); levels above the filter level are -1 (they do not
    exist in the filtered language; under the Garnier-Brun rule the root is drawn but not kept,
    since the level-k nodes are not its grammatical children)."""
    _check_rule(rule)
    k = g.levels if filter_level is None else filter_level
    latents = [np.zeros(0, dtype=np.int64)] * (g.levels + 1)
    for lev in range(g.levels, k, -1):
        latents[lev] = np.full((n, g.branching ** (g.levels - lev)), -1, dtype=np.int64)
    if rule == "garnier_brun" and k < g.levels:
        root = rng.integers(0, g.vocab, size=n)
        latents[k] = _draw(node_given_root(g, k)[root], rng)
    else:
        prior = node_priors(g)[k]
        cum = np.cumsum(prior, axis=1)
        u = rng.random((n, prior.shape[0]))
        top = (u[:, :, None] > cum[None, :, :]).sum(-1)
        latents[k] = np.minimum(top, g.vocab - 1).astype(np.int64)
    for lev in range(k, 0, -1):
        parent = latents[lev]
        choice = rng.integers(0, g.rules_per_symbol, size=parent.shape)
        latents[lev - 1] = g.rules[lev - 1][parent, choice].reshape(
            n, parent.shape[1] * g.branching
        )
    return latents


def position_levels(g: Grammar) -> np.ndarray:
    """(s ** L,) int64: the level the prediction of each leaf of a unit needs (module docstring):
    0 for the first leaf, else the level of the lowest common ancestor of leaves j - 1 and j."""
    j = np.arange(g.leaves)
    out = np.zeros(g.leaves, dtype=np.int64)
    for lev in range(1, g.levels + 1):
        out[(j > 0) & (out == 0) & ((j // g.branching**lev) == ((j - 1) // g.branching**lev))] = lev
    return out


def _inside(g: Grammar, leaves: np.ndarray) -> list[np.ndarray]:
    """Normalised inside messages of fully observed subtrees: ``beta[l]`` (n, s ** (L - l), v),
    proportional to P(the leaves below the node | the node's symbol)."""
    v, m, s = g.vocab, g.rules_per_symbol, g.branching
    n = leaves.shape[0]
    beta = [np.eye(v)[leaves]]
    for lev in range(1, g.levels + 1):
        kids = beta[-1].reshape(n, -1, s, v)
        prod = np.ones((n, kids.shape[1], v, m))
        for j in range(s):
            prod *= kids[:, :, j][:, :, g.rules[lev - 1][:, :, j]]
        b = prod.sum(-1)
        beta.append(b / np.maximum(b.sum(-1, keepdims=True), 1e-300))
    return beta


def bayes_predictive(
    g: Grammar, leaves: np.ndarray, level: int, rule: str = "marginal"
) -> np.ndarray:
    """(n, s ** L, v) float64: ``q_level(x_j | x_<j)`` for every leaf j of every unit in ``leaves``
    (n, s ** L): the level-``level`` filtered language's exact next-token distribution (module
    docstring), by belief propagation from the leaf's level-``level`` ancestor down to the leaf.
    The left siblings along the path are fully observed (their inside messages), the right ones
    unobserved (a message of ones). Under the Garnier-Brun ``rule`` the ancestor's prior is its
    distribution given the root, averaged over the root's posterior given the earlier blocks."""
    return bayes_predictive_levels(g, leaves, [level], rule)[0]


def bayes_predictive_levels(
    g: Grammar, leaves: np.ndarray, levels: list[int], rule: str = "marginal"
) -> list[np.ndarray]:
    """:func:`bayes_predictive` at each of ``levels``, sharing the inside messages and node
    priors (they do not depend on the level)."""
    _check_rule(rule)
    bad = [k for k in levels if not 0 <= k <= g.levels]
    if bad:
        raise GrammarError(f"a level must lie in 0..{g.levels}, got {bad[0]}")
    beta = _inside(g, leaves)
    priors = node_priors(g)
    out = []
    for k in levels:
        block_prior = _root_informed_priors(g, beta, k) if rule == "garnier_brun" else None
        out.append(_predict_level(g, beta, priors, k, block_prior))
    return out


def _root_informed_priors(g: Grammar, beta: list[np.ndarray], level: int) -> np.ndarray:
    """(n, s ** (L - level), v): the prior of each level-``level`` node of the Garnier-Brun
    filtered language given the blocks before it: sum_r P(node = a | r) P(r | earlier blocks),
    with P(r | earlier blocks) proportional to prod_{b' < b} sum_a P(a | r) beta_b'(a) (the
    root uniform; the inside messages' normalisations cancel over r)."""
    cond = node_given_root(g, level)  # (v_root, B, v)
    evidence = np.einsum("rbv,nbv->nrb", cond, beta[level])  # P(block b | r), up to a factor
    n, v, B = evidence.shape
    post = np.full((n, v), 1.0 / v)
    out = np.empty((n, B, g.vocab))
    for b in range(B):
        out[:, b] = post @ cond[:, b]
        post = post * evidence[:, :, b]
        post = post / np.maximum(post.sum(-1, keepdims=True), 1e-300)
    return out


def _predict_level(
    g: Grammar,
    beta: list[np.ndarray],
    priors: list[np.ndarray],
    level: int,
    block_prior: np.ndarray | None = None,
) -> np.ndarray:
    """The message passing of :func:`bayes_predictive` from given inside messages and priors
    (``block_prior``: per-unit priors of the level's nodes, instead of their marginals)."""
    v, m, s = g.vocab, g.rules_per_symbol, g.branching
    n = beta[0].shape[0]
    out = np.empty((n, g.leaves, v))
    for j in range(g.leaves):
        node = j // s**level
        if block_prior is None:
            mu = np.broadcast_to(priors[level][node], (n, v)).copy()
        else:
            mu = block_prior[:, node].copy()
        for lev in range(level, 0, -1):
            slot = (j // s ** (lev - 1)) % s
            child = node * s + slot
            w = np.broadcast_to(mu[:, :, None] / m, (n, v, m)).copy()
            for jj in range(slot):
                w *= beta[lev - 1][:, node * s + jj][:, g.rules[lev - 1][:, :, jj]]
            msg = np.zeros((n, v))
            np.add.at(msg.T, g.rules[lev - 1][:, :, slot].reshape(-1), w.reshape(n, -1).T)
            mu = msg / np.maximum(msg.sum(-1, keepdims=True), 1e-300)
            node = child
        out[:, j] = mu
    return out


# ---------------------------------------------------------------------------------------------
# the sequence task


@dataclass(frozen=True)
class Layout:
    """Where a unit's leaves sit in a sequence: ``leaf[t]`` the leaf index within its unit of
    token position t (-1 for ``<bos>`` and ``<sep>``), ``unit[t]`` its unit (-1 likewise),
    ``need[t]`` the level the prediction of token t needs (-1: ``<sep>``, fixed by the position;
    -2: ``<bos>``, never predicted)."""

    leaf: np.ndarray
    unit: np.ndarray
    need: np.ndarray

    @property
    def length(self) -> int:
        return len(self.leaf)


def layout(g: Grammar, units: int, boundary: bool) -> Layout:
    """The positions of a sequence of ``units`` units (module docstring)."""
    leaf, unit, need = [-1], [-1], [-2]
    lev = position_levels(g)
    for u in range(units):
        if boundary and u:
            leaf.append(-1)
            unit.append(-1)
            need.append(-1)
        leaf += list(range(g.leaves))
        unit += [u] * g.leaves
        need += lev.tolist()
    return Layout(np.array(leaf), np.array(unit), np.array(need))


def _unit_tree(start: int, g: Grammar) -> Tree:
    """The gold parse of a unit whose first leaf sits at sequence position ``start``."""

    def build(lev: int, first: int) -> Tree:
        if lev == 0:
            return start + first
        width = g.branching ** (lev - 1)
        return tuple(build(lev - 1, first + c * width) for c in range(g.branching))

    return build(g.levels, 0)


def token_offset(boundary: bool) -> int:
    """Id of the first leaf token: after ``<pad>``, ``<bos>`` (and ``<sep>``)."""
    return 3 if boundary else 2


def sequences_from_units(units_leaves: np.ndarray, lay: Layout, boundary: bool) -> np.ndarray:
    """(n, T) token ids from (n, units, s ** L) leaf symbols."""
    n = units_leaves.shape[0]
    tokens = np.full((n, lay.length), 2 if boundary else 0, dtype=np.int64)
    tokens[:, 0] = 1
    real = lay.leaf >= 0
    tokens[:, real] = units_leaves[:, lay.unit[real], lay.leaf[real]] + token_offset(boundary)
    return tokens


def tree_language_task(
    levels: int,
    vocab: int,
    rules: int,
    branching: int,
    filter_level: int,
    units: int,
    boundary: bool,
    n_train: int,
    n_dev: int,
    n_test: int,
    n_gen: int,
    seed: int,
    filter_rule: str = "marginal",
) -> SequenceDataset:
    """A tree-language dataset: ``train``, ``dev`` and ``test`` from the level-``filter_level``
    filtered language under ``filter_rule`` (``filter_level = levels``: the full grammar), each
    sequence drawn
    independently (a test sequence may also occur in training: ``info['test_seen']`` is the
    share that does); ``gen`` from the full grammar. The grammar is seeded by ``seed`` alone,
    the samples by (seed, split). ``info`` holds the grammar, the layout, each split's latent
    symbols (``latents[split][l]`` (n, units, s ** (L - l))) and the settings."""
    if not 0 <= filter_level <= levels:
        raise GrammarError(
            f"task.tree_filter must lie in 0..{levels} (the levels), got {filter_level}"
        )
    _check_rule(filter_rule)
    g = make_grammar(levels, vocab, rules, branching, seed)
    lay = layout(g, units, boundary)
    words = [PAD, BOS] + ([SEP] if boundary else []) + [f"t{i}" for i in range(vocab)]
    splits: dict[str, SequenceSplit] = {}
    latents: dict[str, list[np.ndarray]] = {}
    sizes = {"train": n_train, "dev": n_dev, "test": n_test, "gen": n_gen}
    for index, (name, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, index, 6101])
        k = levels if name == "gen" else filter_level
        lat = sample_units(g, n * units, rng, k, filter_rule)
        latents[name] = [a.reshape(n, units, a.shape[1]) for a in lat]
        tokens = sequences_from_units(latents[name][0], lay, boundary)
        splits[name] = _split(tokens, lay, g)
    seen = {row.tobytes() for row in _rows(splits["train"])}
    test_rows = _rows(splits["test"])
    share = float(np.mean([r.tobytes() in seen for r in test_rows])) if len(test_rows) else 0.0
    info = {
        "grammar": g,
        "layout": lay,
        "latents": latents,
        "filter_level": filter_level,
        "filter_rule": filter_rule,
        "units": units,
        "boundary": boundary,
        "test_seen": share,
        "token_offset": token_offset(boundary),
    }
    return SequenceDataset("tree_language", tuple(words), splits, info)


def _rows(split: SequenceSplit) -> np.ndarray:
    return split.tokens.reshape(len(split), -1) if len(split) else np.zeros((0, 0), np.int64)


def _split(tokens: np.ndarray, lay: Layout, g: Grammar) -> SequenceSplit:
    n, width = tokens.shape
    starts = [t for t in range(lay.length) if lay.leaf[t] == 0]
    tree: Tree = (
        tuple(_unit_tree(t, g) for t in starts) if len(starts) > 1 else _unit_tree(starts[0], g)
    )
    return SequenceSplit(
        tokens=tokens.reshape(-1).copy(),
        offsets=np.arange(n + 1, dtype=np.int64) * width,
        answer_start=np.ones(n, dtype=np.int64),
        target=np.full(n, -1, dtype=np.int64),
        sentence_len=np.full(n, width, dtype=np.int64),
        trees=(tree,) * n,
    )


def reference_bytes(ds_sizes: int, g: Grammar, lay: Layout, d_vocab: int) -> int:
    """Bytes the exact references of ``ds_sizes`` sequences take (all levels, float64)."""
    return (g.levels + 1) * ds_sizes * lay.length * d_vocab * 8


def level_references(ds: SequenceDataset, tokens: np.ndarray, top: int | None = None) -> np.ndarray:
    """(L + 1, n, T - 1, V) float64: for sequences ``tokens`` (n, T) of the dataset's layout, the
    level-k exact distribution of the token at t + 1 (what the model's output at position t
    predicts), over the whole vocabulary, for k = 0..``top`` (default L); NaN above ``top``
    (filtered data: the higher levels' predictors assume correlations the data lack, and may
    give an observed sequence probability 0). Every level's reference follows the dataset's
    filter rule (``info['filter_rule']``): q_k is the level-k filtered language's conditional.
    ``<sep>`` positions are certain at every level (the layout fixes them)."""
    g: Grammar = ds.info["grammar"]
    lay: Layout = ds.info["layout"]
    off = ds.info["token_offset"]
    n = tokens.shape[0]
    need = reference_bytes(n, g, lay, ds.d_vocab)
    if need > MAX_REFERENCE_BYTES:
        raise GrammarError(
            f"the exact references of {n} sequences would take {need / 2**30:.1f} GiB "
            f"(limit {MAX_REFERENCE_BYTES / 2**30:.0f} GiB): lower task.n_test / task.n_gen, "
            "task.tree_vocab or task.tree_levels"
        )
    units = ds.info["units"]
    real = lay.leaf >= 0
    leaves = np.zeros((n, units, g.leaves), dtype=np.int64)
    leaves[:, lay.unit[real], lay.leaf[real]] = tokens[:, real] - off
    out = np.zeros((g.levels + 1, n, lay.length - 1, ds.d_vocab))
    sep = np.flatnonzero(lay.leaf[1:] < 0)
    out[:, :, sep, 2] = 1.0
    pos = np.flatnonzero(real[1:])
    top = g.levels if top is None else top
    out[top + 1 :] = np.nan
    rule = ds.info.get("filter_rule", "marginal")
    per_level = bayes_predictive_levels(
        g, leaves.reshape(n * units, -1), list(range(top + 1)), rule
    )
    for k, q in enumerate(per_level):
        q = q.reshape(n, units, g.leaves, -1)
        out[k][:, pos, off:] = q[:, lay.unit[pos + 1], lay.leaf[pos + 1]]
    return out


def perturb(
    g: Grammar, latents: list[np.ndarray], level: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], int] | None:
    """One unit's latents (``latents[l]`` (s ** (L - l),)) with the symbol of one level-``level``
    node swapped for another and everything below it regenerated: the node (its position) is
    drawn at random among those where a swap keeps the unit grammatical. Rules are disjoint, so a
    changed tuple belongs to at most one parent symbol; the ancestors change to the symbols whose
    rules produce the new tuples, up to the root (free). Returns the new latents and the node's
    index, or None when no node of that level can be swapped."""
    s, L = g.branching, g.levels
    nodes = rng.permutation(s ** (L - level))
    for node in nodes:
        for sym in rng.permutation(g.vocab):
            if sym == latents[level][node]:
                continue
            new = [a.copy() for a in latents]
            new[level][node] = sym
            if _fix_ancestors(g, new, level, int(node)):
                for lev in range(level, 0, -1):
                    width = s ** (level - lev)
                    first = node * width
                    parents = new[lev][first : first + width]
                    choice = rng.integers(0, g.rules_per_symbol, size=width)
                    kids = g.rules[lev - 1][parents, choice].reshape(-1)
                    new[lev - 1][first * s : (first + width) * s] = kids
                return new, int(node)
    return None


def _fix_ancestors(g: Grammar, latents: list[np.ndarray], level: int, node: int) -> bool:
    """Change the ancestors of a changed node to the symbols whose rules produce their children;
    False when some tuple is no rule at all."""
    s = g.branching
    for lev in range(level + 1, g.levels + 1):
        node //= s
        kids = tuple(latents[lev - 1][node * s : (node + 1) * s])
        hit = np.flatnonzero((g.rules[lev - 1] == np.array(kids)).all(-1).any(-1))
        if len(hit) == 0:
            return False
        latents[lev][node] = int(hit[0])
    return True
