"""The training data and per-evaluation accuracies of structural grokking (Murty, Sharma,
Andreas & Manning, ACL 2023): language modelling on question formation, tense inflection and
Dyck lines, graded by the paper's metrics.

- question formation: the first word of the question, argmax over the four auxiliaries (do,
  does, don't, doesn't), on the lines that ask for a question; beside it ``linear``, the share
  of those lines where that choice is the first auxiliary of the input sentence: agreement
  with the linear rule ("front the first auxiliary"), measured directly rather than read from
  a generalization accuracy near 0 (on the generalization set the two rules disagree, so the
  two shares add to at most 1; the column ``gen_linear_acc``);
- tense inflection: as Murty et al.'s released metric, the whole output is decoded greedily
  token by token from the task marker, and a line is correct when the decoded output's
  part-of-speech sequence matches the gold one (coarse tags: determiner, noun, verb,
  preposition, relativizer, full stop) and its main verb is the gold verb;
- Dyck (Hewitt et al. 2020): at every position whose next token is a closing bracket, the argmax
  over the k closing brackets.
"""

from __future__ import annotations

import numpy as np
import torch

from grokscope.train.lm_data import SeqData, SplitTensors


@torch.no_grad()
def greedy_decode(
    model, tokens: torch.Tensor, start: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Greedy decoding of each row from its ``start`` to its ``target`` position (inclusive),
    every decoded token fed back: the rows with the model's tokens at those positions."""
    buf = tokens.clone()
    rows = torch.arange(len(buf), device=buf.device)
    for offset in range(int((target - start).max()) + 1):
        pos = start + offset
        live = pos <= target
        if not bool(live.any()):
            break
        width = int(pos[live].max()) + 1
        logits = model(buf[:, :width])
        p = pos.clamp(max=width - 1)
        pred = logits[rows, p - 1].argmax(-1)
        buf[rows[live], pos[live]] = pred[live]
    return buf


class StructuralData(SeqData):
    """:class:`SeqData` graded by the task's own metric (module docstring)."""

    def grade(
        self, logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, rows: np.ndarray,
        split: SplitTensors, model,
    ) -> dict[str, int]:  # fmt: skip
        info, device = self.dataset.info, self.device
        ar = torch.arange(len(rows), device=device)
        if self.task == "question_formation":
            tgt = torch.as_tensor(split.target[rows], device=device)
            gold = tokens[ar, tgt]
            aux = torch.as_tensor(info["aux_ids"], device=device)
            asks = torch.isin(gold, aux)
            choice = aux[logits[ar, tgt - 1][:, aux].argmax(-1)]
            words = torch.as_tensor(split.sentence_len[rows], device=device)
            first = _first_aux(tokens, words, aux)
            return {
                "correct": int(((choice == gold) & asks).sum()),
                "graded": int(asks.sum()),
                "linear": int(((choice == first) & asks).sum()),
            }
        if self.task == "tense_inflection":
            tgt = torch.as_tensor(split.target[rows], device=device)
            start = torch.as_tensor(split.answer_start[rows], device=device)
            last = torch.as_tensor(split.lengths[rows] - 1, device=device)
            out = greedy_decode(model, tokens, start, last)
            pos = torch.as_tensor(info["pos_ids"], device=device)
            col = torch.arange(tokens.shape[1], device=device)[None, :]
            span = (col >= start[:, None]) & (col <= last[:, None])
            tags_ok = ((pos[out] == pos[tokens]) | ~span).all(dim=1)
            verb_ok = out[ar, tgt] == tokens[ar, tgt]
            return {
                "correct": int((tags_ok & verb_ok).sum()),
                "graded": len(rows),
                "verb_only": int(verb_ok.sum()),
            }
        close = torch.as_tensor(info["close_ids"], device=device)
        nxt = tokens[:, 1:]
        need = torch.isin(nxt, close) & mask
        choice = close[logits[:, :-1][..., close].argmax(-1)]
        return {"correct": int(((choice == nxt) & need).sum()), "graded": int(need.sum())}

    def extra_columns(self, out: dict[str, dict]) -> dict:
        if self.task == "tense_inflection":  # the main verb alone, without the tag check
            return {"gen_verb_acc": out["gen"]["verb_only"]}
        if self.task != "question_formation":
            return {}
        return {"gen_linear_acc": out["gen"]["linear"]}


def _first_aux(tokens: torch.Tensor, sentence_len: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """The first auxiliary of each line's input sentence (positions < ``sentence_len``); -1 for a
    sentence without one."""
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    is_aux = torch.isin(tokens, aux) & (pos < sentence_len[:, None])
    first = torch.where(is_aux, pos, tokens.shape[1]).min(dim=1).values
    found = first < tokens.shape[1]
    return torch.where(found, tokens.gather(1, first.clamp(max=tokens.shape[1] - 1)[:, None])[:, 0],
                       torch.full_like(first, -1))  # fmt: skip
