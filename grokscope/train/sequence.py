"""Language-model training data, loss and metrics of the sequence tasks, for the training core.

Batches without wasted padding (bucketing): each pass over the training set is a seeded
permutation, cut into pools of :data:`POOL_BATCHES` batches; a pool is sorted by length and cut
into batches, and the batches of a pass are shuffled. A batch is padded to its own longest
sequence, and sequences of similar length travel together, so padding is a few percent of the
tokens instead of the third or more a random batch padded to its maximum carries. The batch of a
step is a function of (model seed, step) alone, so a resumed run sees the batches the
uninterrupted run saw.

For sequence tasks one epoch of the training loop is one optimizer step (the ``epoch`` and
``step`` columns are equal; ``train.epochs`` is the step budget), the unit in which Murty et al.
(2023) report structural grokking.

Metrics (Murty, Sharma, Andreas & Manning, ACL 2023):
- question formation: the first word of the question, argmax over the four auxiliaries (do,
  does, don't, doesn't), on the lines that ask for a question;
- tense inflection: the main verb of the output under greedy decoding (the output is decoded
  token by token from the task marker up to the main verb's position, and the token there is
  compared with the gold one);
- Dyck (Hewitt et al. 2020): at every position whose next token is a closing bracket, the argmax
  over the k closing brackets;
- tree languages: ``acc`` is the share of leaf positions where the model's argmax is a most
  likely token of the data's own Bayes-optimal predictor (the next token itself is random, so
  top-1 accuracy against it is capped below 1), and every evaluation also scores the test set
  and the training slice against the exact predictor of each level
  (:func:`grokscope.tasks.tree_language.score_levels`): columns ``kl_l{k}_{split}``,
  ``h_l{k}_{split}``, ``loss_l{k}_{split}``, ``floor_l{k}_{split}``, ``ceil_l{k}_{split}``,
  ``best_l{k}_{split}`` for
  split ``train`` and ``test``, and ``train_top1`` (top-1 accuracy on the training slice: near
  1 only for a model that has memorized its training sequences).
Each evaluation reports, for a fixed slice of the training set (as many sentences as the
in-distribution test set), the in-distribution test set and the generalization set: the
language-model loss (mean per predicted token, float64) and the task accuracy. ``id_acc`` is the
test set's accuracy (also ``test_acc``), ``gen_acc`` the generalization set's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from grokscope.config import Config
from grokscope.tasks import tree_language
from grokscope.tasks.sequence import SequenceDataset, SequenceSplit

# batches per length-sorted pool: large enough that lengths within a batch nearly agree, small
# enough that consecutive batches still mix lengths
POOL_BATCHES = 50
# logits per evaluation forward pass (tokens x vocabulary): 2^24 float64 values, 128 MB
EVAL_LOGITS = 1 << 24


def pass_batches(
    lengths: np.ndarray, batch_size: int, seed: int, pass_index: int
) -> list[np.ndarray]:
    """The batches (arrays of sentence indices) of one pass over a training set, bucketed by
    length; seeded by (seed, pass_index)."""
    rng = np.random.default_rng([seed, pass_index, 7919])
    order = rng.permutation(len(lengths))
    batches = []
    pool = POOL_BATCHES * batch_size
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class SplitTensors:
    """One split on the device: flat tokens, offsets and per-sentence positions."""

    tokens: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    answer_start: np.ndarray
    target: np.ndarray

    @classmethod
    def of(cls, split: SequenceSplit, rows: np.ndarray | None = None) -> SplitTensors:
        """The split's lines ``rows`` (all of them by default: its own arrays, not copied)."""
        if rows is None:
            return cls(split.tokens, split.offsets, split.lengths, split.answer_start, split.target)
        idx = rows
        seqs = [split.sequence(int(i)) for i in idx]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        return cls(flat, offsets, lengths, split.answer_start[idx], split.target[idx])

    def __len__(self) -> int:
        return len(self.lengths)

    def padded(self, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, T) right-padded with 0 to the longest of ``rows``, and the lengths (B,)."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        cols = np.arange(width)
        idx = self.offsets[rows][:, None] + cols[None, :]
        real = cols[None, :] < lengths[:, None]
        tokens = np.where(real, self.tokens[np.minimum(idx, len(self.tokens) - 1)], 0)
        return (
            torch.as_tensor(tokens, dtype=torch.int64, device=device),
            torch.as_tensor(lengths, dtype=torch.int64, device=device),
        )


