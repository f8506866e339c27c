"""The perturbation cascade of a tree-language model: swap the symbol of one level-k node (a
sentence's or a paragraph's topic), regenerate the tree below it, and measure how much the
model's next-token predictions move at the positions that need each level, against how much the
Bayes-optimal predictor's move.

For a sequence and its perturbed twin (:func:`grokscope.tasks.tree_language.perturb`: the
swapped node's ancestors change as the grammar forces, so the twin is a sentence of the same
language; only the first unit is perturbed), at every predicted position from the perturbed
span's first token to the end of the unit, the response is the total-variation distance between
the two next-token distributions. Averaged over the positions that need level j
(:func:`grokscope.tasks.tree_language.position_levels`), the model's response divided by the
exact predictor's is ``cascade_k{k}_j{j}``: 0 when the model ignores the perturbation there,
1 when it responds as much as an optimal model (it can exceed 1: a model can over-react).
Tracked per checkpoint it shows how far down the nested distributions a change at level k
propagates in the model as training goes on: a controlled version of the observation that a
perturbation propagates through the nested distributions.

Only sequences with a swappable node of level k enter (the grammar may allow no swap that keeps
the unit grammatical: 10-45 % of units at level 1 in small grammars); the analysis reports how
many did (``cascade_sequences``), and the ratio describes that subset.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from grokscope.tasks.sequence import SequenceDataset
from grokscope.tasks.tree_language import bayes_predictive, perturb


def perturbed_pairs(ds: SequenceDataset, level: int, n: int, seed: int = 0) -> dict:
    """The first ``n`` generalization-set sequences (full grammar) and their level-``level``
    perturbed twins: ``tokens``, ``twins`` (m, T) for the m sequences with a swappable node,
    ``start`` (m,) the first perturbed leaf (within unit 0)."""
    g, lay = ds.info["grammar"], ds.info["layout"]
    lat = ds.info["latents"]["gen"]
    split = ds.splits["gen"]
    n = min(n, len(split))
    tokens = split.tokens.reshape(len(split), -1)[:n]
    rng = np.random.default_rng([seed, level, 3301])
    pos = np.flatnonzero(lay.unit == 0)
    keep, twins, starts = [], [], []
    for i in range(n):
        res = perturb(g, [a[i, 0] for a in lat], level, rng)
        if res is None:
            continue
        new, node = res
        twin = tokens[i].copy()
        twin[pos] = new[0][lay.leaf[pos]] + ds.info["token_offset"]
        keep.append(i)
        twins.append(twin)
        starts.append(node * g.branching**level)
    return {
        "tokens": tokens[keep],
        "twins": np.array(twins).reshape(len(keep), -1),
        "start": np.array(starts, dtype=np.int64),
    }


def bayes_unit0(ds: SequenceDataset, tokens: np.ndarray) -> np.ndarray:
    """(n, s ** L, v) the full grammar's exact next-token distributions over unit 0's leaves."""
    lay = ds.info["layout"]
    pos = np.flatnonzero(lay.unit == 0)
    leaves = tokens[:, pos] - ds.info["token_offset"]
    return bayes_predictive(ds.info["grammar"], leaves, ds.info["grammar"].levels)


def perturbation_cascade(
    logp_fn: Callable[[np.ndarray], np.ndarray],
    ds: SequenceDataset,
    pairs: dict[int, dict],
) -> dict[str, float]:
    """``cascade_k{k}_j{j}`` for every perturbed level k in ``pairs`` (from
    :func:`perturbed_pairs`) and every need level j (module docstring); ``logp_fn`` maps tokens
    (n, T) to the model's log-probabilities (n, T - 1, V)."""
    g, lay = ds.info["grammar"], ds.info["layout"]
    off = ds.info["token_offset"]
    pos = np.flatnonzero(lay.unit == 0)  # token positions of unit 0's leaves
    need = lay.need[pos]
    out: dict[str, float] = {}
    for k, pair in sorted(pairs.items()):
        if len(pair["tokens"]) == 0:
            continue
        p = np.exp(logp_fn(pair["tokens"])[:, pos - 1, off : off + g.vocab])
        p2 = np.exp(logp_fn(pair["twins"])[:, pos - 1, off : off + g.vocab])
        p /= p.sum(-1, keepdims=True)
        p2 /= p2.sum(-1, keepdims=True)
        if "bayes" not in pair:  # the exact responses do not change between checkpoints
            pair["bayes"] = (bayes_unit0(ds, pair["tokens"]), bayes_unit0(ds, pair["twins"]))
        q, q2 = pair["bayes"]
        model_tv = 0.5 * np.abs(p - p2).sum(-1)
        bayes_tv = 0.5 * np.abs(q - q2).sum(-1)
        after = np.arange(g.leaves)[None, :] >= pair["start"][:, None]
        for j in range(g.levels + 1):
            mask = after & (need[None, :] == j)
            if not mask.any():
                continue
            denominator = bayes_tv[mask].mean()
            if denominator > 1e-9:
                out[f"cascade_k{k}_j{j}"] = float(model_tv[mask].mean() / denominator)
    return out


