"""Measures of a language model on a document language, against the exact per-level predictors
(:mod:`grokscope.tasks.document_inference`). All pure functions of float64 arrays: the model's
log-probabilities ``logp`` (n, T - 1, V) for right-padded documents ``tokens`` (n, T) of
``lengths`` (output t predicts token t + 1), the references ``refs`` (L + 1, n, T - 1, V), and
the gold latents padded alike (:func:`padded_latents`).

- :func:`score_levels`: KL to each level's predictor, the plateaus H_k and the level
  coefficients c_k (:func:`grokscope.measures.levels.level_coefficients`, ours, level-specific)
  over every predicted token.
- :func:`boundary_surprise`: the loss on the first words of a new paragraph, model and levels.
- :func:`adaptation_curve`: the loss on the d-th content word of a paragraph after a topic
  change, model and levels: the adaptation after a boundary beside the exact Bayesian curve.
- :func:`genre_gain`: the loss below level 3's per paragraph index, model and exact.
- :func:`boundary_inference`: where the model's predictions imply a paragraph began, against
  the exact posterior.
- the responses to edits of a document: :mod:`grokscope.measures.document_interventions`.

These measures are ours (the question they ask is in docs/documents.md); none carries a
published name.
"""

from __future__ import annotations

import numpy as np

from grokscope.measures.levels import level_coefficient_se, level_coefficients
from grokscope.tasks.documents import (
    CONTENT,
    FIRST_WORD,
    LATENT_NAMES,
    ROLE_MARK,
    ROLE_WORD,
    DocumentGrammar,
)


def live_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """(n, width - 1) which outputs predict a real token."""
    return np.arange(1, width)[None, :] < lengths[:, None]


def padded_latents(latents: dict[str, np.ndarray], offsets: np.ndarray, rows, width: int):
    """The flat gold latents of documents ``rows`` right-padded to ``width`` with -1."""
    rows = np.asarray(rows)
    lengths = np.diff(offsets)[rows]
    cols = np.arange(width)
    idx = offsets[rows][:, None] + cols[None, :]
    real = cols[None, :] < lengths[:, None]
    out = {}
    for name in LATENT_NAMES:
        flat = latents[name]
        out[name] = np.where(real, flat[np.minimum(idx, max(len(flat) - 1, 0))], -1)
    return out


