"""Tree projections (Murty et al., ICLR 2023): planted trees are recovered, bag-of-words and
random encoders score 0, the exact random-tree baseline matches sampling and enumeration, F1
matches hand counts, and the batched O(n)-runs chart equals the naive one-run-per-span chart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokscope.measures.tree_projection import (
    bracketing_f1,
    induce_tree,
    random_tree_score,
    random_tree_scores,
    random_tree_table,
    sci_charts,
    span_score,
    tree_projection,
    tree_score,
    tree_scores,
)
from grokscope.tasks.sequence import tree_spans

# token ids of sentence s are s * STRIDE + word + 1: the encoders below read the sentence from
# the first token of a row (a token the whole row may see, so they stay causal)
STRIDE = 100


def random_tree(rng: np.random.Generator, i: int, j: int):
    """A random binary tree over words i..j (top-down uniform splits)."""
    if i == j:
        return i
    k = int(rng.integers(i, j))
    return (random_tree(rng, i, k), random_tree(rng, k + 1, j))


def sentence_ids(s: int, n: int) -> np.ndarray:
    return s * STRIDE + 1 + np.arange(n, dtype=np.int64)


def planted_alpha(tree, n: int) -> np.ndarray:
    """alpha[i, k]: how much of word k's contextual state survives when the run starts at i.

    Let d(i, k) = number of gold nodes containing k that start before i (the constituents of k
    the masked run cannot see the start of). If some gold node containing k starts exactly at i,
    alpha = 1 - d(i, k) / (4 n^2); otherwise alpha = 0 (the state is replaced by junk).

    Why greedy induction recovers the tree: with orthonormal directions (see
    :func:`planted_encoder`), SCI(i, j) = mean_{k=i..j} alpha[i, k]. At a gold node C = (i, j)
    with children L = (i, m), R = (m + 1, j) and A ancestors:
    * the left term SCI(i, k) is the same for every k (all of C's words have i as a node start
      and the same d: the ancestors of C that start before i), so only the right term decides;
    * SCI(R) = 1 - (A + 1) / (4 n^2): every word of R sees R start, d = C plus its ancestors;
    * a suffix (s, j) with s inside R also has R among the unseen nodes: every word has alpha
      = 0 or alpha <= 1 - (A + 2) / (4 n^2), strictly less;
    * a suffix (s, j) with s inside L (s > i) crosses L / R: no node starts at s and contains a
      word of R, so those words have alpha = 0, and the rest are below SCI(R) as above.
    So the gold split wins by a margin >= 1 / (4 n^3) >> rounding. The depth penalty is needed:
    a causal model's span starting at i shares all states with every longer span starting at
    i, so with *exactly* context-free constituents R and its right-branching descendants would
    tie, and only the tie-break (smallest k) would pick R. Junk states (alpha = 0) make every
    crossing span far less context-free than the gold ones, hence a clearly positive score.
    """
    spans = tree_spans(tree)
    alpha = np.zeros((n, n))
    for i in range(n):
        for k in range(i, n):
            d = sum(1 for a, b in spans if a < i and a <= k <= b)
            if any(a == i and a <= k <= b for a, b in spans):
                alpha[i, k] = 1.0 - d / (4 * n * n)
    assert np.all(alpha[0] == 1.0)  # the unmasked run is the contextual one
    return alpha


def planted_encoder(trees, ns, seed: int = 0):
    """Causal oracle encoder: the state of word k in a run starting at i is
    alpha[i, k] e_k + sqrt(1 - alpha[i, k]^2) g_(i, k), with e_k, g_(i, k) orthonormal (rows of
    a random orthogonal matrix). It depends only on the sentence (first token of the row) and
    the original position ids i and k, so it respects the causal contract."""
    nmax = max(ns)
    dim = nmax + nmax * nmax
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    basis = torch.from_numpy(q)
    alphas = [torch.from_numpy(planted_alpha(t, n)) for t, n in zip(trees, ns, strict=True)]

    def encode(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*tokens.shape, dim, dtype=torch.float64)
        for b in range(tokens.shape[0]):
            s = int(tokens[b, 0]) // STRIDE
            i = int(positions[b, 0])
            ks = positions[b][tokens[b] != 0]
            a = alphas[s][i, ks][:, None]
            out[b, : len(ks)] = a * basis[ks] + (1 - a * a).sqrt() * basis[nmax + i * nmax + ks]
        return out

    return encode


def test_planted_trees_recovered():
    rng = np.random.default_rng(0)
    ns = [int(n) for n in rng.integers(3, 13, size=80)] + list(range(3, 13))
    trees = [random_tree(rng, 0, n - 1) for n in ns]
    sentences = [sentence_ids(s, n) for s, n in enumerate(ns)]
    res = tree_projection(planted_encoder(trees, ns), sentences, trees)
    assert res["trees"] == trees
    assert res["f1"] == 1.0 and res["sentence_f1"] == 1.0
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    assert res["n_sentences"] == len(ns)
    # the gold spans are far more context-free than a random tree's; a sentence can lose only
    # the tiny depth penalty (right-branching gold: every span (i, j) is a prefix of the
    # constituent (i, n - 1), so nothing is crossing and the penalty, < 1/8, decides)
    assert res["random_tree_score"] > 1.0
    assert res["random_tree_scores"].min() > -1 / 8
    assert np.mean(res["random_tree_scores"] > 0) > 0.9
    assert res["tree_score"] > 0.5 and res["tree_scores"].min() >= 0
    # caveat of causal models: every span starting at word 0 has SCI = 1 exactly (its masked
    # run is the unmasked run), so the left-branching tree has the largest score(T) of all
    # binary trees, the planted one included
    for chart, tree in zip(res["charts"], trees, strict=True):
        n = chart.shape[0]
        np.testing.assert_allclose(chart[0], 1.0, atol=1e-12)
        left = 0
        for k in range(1, n):
            left = (left, k)
        assert random_tree_score(chart, left) >= random_tree_score(chart, tree) - 1e-12


def test_bag_of_words_scores_zero():
    rng = np.random.default_rng(1)
    emb = torch.from_numpy(rng.standard_normal((STRIDE * 40, 16))).float()

    def encode(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return emb[tokens]

    sentences = [sentence_ids(s, int(n)) for s, n in enumerate(rng.integers(1, 15, size=40))]
    res = tree_projection(encode, sentences)
    for c in res["charts"]:
        iu = np.triu_indices(c.shape[0])
        np.testing.assert_allclose(c[iu], 1.0, atol=1e-12)
        assert np.isnan(c[np.tril_indices(c.shape[0], -1)]).all()
    assert np.abs(res["tree_scores"]).max() < 1e-12
    assert abs(res["tree_score"]) < 1e-12
    assert np.abs(res["random_tree_scores"]).max() < 1e-12


def test_fully_contextual_random_encoder_scores_near_zero():
    """States that are fresh random vectors for every (start, word): SCI of spans not starting
    at 0 is noise of size ~ 1 / sqrt(d), the greedy split is a uniform random split, and the
    score is near 0 (a small positive bias from picking noise maxima)."""
    dim = 1024

    def encode(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*tokens.shape, dim, dtype=torch.float64)
        for b in range(tokens.shape[0]):
            s, i = int(tokens[b, 0]) // STRIDE, int(positions[b, 0])
            for t in range(tokens.shape[1]):
                g = np.random.default_rng([7, s, i, int(positions[b, t])])
                out[b, t] = torch.from_numpy(g.standard_normal(dim))
        return out

    rng = np.random.default_rng(2)
    sentences = [sentence_ids(s, int(n)) for s, n in enumerate(rng.integers(3, 13, size=300))]
    res = tree_projection(encode, sentences)
    scores = res["random_tree_scores"]
    assert (res["tree_scores"] >= 0).all()  # the paper's score: best split >= mean split
    # per sentence the score is dominated by how many left-spine spans (SCI = 1 exactly) the
    # random-looking induced tree happens to have, so it varies by ~1; the mean is near 0
    se = scores.std(ddof=1) / np.sqrt(len(scores))
    assert se < 0.1
    assert abs(scores.mean()) < 4 * se


def brute_force_expectation(chart: np.ndarray) -> float:
    """E[score] over every binary tree, weighted by its top-down uniform-split probability."""

    def trees(i: int, j: int):
        if i == j:
            yield i, 1.0
            return
        for k in range(i, j):
            for (lt, lp), (rt, rp) in itertools.product(trees(i, k), trees(k + 1, j)):
                yield (lt, rt), lp * rp / (j - i)

    n = chart.shape[0]
    pairs = list(trees(0, n - 1))
    assert abs(sum(p for _, p in pairs) - 1.0) < 1e-12
    return sum(p * span_score(chart, t) for t, p in pairs)


def random_chart(rng: np.random.Generator, n: int) -> np.ndarray:
    chart = np.triu(rng.uniform(-1, 1, (n, n)))
    chart[np.tril_indices(n, -1)] = np.nan
    return chart


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_random_tree_expectation_matches_enumeration(n):
    chart = random_chart(np.random.default_rng(n), n)
    R = random_tree_table(chart)
    assert abs(R[0, n - 1] - brute_force_expectation(chart)) < 1e-12
    # every sub-span too
    for i in range(n):
        for j in range(i, n):
            assert abs(R[i, j] - brute_force_expectation(chart[i : j + 1, i : j + 1])) < 1e-12


def test_random_tree_expectation_matches_monte_carlo():
    rng = np.random.default_rng(3)
    n = 9
    chart = random_chart(rng, n)
    samples = np.array([span_score(chart, random_tree(rng, 0, n - 1)) for _ in range(20000)])
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert se > 0
    assert abs(samples.mean() - random_tree_table(chart)[0, n - 1]) < 4 * se


def test_tree_score_definition():
    rng = np.random.default_rng(4)
    chart = random_chart(rng, 7)
    tree = induce_tree(chart)
    spans = tree_spans(tree) - {(0, 6)}
    expected = sum(chart[a, b] for a, b in spans) - random_tree_table(chart)[0, 6]
    assert abs(random_tree_score(chart) - expected) < 1e-12
    assert random_tree_scores([chart, chart[:1, :1]]).tolist() == [random_tree_score(chart), 0.0]
    # the paper's score, by a plain loop: at each internal node, chosen split minus mean split
    want = 0.0
    for a, b in spans | {(0, 6)}:
        if b - a >= 2:
            vals = [chart[a, k] + chart[k + 1, b] for k in range(a, b)]
            want += max(vals) - sum(vals) / len(vals)
    assert abs(tree_score(chart) - want) < 1e-12
    assert tree_scores([chart, chart[:1, :1]]).tolist() == [tree_score(chart), 0.0]
    # the greedy split at the root is the argmax of SCI(0, k) + SCI(k + 1, 6)
    k = int(np.argmax([chart[0, k] + chart[k + 1, 6] for k in range(6)]))
    assert max(b for a, b in tree_spans(tree[0])) == k


def test_edge_cases():
    one = np.array([[1.0]])
    assert induce_tree(one) == 0 and tree_score(one) == 0.0 and random_tree_score(one) == 0.0
    # ties: the smallest k, so a flat chart gives the right-branching tree
    flat = np.triu(np.ones((4, 4)))
    assert induce_tree(flat) == (0, (1, (2, 3)))
    assert abs(tree_score(flat)) < 1e-12

    # zero vectors: both zero -> 1, one zero -> 0
    def zeros(tokens, positions):
        return torch.zeros(*tokens.shape, 3)

    def zero_when_masked(tokens, positions):
        keep = (positions[:, :1] == 0).to(torch.float32)
        return torch.ones(*tokens.shape, 3) * keep[:, :, None]

    sents = [np.array([1, 2, 3]), np.array([4])]
    for c in sci_charts(zeros, sents):
        assert np.all(c[np.triu_indices(len(c))] == 1.0)
    c = sci_charts(zero_when_masked, sents)[0]
    assert np.all(c[0] == 1.0) and np.all(c[1, 1:] == 0.0) and c[2, 2] == 0.0
    res = tree_projection(zeros, [np.array([5])], gold_trees=[0])
    assert res["trees"] == [0] and res["tree_score"] == 0.0 and res["n_sentences"] == 0
    assert np.isnan(res["f1"])


def test_bracketing_f1_hand_computed():
    right, left = (0, (1, (2, (3, 4)))), ((((0, 1), 2), 3), 4)
    res = bracketing_f1([right], [right])
    assert res["f1"] == res["precision"] == res["recall"] == res["sentence_f1"] == 1.0
    # right-branching brackets all end at 4 and start after 0, left-branching ones start at 0
    assert bracketing_f1([right], [left])["f1"] == 0.0
    # gold {(0,1), (2,4), (3,4)} vs right-branching {(1,4), (2,4), (3,4)}: 2 of 3
    gold = ((0, 1), (2, (3, 4)))
    res = bracketing_f1([right], [gold])
    assert res["f1"] == pytest.approx(2 / 3) and res["precision"] == pytest.approx(2 / 3)
    # corpus counts vs sentence mean: + an identical 3-word sentence (1 of 1), + a 2-word one
    # (skipped), + flat gold (no brackets) against a binary tree (0 of 2)
    res = bracketing_f1(
        [right, ((0, 1), 2), (0, 1), ((0, 1), (2, 3))], [gold, ((0, 1), 2), (0, 1), (0, 1, 2, 3)]
    )
    assert res["n_sentences"] == 3
    assert res["precision"] == pytest.approx(3 / 6)  # 2 + 1 + 0 hits of 3 + 1 + 2 predicted
    assert res["recall"] == pytest.approx(3 / 4)  # of 3 + 1 + 0 gold
    assert res["f1"] == pytest.approx(2 * 3 / (6 + 4))
    assert res["sentence_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        bracketing_f1([right], [(0, (1, 2))])


class TinyCausalLM(torch.nn.Module):
    """Two pre-LN causal attention + MLP layers, learned positions, float64."""

    def __init__(self, vocab: int = 4000, d: int = 16, heads: int = 2, layers: int = 2):
        super().__init__()
        self.heads = heads
        self.emb = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(32, d)
        self.ln = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(2 * layers))
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(d, 3 * d) for _ in range(layers))
        self.out = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(layers))
        self.mlp = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)
            )
            for _ in range(layers)
        )
        self.double()

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens) + self.pos(positions)
        B, T, d = x.shape
        for l, (qkv, out, mlp) in enumerate(zip(self.qkv, self.out, self.mlp, strict=True)):
            q, k, v = qkv(self.ln[2 * l](x)).view(B, T, 3, self.heads, -1).unbind(2)
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            x = x + out(z.transpose(1, 2).reshape(B, T, d))
            x = x + mlp(self.ln[2 * l + 1](x))
        return x


def naive_chart(model: TinyCausalLM, sentence: np.ndarray) -> np.ndarray:
    """One run per span, on the span's tokens alone with their original positions."""
    n = len(sentence)
    tok = torch.from_numpy(sentence)[None]
    with torch.no_grad():
        full = model(tok, torch.arange(n)[None])[0].numpy()
        chart = np.full((n, n), np.nan)
        for i in range(n):
            for j in range(i, n):
                cf = model(tok[:, i : j + 1], torch.arange(i, j + 1)[None])[0].numpy().sum(0)
                ctx = full[i : j + 1].sum(0)
                chart[i, j] = cf @ ctx / np.linalg.norm(cf) / np.linalg.norm(ctx)
    return chart


