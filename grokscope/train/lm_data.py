"""Language-model training data for the core: bucketed batches of variable-length lines, the
next-token loss, and the evaluation frame every language-model kind shares.

Batches without wasted padding (bucketing): each pass over the training set is a seeded
permutation, cut into pools of :data:`POOL_BATCHES` batches; a pool is sorted by length and cut
into batches, and the batches of a pass are shuffled. A batch is padded to its own longest
sequence, and sequences of similar length travel together, so padding is a few percent of the
tokens instead of the third or more a random batch padded to its maximum carries. The batch of a
step is a function of (model seed, step) alone, so a resumed run sees the batches the
uninterrupted run saw.

One epoch of the training loop is one optimizer step (the ``epoch`` and ``step`` columns are
equal; ``train.epochs`` is the step budget), the unit in which Murty et al. (2023) report
structural grokking.

Each evaluation reports, for a fixed slice of the training set (as many lines as the
in-distribution test set), the in-distribution test set and the generalization set: the
language-model loss (mean per predicted token, float64) and the kind's accuracy
(:meth:`SeqData.evaluate`, which a kind overrides). ``id_acc`` is the test set's accuracy (also
``test_acc``), ``gen_acc`` the generalization set's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from grokscope.config import Config, ConfigError
from grokscope.models import weight_norm_sq
from grokscope.tasks.sequence import SequenceDataset, SequenceSplit
from grokscope.train.core import TrainState

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
    sentence_len: np.ndarray  # words of each line's input sentence

    @classmethod
    def of(cls, split: SequenceSplit, rows: np.ndarray | None = None) -> SplitTensors:
        """The split's lines ``rows`` (all of them by default: its own arrays, not copied)."""
        if rows is None:
            return cls(
                split.tokens, split.offsets, split.lengths, split.answer_start, split.target,
                split.sentence_len,
            )  # fmt: skip
        idx = rows
        seqs = [split.sequence(int(i)) for i in idx]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        return cls(
            flat, offsets, lengths, split.answer_start[idx], split.target[idx],
            split.sentence_len[idx],
        )  # fmt: skip

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
    """A language-model task's data for the training core: the training set (bucketed batches)
    and the evaluation sets. One seed at a time (K = 1): the variable-length batches of
    different seeds would not stack.

    A kind of study subclasses it to say what its accuracy is (:meth:`grade`, or the whole of
    :meth:`evaluate`) and which columns it adds (:meth:`extra_columns`); the loss, the batches
    and the row frame are shared."""

    dataset: SequenceDataset
    task: str  # the config's task name
    device: torch.device
    batch_size: int
    seed: int
    loss_on: str
    train: SplitTensors
    evals: dict[str, SplitTensors]
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
        return cls(
            dataset=ds,
            task=cfg.task.name,
            device=device,
            batch_size=cfg.optim.batch_size,
            seed=cfg.train.seed,
            loss_on=cfg.optim.loss_on,
            train=SplitTensors.of(train),
            evals=evals,
        )

    @classmethod
    def for_batch(cls, cfgs: list[Config], datasets: list, device: torch.device) -> SeqData:
        """The data of a batch (of one seed: sequence runs train one at a time)."""
        if len(cfgs) != 1:
            raise ConfigError("sequence tasks train one seed at a time (batches of one)")
        return cls.from_dataset(cfgs[0], datasets[0], device)

    @property
    def steps_per_epoch(self) -> int:
        return 1

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

    def losses(self, cfgs: list[Config], state: TrainState, index: int) -> torch.Tensor:
        """The language-model loss (1,) of the batch of ``state.step``. Dropout draws from a
        generator seeded by (model seed, step), so a resumed run repeats the uninterrupted one."""
        torch.manual_seed(cfgs[state.runs[0]].train.seed * 1_000_003 + state.step)
        return train_loss(state.model, _params(state), self, state.step).reshape(1)

    # -- evaluation ------------------------------------------------------------------------------

    def grade(
        self, logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, rows: np.ndarray,
        split: SplitTensors, model,
    ) -> dict[str, int]:  # fmt: skip
        """Counts on one padded chunk: ``correct`` and ``graded`` of the kind's accuracy, and any
        other count a kind keeps (each reported as its share of ``graded``); none by default."""
        return {"correct": 0, "graded": 0}

    @torch.no_grad()
    def evaluate(self, model, name: str) -> dict:
        """Loss (mean over predicted tokens, float64), the kind's accuracy (:meth:`grade`) and
        the share of every other count it keeps, on one evaluation set."""
        split = self.evals[name]
        total, count, counts = 0.0, 0, {}
        for rows in _chunks(split, self.dataset.d_vocab):
            tokens, lengths = split.padded(rows, self.device)
            logits = model(tokens)
            mask = target_mask(lengths, None, tokens.shape[1])
            each, mask = lm_losses(logits, tokens, mask)
            total += float(each.sum())
            count += int(mask.sum())
            for key, n in self.grade(logits, tokens, mask, rows, split, model).items():
                counts[key] = counts.get(key, 0) + n
        graded = counts.pop("graded", 0)
        shares = {k: v / graded if graded else float("nan") for k, v in counts.items()}
        return {"loss": total / max(count, 1), "acc": shares.pop("correct"), **shares}

    def extra_columns(self, out: dict[str, dict]) -> dict:
        """Columns a kind adds to the row from the evaluations ``out`` (by split name)."""
        return {}

    def eval_rows(self, cfgs: list[Config], state: TrainState, lr: float) -> list[dict]:
        """The metrics row of the one seed in ``state`` (see the module docstring)."""
        params = {n: p.detach() for n, p in _params(state).items()}
        model = state.model
        was = model.training
        model.eval()
        try:

            def run(tokens: torch.Tensor) -> torch.Tensor:
                return functional_call(model, params, (tokens,))

            out = {name: self.evaluate(run, name) for name in ("train", "test", "gen")}
        finally:
            model.train(was)
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
                "weight_norm_sq": weight_norm_sq(params.values()),
                "lr": lr,
                "wall_s": state.wall_s,
                **self.extra_columns(out),
            }
        ]


def _params(state: TrainState) -> dict[str, torch.Tensor]:
    """The one seed's parameters, unstacked views."""
    return {n: p.squeeze(0) for n, p in zip(state.names, state.params, strict=True)}


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