# logits per forward pass of :func:`tree_logprobs` (tokens x vocabulary): 2^24 float64 values
EVAL_LOGITS = 1 << 24


@torch.no_grad()
def tree_logprobs(model, tokens: np.ndarray, device: torch.device, d_vocab: int) -> np.ndarray:
    """(n, T - 1, V) float64 log-probabilities of a tree-language model's next-token predictions
    for equal-length sequences ``tokens`` (n, T), in chunks of at most EVAL_LOGITS values."""
    n, width = tokens.shape
    step = max(1, EVAL_LOGITS // max(width * d_vocab, 1))
    out = np.empty((n, width - 1, d_vocab))
    for start in range(0, n, step):
        chunk = torch.as_tensor(tokens[start : start + step], device=device)
        logits = model(chunk)[:, :-1].double()
        out[start : start + step] = torch.log_softmax(logits, -1).cpu().numpy()
    return out


def score_levels(
    logp: np.ndarray, tokens: np.ndarray, refs: np.ndarray, need: np.ndarray, top: int
) -> dict[str, float]:
    """A model's next-token predictions scored against the exact per-level references.

    ``logp`` (n, T - 1, V) the model's log-probabilities (output at t predicts token t + 1),
    ``tokens`` (n, T), ``refs`` from :func:`level_references`, ``need`` (T,) the layout's
    levels, ``top`` the highest level defined on these sequences (the filter level of filtered
    data: above it the references assume correlations the data do not have, and are NaN here).
    Over the leaf positions, float64:
    - ``agree``: share of positions where the model's argmax is a most likely token of ``q_top``
      (the data's own Bayes predictor; 1 for an optimal model);
    - ``loss_leaf``: the model's mean loss on the leaf tokens, comparable with the plateaus;
    - ``kl_l{k}``: mean KL(q_k || model) in nats, the model's distance to level k's predictor;
    - ``h_l{k}``: mean cross-entropy of q_k on the observed tokens (the level-k plateau);
    - ``coef_l{k}`` (k >= 1) and ``coef_fit``: the level coefficients of
      :func:`level_coefficients`, level-specific and over all leaf positions;
    - ``loss_l{k}``: the model's mean loss on the positions whose prediction needs level k,
      ``floor_l{k}`` that of q_k there, ``ceil_l{k}`` that of q_{k - 1} there (k >= 1) and
      ``best_l{k}`` that of q_top there: a model that has not learned level k sits at or above
      the ceiling, one that has learned levels up to k at the floor, and the data's own Bayes
      predictor (every level) at ``best``, below the floor where higher levels inform these
      positions.
    """
    levels = refs.shape[0] - 1
    nxt = tokens[:, 1:]
    leaf = need[1:] >= 0
    obs_model = np.take_along_axis(logp, nxt[..., None], -1)[..., 0]
    out: dict[str, float] = {}
    most = refs[top].max(-1)
    pick = logp.argmax(-1)
    hit = np.take_along_axis(refs[top], pick[..., None], -1)[..., 0] >= most - 1e-12
    out["agree"] = float(hit[:, leaf].mean())
    # the model's loss on the leaf tokens: the same footing as the plateaus h_l{k} (the run's
    # test_loss also averages the boundary token, which the layout fixes)
    out["loss_leaf"] = _mean(-obs_model[:, leaf])
    with np.errstate(divide="ignore", invalid="ignore"):
        # each defined level's loss on the observed tokens, (top + 1, n, T - 1)
        obs = -np.log(np.take_along_axis(refs[: top + 1], nxt[None, ..., None], -1)[..., 0])
        coef, fit = level_coefficients(obs_model[:, leaf], -obs[:, :, leaf])
        out.update({f"coef_l{k}": float(c) for k, c in enumerate(coef, start=1)})
        out.update({f"coef_l{k}": float("nan") for k in range(top + 1, levels + 1)})
        out["coef_fit"] = fit
        for k in range(levels + 1):
            here = need[1:] == k
            out[f"loss_l{k}"] = _mean(-obs_model[:, here])
            if k > top:
                for name in ("kl", "h", "floor", "ceil", "best"):
                    out[f"{name}_l{k}"] = float("nan")
                continue
            q = refs[k][:, leaf]
            kl = np.where(q > 0, q * (np.log(q) - logp[:, leaf]), 0.0).sum(-1)
            out[f"kl_l{k}"] = float(kl.mean())
            out[f"h_l{k}"] = float(obs[k][:, leaf].mean())
            out[f"floor_l{k}"] = _mean(obs[k][:, here])
            out[f"best_l{k}"] = _mean(obs[top][:, here])
            out[f"ceil_l{k}"] = _mean(obs[k - 1][:, here]) if k else float("nan")
    return out


# a level whose log-ratio increments have a mean square below this (nats^2) carries no signal
MIN_INCREMENT_SQ = 1e-8


def level_coefficients(model_logp: np.ndarray, ref_logp: np.ndarray) -> tuple[np.ndarray, float]:
    """How much of each level's information a model's predictions carry: a level-specific
    progress over all positions (ours; not a published measure).

    ``model_logp`` (...,) the model's log-probability of each observed token, ``ref_logp``
    (K + 1, ...) those of the exact predictors q_0 ... q_K on the same tokens. The exact
    predictors form a chain: log q_K = log q_0 + sum_k d_k with d_k = log q_k - log q_{k-1},
    the evidence level k adds over the levels below it (its mean over the data is the plateau
    drop H_{k-1} - H_k). The coefficients c_1 ... c_K are the least-squares fit, over every
    observed token,

        log p - log q_0  ~  sum_k c_k d_k        (no intercept),

    so a model equal to q_j has c_k = 1 for k <= j and 0 above it, exactly; a model that knows
    nothing beyond the positional marginals (q_0) has every c_k = 0. Unlike the positional
    progress f_k (:mod:`grokscope.dynamics.levels`), higher levels do not raise c_k: each level
    has its own regressor. Unlike the loss between the plateaus, c_k does not order the levels
    by construction: a model that carried level 2's evidence but not level 1's would score
    (0, 1). There is no intercept because each d_k has a positive mean (the level's
    information): an intercept would absorb it. Tokens where a reference gives probability 0
    (impossible under it) are left out. Returns the coefficients (NaN for a level whose
    increments carry no signal, mean square below ``MIN_INCREMENT_SQ``) and the uncentred R^2
    of the fit (1 when the model lies in the span of the references; a model far from every
    q_k fits poorly and its coefficients say less).
    """
    levels = ref_logp.shape[0] - 1
    y = (model_logp - ref_logp[0]).ravel()
    x = np.diff(ref_logp, axis=0).reshape(levels, -1).T
    ok = np.isfinite(y) & np.isfinite(x).all(1)
    y, x = y[ok], x[ok]
    coef = np.full(levels, np.nan)
    if levels == 0 or len(y) == 0:
        return coef, float("nan")
    live = (x**2).mean(0) >= MIN_INCREMENT_SQ
    if not live.any():
        return coef, float("nan")
    sol, *_ = np.linalg.lstsq(x[:, live], y, rcond=None)
    coef[live] = sol
    resid = y - x[:, live] @ sol
    total = float(y @ y)
    fit = 1.0 - float(resid @ resid) / total if total > 0 else float("nan")
    return coef, fit


def level_coefficient_se(
    model_logp: np.ndarray,
    ref_logp: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """(K,) bootstrap standard errors of :func:`level_coefficients` over independent groups
    (documents, sequences): ``groups`` (...,) labels each token's group; the groups are
    resampled with replacement ``n_boot`` times (the tokens of one document are not independent,
    so tokens are not resampled one by one). An exact predictor's coefficients do not move under
    resampling (standard error 0)."""
    labels, inverse = np.unique(groups.ravel(), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(labels) + 1))
    y = model_logp.ravel()[order]
    x = ref_logp.reshape(ref_logp.shape[0], -1)[:, order]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(labels), len(labels))
        idx = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in pick])
        draws.append(level_coefficients(y[idx], x[:, idx])[0])
    return np.std(np.array(draws), axis=0, ddof=1)


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")