@pytest.mark.equality
@pytest.mark.parametrize("batch_tokens", [20, 16384])
def test_batched_equals_naive(batch_tokens):
    torch.manual_seed(0)
    model = TinyCausalLM().eval()
    calls = []

    def encode(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        calls.append(tokens.shape)
        assert tokens.dtype == positions.dtype == torch.int64
        return model(tokens, positions)

    ns = [1, 2, 9, 5, 9, 3, 7, 1, 6]
    sentences = [sentence_ids(s, n) for s, n in enumerate(ns)]
    charts = sci_charts(encode, sentences, batch_tokens=batch_tokens)
    for sent, chart in zip(sentences, charts, strict=True):
        ref = naive_chart(model, sent)
        np.testing.assert_allclose(chart, ref, rtol=0, atol=1e-10)
    assert all(b * t <= batch_tokens for b, t in calls)
    assert sum(b * t for b, t in calls) == sum(n * (n + 1) // 2 for n in ns)
    if batch_tokens > 1000:
        assert len(calls) == max(ns)  # one call per row length


def test_f1_under_both_conventions():
    """Counting the whole-sentence span (the released code's convention) adds one span every
    tree gets right: a tree with no correct inner span scores 0 by the standard convention and
    2 / (|P| + |G| + 2) with the sentence counted."""
    from grokscope.measures.tree_projection import bracketing_f1

    gold = [((0, 1), (2, 3))]  # inner spans (0,1), (2,3)
    right = [(0, ((1, 2), 3))]  # inner spans (1,3), (1,2): none right
    std = bracketing_f1(right, gold)
    paper = bracketing_f1(right, gold, whole_sentence=True)
    assert std["f1"] == 0.0
    assert paper["f1"] == pytest.approx(2 * 1 / (3 + 3))
    same = bracketing_f1(gold, gold, whole_sentence=True)
    assert same["f1"] == 1.0 and bracketing_f1(gold, gold)["f1"] == 1.0
