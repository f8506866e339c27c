"""Tree projections of a causal language model (Murty, Sharma, Andreas & Manning, ICLR 2023,
"Characterizing intrinsic compositionality in transformers with tree projections").

For a sentence of n words and a span (i, j) (inclusive):

* the **context-free vector** is the model run on the span alone (attention masked to the span
  in every layer), its last-layer states summed over the span;
* the **contextual vector** is the sum of the same positions' states from the unmasked run;
* **SCI(i, j)** is the cosine similarity of the two. We report similarity (the paper uses the
  cosine *distance*): higher means more context-free.

The **induced tree** splits every span (i, j) top-down at the k maximising
SCI(i, k) + SCI(k + 1, j) (ties: the smallest k). It is compared with random trees (the
**tree score**) and with gold parses (unlabelled **bracketing F1**).

Causal models make the charts cheap. Position k attends only to positions <= k, so the state
of word k in a run masked to a span starting at i depends on (i, k) only, never on the span's
end j. One run on words i..n-1 (keeping their original position ids i..n-1) therefore gives
h(i, k) for every k >= i, and the context-free vector of every span starting at i is a
cumulative sum: CF(i, j) = sum_{k=i..j} h(i, k). The unmasked run is the run with i = 0, so the
contextual vector is CTX(i, j) = sum_{k=i..j} h(0, k). A sentence costs n runs (n (n + 1) / 2
tokens) instead of one run per span (O(n^2) runs, O(n^3) tokens). A consequence worth knowing:
every span starting at word 0 has SCI = 1 (its masked run *is* the unmasked run), and every
prefix of a context-free span is context-free.

Conventions (documented choices):

* Cumulative sums and cosines are float64 (states may come in float32).
* A cosine with a zero vector is undefined: SCI = 1 when both vectors are exactly zero (the
  context changed nothing), 0 when exactly one is. Cosines are clipped to [-1, 1].
* Tree score (Murty et al.'s definition, as in their released code): at every internal node
  (i, j) of the induced tree, the best split value max_k [SCI(i, k) + SCI(k+1, j)] minus the
  value of a random split, whose expectation mean_k [...] we take exactly instead of sampling;
  summed over the nodes, averaged over sentences. It is never negative (a maximum is at least
  the mean), so even a model with no structure scores above 0: compare it across models and
  checkpoints, not with 0.
* The stricter variant (:func:`random_tree_score`, exact, no sampling): score(T) = sum over the
  non-root nodes of T of SCI(node); R(i, j) = expected score of a random binary tree over (i, j)
  drawn by splitting top-down at a uniformly random point, by dynamic programming:
  R(i, i) = 0 and R(i, j) = mean_{k=i..j-1} [SCI(i, k) + SCI(k+1, j) + R(i, k) + R(k+1, j)];
  variant = score(T_induced) - R(0, n - 1); leaves are in every binary tree, so they cancel.
  It is near 0 for a model whose spans are no more context-free than chance, and can be
  negative. A one-word sentence scores 0 in both.
* Bracketing F1: unlabelled, over spans of length >= 2 other than the whole sentence (single
  words and the root are in every tree). Sentence F1 = 2 |P & G| / (|P| + |G|); sentences with
  no such span in either tree (every sentence of <= 2 words) are skipped. Corpus precision,
  recall and F1 come from counts summed over sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from grokscope.tasks.sequence import Tree, tree_spans

# encode(tokens (B, T) int64, positions (B, T) int64) -> last-layer states (B, T, d)
Encoder = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# sentences per chunk are limited to this many batches' worth of tokens, which bounds the
# memory held for the unmasked runs' states
_CHUNK_BATCHES = 64


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last axis (float64), with the zero-vector convention above."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    dot = (a * b).sum(-1)
    cos = (dot / torch.where(na > 0, na, 1.0) / torch.where(nb > 0, nb, 1.0)).clamp(-1.0, 1.0)
    one_zero = (na == 0) != (nb == 0)
    both_zero = (na == 0) & (nb == 0)
    return torch.where(both_zero, 1.0, torch.where(one_zero, 0.0, cos))


def _chunks(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive groups of sentence indices whose runs hold at most ``budget`` tokens."""
    out, start, used = [], 0, 0
    for s, n in enumerate(lengths):
        cost = int(n) * (int(n) + 1) // 2
        if s > start and used + cost > budget:
            out.append(np.arange(start, s))
            start, used = s, 0
        used += cost
    if start < len(lengths):
        out.append(np.arange(start, len(lengths)))
    return out