def target_mask(
    lengths: torch.Tensor, answer_start: torch.Tensor | None, width: int
) -> torch.Tensor:
    """(B, width - 1) bool: which next-token predictions count. Position t predicts token t + 1;
    it counts when t + 1 is a real token and (``answer_start`` given) lies in the answer span."""
    nxt = torch.arange(1, width, device=lengths.device)[None, :]
    mask = nxt < lengths[:, None]
    if answer_start is not None:
        mask &= nxt >= answer_start[:, None]
    return mask


@dataclass
class SeqData:
    """A sequence task's data for the training core: the training set (bucketed batches) and the
    evaluation sets. One seed at a time (K = 1): the variable-length batches of different seeds
    would not stack."""

    dataset: SequenceDataset
    task: str  # the config's task name: which accuracy the evaluation reads
    device: torch.device
    batch_size: int
    seed: int
    loss_on: str
    train: SplitTensors
    evals: dict[str, SplitTensors]
    # tree languages: the exact per-level references of each evaluation set, and the highest
    # level defined on it (computed once per run, not per evaluation)
    refs: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    _plan: tuple[int, list[np.ndarray]] | None = field(default=None, repr=False)

    @classmethod
    def from_dataset(cls, cfg: Config, ds: SequenceDataset, device: torch.device) -> SeqData:
        train = ds.splits["train"]
        n_eval = min(len(train), len(ds.splits["test"]))
        evals = {
            "train": SplitTensors.of(train, np.arange(n_eval)),
            "test": SplitTensors.of(ds.splits["test"]),
            "gen": SplitTensors.of(ds.splits["gen"]),
        }
        refs = {}
        if cfg.task.name == "tree_language":
            levels, k = ds.info["grammar"].levels, ds.info["filter_level"]
            for name, split in evals.items():
                top = levels if name == "gen" else k
                tokens = split.tokens.reshape(len(split), -1)
                refs[name] = (tree_language.level_references(ds, tokens, top), top)
        return cls(
            dataset=ds,
            task=cfg.task.name,
            device=device,
            batch_size=cfg.optim.batch_size,
            seed=cfg.train.seed,
            loss_on=cfg.optim.loss_on,
            train=SplitTensors.of(train),
            evals=evals,
            refs=refs,
        )

    @property
    def steps_per_pass(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def batch_rows(self, step: int) -> np.ndarray:
        """Sentence indices of the training batch of ``step``."""
        per = self.steps_per_pass
        p = step // per
        if self._plan is None or self._plan[0] != p:
            self._plan = (p, pass_batches(self.train.lengths, self.batch_size, self.seed, p))
        return self._plan[1][step % per]

    def select(self, slots: list[int]) -> SeqData:
        return self


def lm_losses(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prediction cross-entropy (float64) of logits (B, T, V) against the next tokens, and the
    mask of the predictions that count."""
    pred = logits[:, :-1].double()
    nxt = tokens[:, 1:]
    each = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), nxt.reshape(-1), reduction="none")
    return each.view(nxt.shape) * mask, mask


def train_loss(model, params: dict, data: SeqData, step: int) -> torch.Tensor:
    """Mean next-token loss (float64) of the training batch of ``step`` over the predictions that
    count (every token, or the answer span with ``optim.loss_on = answer``)."""
    rows = data.batch_rows(step)
    tokens, lengths = data.train.padded(rows, data.device)
    start = None
    if data.loss_on == "answer":
        start = torch.as_tensor(data.train.answer_start[rows], device=data.device)
    mask = target_mask(lengths, start, tokens.shape[1])
    logits = functional_call(model, params, (tokens,))
    each, mask = lm_losses(logits, tokens, mask)
    return each.sum() / mask.sum()


def _chunks(split: SplitTensors, d_vocab: int) -> list[np.ndarray]:
    """Sentence indices in length order, cut so that each padded chunk's logits hold at most
    EVAL_LOGITS values (or one sentence), whatever the vocabulary."""
    budget = max(1, EVAL_LOGITS // max(d_vocab, 1))
    order = np.argsort(split.lengths, kind="stable")
    out, current = [], []
    for i in order:
        if current and (len(current) + 1) * int(split.lengths[i]) > budget:
            out.append(np.array(current))
            current = []
        current.append(i)
    if current:
        out.append(np.array(current))
    return out


@torch.no_grad()
def _greedy_targets(
    model, tokens: torch.Tensor, start: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Greedy decoding from each row's ``start`` up to its ``target`` position: the token the model
    writes at ``target`` (Murty et al. 2023's main-verb accuracy)."""
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
    return buf[rows, target]


@torch.no_grad()
def evaluate_sequences(model, data: SeqData, name: str) -> dict:
    """Loss (mean over predicted tokens, float64) and task accuracy on one evaluation set."""
    split = data.evals[name]
    info, task = data.dataset.info, data.task
    if task == "tree_language":
        return _evaluate_tree(model, data, name)
    total, count, correct, graded = 0.0, 0, 0, 0
    for rows in _chunks(split, data.dataset.d_vocab):
        tokens, lengths = split.padded(rows, data.device)
        logits = model(tokens)
        mask = target_mask(lengths, None, tokens.shape[1])
        each, mask = lm_losses(logits, tokens, mask)
        total += float(each.sum())
        count += int(mask.sum())
        ar = torch.arange(len(rows), device=data.device)
        if task == "question_formation":
            tgt = torch.as_tensor(split.target[rows], device=data.device)
            gold = tokens[ar, tgt]
            aux = torch.as_tensor(info["aux_ids"], device=data.device)
            asks = torch.isin(gold, aux)
            choice = aux[logits[ar, tgt - 1][:, aux].argmax(-1)]
            correct += int(((choice == gold) & asks).sum())
            graded += int(asks.sum())
        elif task == "tense_inflection":
            tgt = torch.as_tensor(split.target[rows], device=data.device)
            start = torch.as_tensor(split.answer_start[rows], device=data.device)
            pred = _greedy_targets(model, tokens, start, tgt)
            correct += int((pred == tokens[ar, tgt]).sum())
            graded += len(rows)
        else:
            close = torch.as_tensor(info["close_ids"], device=data.device)
            nxt = tokens[:, 1:]
            need = torch.isin(nxt, close) & mask
            choice = close[logits[:, :-1][..., close].argmax(-1)]
            correct += int(((choice == nxt) & need).sum())
            graded += int(need.sum())
    return {"loss": total / max(count, 1), "acc": correct / graded if graded else float("nan")}


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


def _evaluate_tree(model, data: SeqData, name: str) -> dict:
    """A tree-language evaluation set: loss, Bayes agreement (``acc``), top-1 accuracy and the
    per-level scores."""
    split = data.evals[name]
    tokens = split.tokens.reshape(len(split), -1)
    logp = tree_logprobs(model, tokens, data.device, data.dataset.d_vocab)
    nxt = tokens[:, 1:]
    obs = np.take_along_axis(logp, nxt[..., None], -1)[..., 0]
    refs, top = data.refs[name]
    need = data.dataset.info["layout"].need
    scores = tree_language.score_levels(logp, tokens, refs, need, top)
    return {
        "loss": float(-obs.mean()),
        "acc": scores.pop("agree"),
        "top1": float((logp.argmax(-1) == nxt)[:, need[1:] >= 0].mean()),
        "levels": scores,
    }


def eval_rows(cfg: Config, state, data: SeqData, lr: float) -> list[dict]:
    """The metrics row of the one seed in ``state`` (see the module docstring for the columns)."""
    params = {n: p.detach().squeeze(0) for n, p in zip(state.names, state.params, strict=True)}
    model = state.model
    was = model.training
    model.eval()
    try:

        def run(tokens: torch.Tensor) -> torch.Tensor:
            return functional_call(model, params, (tokens,))

        out = {name: evaluate_sequences(run, data, name) for name in ("train", "test", "gen")}
    finally:
        model.train(was)
    wn = float(sum(torch.sum(p.double() ** 2) for p in params.values()))
    extra = {}
    if data.task == "tree_language":
        extra["train_top1"] = out["train"]["top1"]
        for split in ("train", "test"):
            extra.update({f"{k}_{split}": v for k, v in out[split]["levels"].items()})
    return [
        {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": out["train"]["loss"],
            "train_acc": out["train"]["acc"],
            "test_loss": out["test"]["loss"],
            "test_acc": out["test"]["acc"],
            "id_acc": out["test"]["acc"],
            "gen_loss": out["gen"]["loss"],
            "gen_acc": out["gen"]["acc"],
            "weight_norm_sq": wn,
            "lr": lr,
            "wall_s": state.wall_s,
            **extra,
        }
    ]
