"""Language-model training data for the core: batches of variable-length lines for K stacked
seeds, the next-token loss, and the evaluation frame every language-model kind shares.

Batches (:mod:`grokscope.train.lm_schedule`): a schedule of length classes shared by the seeds
of a batch fixes each step's padded width; each seed reads its own lines of that class. So K
seeds stack into one computation, padding stays a few percent of the tokens (a random batch
padded to its longest line carries a third or more), and a seed's batch at a step is a function
of (its data, batch size, schedule seed, its model seed, step) alone: the same in a batch as
alone, and in a resumed run as in the uninterrupted one. The schedule seed is ``task.data_seed``
(the seeds of one batch share their data).

The training pass runs every seed's stacked weights together
(:meth:`grokscope.models.lm.LMTransformer.stacked_train_logits`), with dropout drawn per seed
from a generator seeded by (model seed, step), so a seed's masks do not depend on its batch.

One epoch of the training loop is one optimizer step (the ``epoch`` and ``step`` columns are
equal; ``train.epochs`` is the step budget), the unit in which Murty et al. (2023) report
structural grokking.

Each evaluation reports, per seed, for a fixed slice of the training set (as many lines as the
in-distribution test set), the in-distribution test set and the generalization set: the
language-model loss (mean per predicted token, float64) and the kind's accuracy
(:meth:`SeqData.evaluate`, which a kind overrides). ``id_acc`` is the test set's accuracy (also
``test_acc``), ``gen_acc`` the generalization set's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from grokscope.config import Config, ConfigError
from grokscope.models import weight_norm_sq
from grokscope.models.lm import SeedDropout
from grokscope.tasks.sequence import SequenceDataset, SequenceSplit
from grokscope.train.core import TrainState
from grokscope.train.lm_schedule import LengthSchedule

# logits per evaluation forward pass (tokens x vocabulary): 2^24 float64 values, 128 MB
EVAL_LOGITS = 1 << 24


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

    def padded(
        self, rows: np.ndarray, device: torch.device, width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, T) right-padded with 0 to ``width`` (default: the longest of ``rows``), and
        the lengths (B,)."""
        lengths = self.lengths[rows]
        width = int(lengths.max()) if width is None else width
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


def check_one_dataset(cfgs: list[Config]) -> None:
    """ConfigError unless the seeds share their dataset (``task.data_seed``): they share its
    length schedule, and a seed alone must read what it reads in the batch."""
    data_seeds = sorted({c.task.data_seed for c in cfgs})
    if len(data_seeds) > 1:
        raise ConfigError(
            "language-model seeds train together only on one dataset: task.data_seed "
            f"differs in this batch ({', '.join(map(str, data_seeds))})"
        )