def observed(logp: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(n, T - 1) log-probability of each next token."""
    return np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]


def score_levels(
    logp: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, refs: np.ndarray
) -> dict[str, float]:
    """Over every predicted token: ``loss`` the model's mean loss; ``agree`` the share of
    positions where the model's argmax is a most likely token of the full predictor;
    ``kl_l{k}`` mean KL(q_k || model), ``h_l{k}`` the plateau (q_k's loss), ``coef_l{k}``
    (k >= 1) and ``coef_fit`` the level coefficients."""
    live = live_mask(lengths, tokens.shape[1])
    levels = refs.shape[0] - 1
    obs_model = observed(logp, tokens)[live]
    out = {"loss": float(-obs_model.mean())}
    out["agree"] = agreement(logp, tokens, lengths, refs[levels])
    with np.errstate(divide="ignore"):
        obs_refs = np.stack([np.log(observed(refs[k], tokens)[live]) for k in range(levels + 1)])
    coef, fit = level_coefficients(obs_model, obs_refs)
    out.update({f"coef_l{k}": float(c) for k, c in enumerate(coef, start=1)})
    out["coef_fit"] = fit
    lp = logp[live]
    for k in range(levels + 1):
        q = refs[k][live]
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(q > 0, q * (np.log(q) - lp), 0.0).sum(-1)
        out[f"kl_l{k}"] = float(kl.mean())
        out[f"h_l{k}"] = float(-obs_refs[k].mean())
    return out


def coefficient_se(
    logp: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, refs: np.ndarray, n_boot: int = 100
) -> dict[str, float]:
    """``coef_se_l{k}``: the bootstrap standard error of each level coefficient over documents
    (:func:`grokscope.measures.levels.level_coefficient_se`)."""
    live = live_mask(lengths, tokens.shape[1])
    with np.errstate(divide="ignore"):
        obs_refs = np.stack([np.log(observed(refs[k], tokens)[live]) for k in range(len(refs))])
    docs = np.broadcast_to(np.arange(len(lengths))[:, None], live.shape)[live]
    se = level_coefficient_se(observed(logp, tokens)[live], obs_refs, docs, n_boot)
    return {f"coef_se_l{k}": float(v) for k, v in enumerate(se, start=1)}


def agreement(logp: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, q: np.ndarray) -> float:
    """Share of predicted tokens where the model's argmax is a most likely token of the
    exact predictor ``q`` (n, T - 1, V)."""
    live = live_mask(lengths, tokens.shape[1])
    top, pick = q[live], logp[live].argmax(-1)
    return float((top[np.arange(len(pick)), pick] >= top.max(-1) - 1e-12).mean())


def paragraph_word_index(lat: dict[str, np.ndarray], content_only: bool) -> np.ndarray:
    """(n, T) for each token, its ordinal among the paragraph's words (content words only when
    ``content_only``), -1 for other tokens."""
    role, par = lat["role"], lat["paragraph"]
    word = lat["content"] if content_only else role == ROLE_WORD
    out = np.full(role.shape, -1)
    for i in range(role.shape[0]):
        count, current = 0, -2
        for t in np.flatnonzero(word[i]):
            if par[i, t] != current:
                count, current = 0, par[i, t]
            out[i, t] = count
            count += 1
    return out


def mark_content(lat: dict[str, np.ndarray], g: DocumentGrammar) -> dict[str, np.ndarray]:
    """``lat`` with ``content``: whether each token fills a content slot of its template."""
    longest = max(len(t) for t in g.templates)
    table = np.zeros((len(g.templates) + 1, longest + 2), dtype=bool)
    for t, slots in enumerate(g.templates):
        table[t, : len(slots)] = [s == CONTENT for s in slots]
    tpl = np.where(lat["template"] >= 0, lat["template"], len(g.templates))
    slot = np.clip(lat["slot"], 0, longest + 1)
    return {**lat, "content": table[tpl, slot] & (lat["role"] == ROLE_WORD)}


def _losses(logp, tokens, refs):
    model = -observed(logp, tokens)
    with np.errstate(divide="ignore"):
        levels = np.stack([-np.log(observed(refs[k], tokens)) for k in range(refs.shape[0])])
    return model, levels


def boundary_surprise(
    logp: np.ndarray, tokens: np.ndarray, refs: np.ndarray, lat: dict, first: int = 3
) -> dict[str, float]:
    """Mean loss on the first ``first`` words of every paragraph after the first (the words
    right after a topic change): ``surprise_model`` and ``surprise_l{k}`` per level. The drop
    ``surprise_l2 - surprise_l3`` is what knowing the trajectory removes."""
    index = paragraph_word_index(lat, content_only=False)[:, 1:]
    sel = (index >= 0) & (index < first) & (lat["paragraph"][:, 1:] >= 1)
    model, levels = _losses(logp, tokens, refs)
    out = {"surprise_model": _mean(model[sel])}
    out.update({f"surprise_l{k}": _mean(levels[k][sel]) for k in range(len(levels))})
    return out


def adaptation_curve(
    logp: np.ndarray, tokens: np.ndarray, refs: np.ndarray, lat: dict, distances: int = 8
) -> dict[str, np.ndarray]:
    """Loss on the d-th content word (d = 0 .. ``distances`` - 1) of every paragraph after the
    first: ``model`` (D,), ``levels`` (L + 1, D), ``count`` (D,) words averaged."""
    index = paragraph_word_index(lat, content_only=True)[:, 1:]
    later = lat["paragraph"][:, 1:] >= 1
    model, levels = _losses(logp, tokens, refs)
    m, lv, count = np.full(distances, np.nan), np.full((len(levels), distances), np.nan), []
    for d in range(distances):
        sel = later & (index == d)
        count.append(int(sel.sum()))
        if sel.any():
            m[d] = model[sel].mean()
            lv[:, d] = levels[:, sel].mean(1)
    return {"model": m, "levels": lv, "count": np.array(count)}


def genre_gain(
    logp: np.ndarray, tokens: np.ndarray, refs: np.ndarray, lat: dict, paragraphs: int
) -> dict[str, float]:
    """Per paragraph index i: the model's mean loss below the trajectory level's on the
    paragraph's words (``genre_gain_p{i}_model``, nats) and the full predictor's
    (``genre_gain_p{i}_exact``). A model that has the genre as a prior gains alike at every
    paragraph; the exact gain grows as the document reveals its genre."""
    model, levels = _losses(logp, tokens, refs)
    top = refs.shape[0] - 1
    word = lat["role"][:, 1:] == ROLE_WORD
    out = {}
    for i in range(paragraphs):
        sel = word & (lat["paragraph"][:, 1:] == i)
        out[f"genre_gain_p{i}_model"] = _mean(levels[top - 1][sel] - model[sel])
        out[f"genre_gain_p{i}_exact"] = _mean(levels[top - 1][sel] - levels[top][sel])
    return out


def genre_coefficients(
    logp: np.ndarray,
    tokens: np.ndarray,
    lengths: np.ndarray,
    refs: np.ndarray,
    lat: dict,
    paragraphs: int,
) -> dict[str, float]:
    """Per paragraph index i, over the tokens predicted in paragraph i: ``coef_l4_p{i}`` the
    top level's coefficient (the share of the genre's evidence the model carries there; every
    level's increment is a regressor, :func:`grokscope.measures.levels.level_coefficients`) and
    ``genre_evidence_p{i}`` the mean increment log q_4 - log q_3 of the exact predictors there
    (nats: how much the genre tells in that paragraph, which grows as the document reveals
    it). A model that tracks the genre from the text carries a like share of it in every
    paragraph; one that holds the genre only as a fixed prior cannot follow the evidence as it
    grows."""
    live = live_mask(lengths, tokens.shape[1])
    par = lat["paragraph"][:, 1:]
    model = observed(logp, tokens)
    with np.errstate(divide="ignore"):
        obs_refs = np.stack([np.log(observed(refs[k], tokens)) for k in range(len(refs))])
    top = len(refs) - 1
    out = {}
    for i in range(paragraphs):
        sel = live & (par == i)
        if not sel.any():
            out[f"coef_l{top}_p{i}"] = out[f"genre_evidence_p{i}"] = float("nan")
            continue
        coef, _ = level_coefficients(model[sel], obs_refs[:, sel])
        out[f"coef_l{top}_p{i}"] = float(coef[-1])
        out[f"genre_evidence_p{i}"] = float((obs_refs[top] - obs_refs[top - 1])[sel].mean())
    return out


def implied_mixture(p: np.ndarray, q_a: np.ndarray, q_b: np.ndarray, grid: int = 201) -> np.ndarray:
    """(m,) for each row, the weight w in [0, 1] whose mixture (1 - w) q_a + w q_b is closest to
    p in KL(p || mixture) (a grid of ``grid`` weights; the divergence is convex in w)."""
    w = np.linspace(0.0, 1.0, grid)
    mix = (1 - w)[None, :, None] * q_a[:, None, :] + w[None, :, None] * q_b[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where(p[:, None, :] > 0, p[:, None, :] * np.log(mix), 0.0).sum(-1)
    return w[np.nanargmax(np.where(np.isfinite(cross), cross, -np.inf), axis=1)]


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``label`` (scikit-learn's
    ``roc_auc_score``); NaN when one class is empty."""
    from sklearn.metrics import roc_auc_score

    label = np.asarray(label, dtype=bool)
    if label.all() or not label.any():
        return float("nan")
    return float(roc_auc_score(label, score))


def boundary_inference(
    logp: np.ndarray,
    tokens: np.ndarray,
    lat: dict,
    posterior: np.ndarray,
    pred_new: np.ndarray,
    pred_cont: np.ndarray,
    content: slice,
) -> dict[str, float]:
    """At the first content word of every sentence after the first: the weight the model's
    content-word prediction puts on "a new paragraph began" (:func:`implied_mixture` between
    the exact predictions given a continuing paragraph and given a new one), against the exact
    posterior ``posterior`` (the forward algorithm's boundary, at the output before that word).
    ``boundary_auc_model`` / ``boundary_auc_exact``: how well each separates the gold boundaries
    (sentences that began a paragraph) from the rest; ``boundary_corr`` the Pearson correlation
    of the model's weight with the exact posterior; ``boundary_sentences`` how many."""
    index = _first_content_of_sentence(lat)
    pos = np.argwhere(index)
    pos = pos[pos[:, 1] >= 1]
    n_, t_ = pos[:, 0], pos[:, 1] - 1  # output t predicts token t + 1
    sentence_index = lat["sentence"][pos[:, 0], pos[:, 1]]
    keep = (sentence_index >= 1) & np.isfinite(posterior[n_, t_])
    n_, t_ = n_[keep], t_[keep]
    if not len(n_):
        return {k: float("nan") for k in _BOUNDARY_KEYS}
    par_start = _sentence_opens_paragraph(lat)[n_, t_ + 1]

    def restrict(a):
        a = a[n_, t_][:, content]
        return a / a.sum(-1, keepdims=True)

    p = restrict(np.exp(logp))
    w_model = implied_mixture(p, restrict(pred_cont), restrict(pred_new))
    w_exact = posterior[n_, t_]
    corr = (
        float(np.corrcoef(w_model, w_exact)[0, 1])
        if w_model.std() > 0 and w_exact.std() > 0
        else float("nan")
    )
    return {
        "boundary_auc_model": auc(w_model, par_start),
        "boundary_auc_exact": auc(w_exact, par_start),
        "boundary_corr": corr,
        "boundary_sentences": float(len(n_)),
    }


_BOUNDARY_KEYS = ("boundary_auc_model", "boundary_auc_exact", "boundary_corr", "boundary_sentences")


def _first_content_of_sentence(lat: dict) -> np.ndarray:
    """(n, T) True at the first content word of each sentence."""
    content = lat["content"]
    out = np.zeros(content.shape, dtype=bool)
    sent = lat["sentence"]
    for i in range(content.shape[0]):
        seen = set()
        for t in np.flatnonzero(content[i]):
            if sent[i, t] not in seen:
                seen.add(sent[i, t])
                out[i, t] = True
    return out


def _sentence_opens_paragraph(lat: dict) -> np.ndarray:
    """(n, T) True on the tokens of a sentence that is its paragraph's first."""
    out = np.zeros(lat["role"].shape, dtype=bool)
    for i in range(out.shape[0]):
        first: dict[int, int] = {}
        for t in np.flatnonzero(lat["sentence"][i] >= 0):
            par = int(lat["paragraph"][i, t])
            first.setdefault(par, int(lat["sentence"][i, t]))
            out[i, t] = lat["sentence"][i, t] == first[par] and lat["role"][i, t] != ROLE_MARK
    return out


def content_slice(g: DocumentGrammar) -> slice:
    """The token ids of the content words."""
    start = FIRST_WORD + g.function_words
    return slice(start, start + g.content_words)


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")