def _chunk_charts(
    encode: Encoder, sentences: list[np.ndarray], batch_tokens: int
) -> list[np.ndarray]:
    """The SCI charts of a few sentences (see :func:`sci_charts`)."""
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(sentences).astype(np.int64) if len(sentences) else np.zeros(0, np.int64)
    charts = [np.full((n, n), np.nan) for n in lengths]
    # one row per (sentence, start): words start..n-1. Rows are grouped by exact length, so no
    # call pads; longest first, so a sentence's unmasked run (start 0, its longest row) comes
    # before its masked runs, which need its states.
    rows_s = np.repeat(np.arange(len(sentences)), lengths)
    rows_i = np.arange(len(flat)) - offsets[rows_s]
    rows_len = lengths[rows_s] - rows_i
    order = np.lexsort((rows_i, rows_s, -rows_len))
    h0: torch.Tensor | None = None  # unmasked states of every word, (len(flat), d) float64
    done0 = np.zeros(len(sentences), dtype=bool)
    pos = 0
    while pos < len(order):
        width = int(rows_len[order[pos]])
        end = pos
        cap = max(1, batch_tokens // width)
        while end < len(order) and rows_len[order[end]] == width and end - pos < cap:
            end += 1
        rs, ri = rows_s[order[pos:end]], rows_i[order[pos:end]]
        pos = end
        word = offsets[rs, None] + ri[:, None] + np.arange(width)  # flat word index, (B, T)
        tokens = torch.from_numpy(flat[word])
        positions = torch.from_numpy(ri[:, None] + np.arange(width))
        states = encode(tokens, positions)
        if states.ndim != 3 or tuple(states.shape[:2]) != tuple(tokens.shape):
            raise ValueError(
                f"encode returned shape {tuple(states.shape)} for {tuple(tokens.shape)}"
            )
        states = states.to(torch.float64)
        if h0 is None:
            h0 = torch.zeros(len(flat), states.shape[-1], dtype=torch.float64, device=states.device)
        first = ri == 0
        if first.any():
            h0[torch.from_numpy(word[first]).to(h0.device)] = states[torch.from_numpy(first)]
            done0[rs[first]] = True
        if not done0[rs].all():  # cannot happen with the ordering above
            raise RuntimeError("masked run before the unmasked run")
        context = h0[torch.from_numpy(word).to(h0.device)]
        sci = _cosines(states.cumsum(1), context.cumsum(1)).cpu().numpy()
        for b in range(len(rs)):
            i = int(ri[b])
            charts[rs[b]][i, i : i + width] = sci[b]
    return charts


def sci_charts(
    encode: Encoder, sentences: Sequence[np.ndarray], batch_tokens: int = 16384
) -> list[np.ndarray]:
    """SCI(i, j) of every span of every sentence (Murty et al. 2023, section 3).

    ``encode(tokens, positions)`` returns the last-layer states (B, T, d) of a *causal* model;
    it receives int64 CPU tensors (moving them to the model's device is its job) whose rows may
    be right-padded (pad id 0; outputs there are ignored; rows here are never padded in
    practice). ``sentences``: int token ids of each sentence's words only. Every (sentence,
    start) pair is one row (words start..n-1 with their original position ids); rows of equal
    length are batched together, at most ``batch_tokens`` tokens per call.

    Returns one (n, n) float64 array per sentence: SCI(i, j) for i <= j, NaN below the diagonal.
    """
    if batch_tokens < 1:
        raise ValueError("batch_tokens must be positive")
    sentences = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sentences]
    if any(len(s) == 0 for s in sentences):
        raise ValueError("empty sentence")
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    charts: list[np.ndarray] = []
    with torch.no_grad():
        for idx in _chunks(lengths, _CHUNK_BATCHES * batch_tokens):
            charts.extend(_chunk_charts(encode, [sentences[s] for s in idx], batch_tokens))
    return charts