@dataclass
class SeqData:
    """A language-model task's data for the training core: the training set (the shared
    length-class schedule, per-seed lines) and the evaluation sets, for the seeds ``seeds``
    (model seeds, one per slot of the batch).

    A kind of study subclasses it to say what its accuracy is (:meth:`grade`, or the whole of
    :meth:`evaluate`) and which columns it adds (:meth:`extra_columns`); the loss, the batches
    and the row frame are shared."""

    dataset: SequenceDataset
    task: str  # the config's task name
    device: torch.device
    batch_size: int
    seeds: list[int]
    loss_on: str
    dropout: float
    train: SplitTensors
    evals: dict[str, SplitTensors]
    schedule: LengthSchedule

    @classmethod
    def from_dataset(cls, cfg: Config, ds: SequenceDataset, device: torch.device) -> SeqData:
        """The data of one seed (``cfg.train.seed``)."""
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
            seeds=[cfg.train.seed],
            loss_on=cfg.optim.loss_on,
            dropout=cfg.model.dropout,
            train=SplitTensors.of(train),
            evals=evals,
            schedule=LengthSchedule(train.lengths, cfg.optim.batch_size, cfg.task.data_seed),
        )

    @classmethod
    def for_batch(cls, cfgs: list[Config], datasets: list, device: torch.device) -> SeqData:
        """The data of a batch of seeds of one dataset (``task.data_seed`` equal: the seeds
        share their lines and their length schedule)."""
        check_one_dataset(cfgs)
        data = cls.from_dataset(cfgs[0], datasets[0], device)
        data.seeds = [c.train.seed for c in cfgs]
        return data

    @property
    def steps_per_epoch(self) -> int:
        return 1

    def batch_rows(self, step: int, slot: int = 0) -> np.ndarray:
        """Line indices of the training batch of the seed in ``slot`` at ``step``."""
        return self.schedule.rows(self.seeds[slot], step)

    def select(self, slots: list[int]) -> SeqData:
        return replace(self, seeds=[self.seeds[s] for s in slots])

    def losses(self, cfgs: list[Config], state: TrainState, index: int) -> torch.Tensor:
        """Each seed's language-model loss (K,) on its batch of ``state.step``."""
        params = dict(zip(state.names, state.params, strict=True))
        return train_losses(state.model, params, self, state.step)

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
        """The metrics row of every seed in ``state`` (see the module docstring)."""
        return [self._eval_row(state, slot, lr) for slot in range(state.k)]

    def _eval_row(self, state: TrainState, slot: int, lr: float) -> dict:
        params = {n: p.detach()[slot] for n, p in zip(state.names, state.params, strict=True)}
        model = state.model
        was = model.training
        model.eval()
        try:

            def run(tokens: torch.Tensor) -> torch.Tensor:
                return functional_call(model, params, (tokens,))

            out = {name: self.evaluate(run, name) for name in ("train", "test", "gen")}
        finally:
            model.train(was)
        return {
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


def lm_losses(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prediction cross-entropy (float64) of logits (B, T, V) against the next tokens, and the
    mask of the predictions that count."""
    pred = logits[:, :-1].double()
    nxt = tokens[:, 1:]
    each = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), nxt.reshape(-1), reduction="none")
    return each.view(nxt.shape) * mask, mask


def dropout_generators(seeds: list[int], step: int, device: torch.device) -> list[torch.Generator]:
    """One generator per seed for the dropout of ``step``, seeded by (model seed, step): a seed
    draws the same masks in any batch, and a resumed run the uninterrupted run's."""
    return [torch.Generator(device=device).manual_seed(s * 1_000_003 + step) for s in seeds]


def train_losses(model, params: dict[str, torch.Tensor], data: SeqData, step: int) -> torch.Tensor:
    """Each seed's mean next-token loss (K,) (float64) on its training batch of ``step``, over
    the predictions that count (every token, or the answer span with ``optim.loss_on =
    answer``); ``params`` stacked (name -> (K, *shape)), slot k holding seed ``data.seeds[k]``."""
    width = data.schedule.width(step)
    toks, lens, starts = [], [], []
    for slot in range(len(data.seeds)):
        rows = data.batch_rows(step, slot)
        tokens, lengths = data.train.padded(rows, data.device, width)
        toks.append(tokens)
        lens.append(lengths)
        if data.loss_on == "answer":
            starts.append(torch.as_tensor(data.train.answer_start[rows], device=data.device))
    tokens, lengths = torch.stack(toks), torch.cat(lens)
    k = tokens.shape[0]
    start = torch.cat(starts) if starts else None
    mask = target_mask(lengths, start, width)
    gens = dropout_generators(data.seeds, step, data.device) if model.training else None
    drop = SeedDropout(data.dropout, gens)  # no dropout for a model in eval mode
    logits = model.stacked_train_logits(params, tokens, drop)
    each, mask = lm_losses(logits.flatten(0, 1), tokens.flatten(0, 1), mask)
    return each.view(k, -1).sum(1) / mask.view(k, -1).sum(1)


def train_loss(model, params: dict, data: SeqData, step: int) -> torch.Tensor:
    """The mean next-token loss of one seed (``data.seeds[0]``, unstacked ``params``) on its
    training batch of ``step`` (:func:`train_losses`)."""
    stacked = {n: p.unsqueeze(0) for n, p in params.items()}
    return train_losses(model, stacked, replace(data, seeds=data.seeds[:1]), step)[0]


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