def induce_tree(chart: np.ndarray) -> Tree:
    """The greedy top-down tree projection (Murty et al. 2023): split (i, j) at the k that
    maximises SCI(i, k) + SCI(k + 1, j), the smallest such k on ties. Binary nested tuples of
    word positions, an int for a one-word sentence."""
    chart = np.asarray(chart, dtype=np.float64)

    def build(i: int, j: int) -> Tree:
        if i == j:
            return i
        ks = np.arange(i, j)
        k = i + int(np.argmax(chart[i, ks] + chart[ks + 1, j]))  # argmax: first maximum
        return (build(i, k), build(k + 1, j))

    return build(0, chart.shape[0] - 1)


def random_tree_table(chart: np.ndarray) -> np.ndarray:
    """R(i, j): the exact expected score (sum of SCI over non-root nodes) of a random binary
    tree over (i, j) split top-down at uniformly random points; (n, n) float64, NaN below the
    diagonal. R(i, i) = 0; R(i, j) = mean_k [SCI(i,k) + SCI(k+1,j) + R(i,k) + R(k+1,j)]."""
    chart = np.asarray(chart, dtype=np.float64)
    n = chart.shape[0]
    R = np.full((n, n), np.nan)
    R[np.arange(n), np.arange(n)] = 0.0
    value = chart + R  # SCI of a node plus the expected score of its subtree, once known
    for width in range(2, n + 1):
        i = np.arange(n - width + 1)[:, None]
        j = i + width - 1
        k = i + np.arange(width - 1)[None, :]
        diag = (value[i, k] + value[k + 1, j]).mean(axis=1)
        R[i[:, 0], j[:, 0]] = diag
        value[i[:, 0], j[:, 0]] = chart[i[:, 0], j[:, 0]] + diag
    return R


def span_score(chart: np.ndarray, tree: Tree) -> float:
    """score(T): the sum of SCI over the non-root nodes of ``tree`` (leaves included)."""
    spans = tree_spans(tree)
    root = (min(a for a, _ in spans), max(b for _, b in spans))
    return float(sum(chart[a, b] for a, b in spans if (a, b) != root))


def tree_score(chart: np.ndarray, tree: Tree | None = None) -> float:
    """Tree score of one sentence as Murty et al. (2023) define it: the sum over the internal
    nodes (i, j) of the induced tree (or ``tree``) of the best split value there minus the value
    of a random split of the same span, with the split value SCI(i, k) + SCI(k + 1, j) and the
    random split's expectation (the mean over k) computed exactly. Never negative for the induced
    tree (the best split is at least the mean), 0 when every split is worth the same (a bag of
    words) and for sentences of one or two words."""
    chart = np.asarray(chart, dtype=np.float64)
    n = chart.shape[0]
    if n <= 2:
        return 0.0
    spans = tree_spans(induce_tree(chart) if tree is None else tree)
    total = 0.0
    for a, b in spans:
        if b - a < 2:
            continue  # a span of two words has one split: best = random
        ks = np.arange(a, b)
        values = chart[a, ks] + chart[ks + 1, b]
        k = max(e for s, e in spans if s == a and e < b)  # where the tree splits (a, b)
        total += float(chart[a, k] + chart[k + 1, b] - values.mean())
    return total


def tree_scores(charts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sentence tree scores (:func:`tree_score`) of the induced trees (float64, one per
    chart); their mean is the tree score of the set."""
    return np.array([tree_score(c) for c in charts], dtype=np.float64)


def random_tree_score(chart: np.ndarray, tree: Tree | None = None) -> float:
    """A stricter variant of the tree score: score(T) - R(0, n - 1), the induced tree's summed
    SCI over its non-root nodes minus the exact expected sum of a whole random tree (see the
    module docstring). Unlike :func:`tree_score` it can be negative, and a model whose spans
    are no more context-free than chance scores near 0; 0 for one word."""
    chart = np.asarray(chart, dtype=np.float64)
    n = chart.shape[0]
    if n == 1:
        return 0.0
    t = induce_tree(chart) if tree is None else tree
    return span_score(chart, t) - float(random_tree_table(chart)[0, n - 1])


def random_tree_scores(charts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sentence :func:`random_tree_score` of the induced trees."""
    return np.array([random_tree_score(c) for c in charts], dtype=np.float64)


def _brackets(tree: Tree) -> tuple[set[tuple[int, int]], tuple[int, int]]:
    """Spans of length >= 2 other than the root, and the root span."""
    spans = tree_spans(tree)
    root = (min(a for a, _ in spans), max(b for _, b in spans))
    return {(a, b) for a, b in spans if b > a and (a, b) != root}, root


def bracketing_f1(
    induced: Sequence[Tree], gold: Sequence[Tree], whole_sentence: bool = False
) -> dict:
    """Unlabelled bracketing F1 of induced trees against gold parses, over spans of length >= 2
    other than the whole sentence (the standard convention of unsupervised parsing), or, with
    ``whole_sentence``, counting the whole-sentence span too, as Murty et al.'s released
    tree-projection code does (every tree gets that span right, so the number is higher and not
    comparable with the standard one). ``f1``, ``precision``, ``recall``: corpus level, from
    summed counts; ``sentence_f1``: mean of 2 |P & G| / (|P| + |G|) over the sentences that have
    any such span; ``n_sentences``: how many those are (others, e.g. <= 2 words, are skipped).
    NaN where nothing is counted."""
    if len(induced) != len(gold):
        raise ValueError(f"{len(induced)} induced trees but {len(gold)} gold trees")
    tp = n_pred = n_gold = 0
    sentence = []
    for t, g in zip(induced, gold, strict=True):
        p_spans, p_root = _brackets(t)
        g_spans, g_root = _brackets(g)
        if p_root != g_root:
            raise ValueError(f"trees over different words: {p_root} vs {g_root}")
        if whole_sentence and p_root[1] > p_root[0]:
            p_spans, g_spans = p_spans | {p_root}, g_spans | {g_root}
        if not p_spans and not g_spans:
            continue
        hit = len(p_spans & g_spans)
        tp, n_pred, n_gold = tp + hit, n_pred + len(p_spans), n_gold + len(g_spans)
        sentence.append(2.0 * hit / (len(p_spans) + len(g_spans)))
    nan = float("nan")
    return {
        "f1": 2.0 * tp / (n_pred + n_gold) if n_pred + n_gold else nan,
        "precision": tp / n_pred if n_pred else nan,
        "recall": tp / n_gold if n_gold else nan,
        "sentence_f1": float(np.mean(sentence)) if sentence else nan,
        "n_sentences": len(sentence),
    }


def tree_projection(
    encode: Encoder,
    sentences: Sequence[np.ndarray],
    gold_trees: Sequence[Tree] | None = None,
    batch_tokens: int = 16384,
) -> dict:
    """Tree projection of a causal model on a set of sentences (Murty et al. 2023).

    Returns ``tree_score`` (the paper's, mean over sentences), ``tree_scores`` (per sentence,
    float64), ``random_tree_score`` / ``random_tree_scores`` (the whole-random-tree variant),
    ``trees`` (induced), ``charts`` (SCI charts, see :func:`sci_charts`) and, with gold trees,
    the keys of :func:`bracketing_f1` (standard convention) and ``f1_with_sentence`` (the
    released code's, whole-sentence span counted)."""
    charts = sci_charts(encode, sentences, batch_tokens)
    trees = [induce_tree(c) for c in charts]
    scores = np.array([tree_score(c, t) for c, t in zip(charts, trees, strict=True)])
    strict = np.array([random_tree_score(c, t) for c, t in zip(charts, trees, strict=True)])
    out: dict = {
        "tree_score": float(scores.mean()) if len(scores) else float("nan"),
        "tree_scores": scores,
        "random_tree_score": float(strict.mean()) if len(strict) else float("nan"),
        "random_tree_scores": strict,
        "trees": trees,
        "charts": charts,
    }
    if gold_trees is not None:
        out.update(bracketing_f1(trees, gold_trees))
        out["f1_with_sentence"] = bracketing_f1(trees, gold_trees, whole_sentence=True)["f1"]
    return out
