"""Training data made of fixed-length examples with one label each (the algorithmic tasks):
every seed's train and test examples stacked, full-batch or seeded mini-batch steps, and the
evaluation row of ``metrics.parquet``.

This is one implementation of the data the training core trains on
(:class:`grokscope.train.core.CoreData`); a kind of study that reads its answer at the last
position of fixed-length inputs uses it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grokscope.config import Config, ConfigError
from grokscope.models import weight_norm_sq
from grokscope.tasks import Dataset
from grokscope.train.core import TrainState, evaluate_stacked, stacked_forward
from grokscope.train.losses import loss_function


@dataclass
class ExampleData:
    """Each seed's train and test examples, stacked: x (K, n, n_ctx), y (K, n)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    batch_size: int = 0
    # the mini-batch orders of one epoch, by run index: (epoch, {run: permutation})
    _orders: tuple[int, dict[int, torch.Tensor]] = field(default=(-1, {}), repr=False)

    @classmethod
    def from_datasets(
        cls, datasets: list[Dataset], device: torch.device, batch_size: int = 0
    ) -> ExampleData:
        def stack(get) -> torch.Tensor:
            return torch.stack([torch.as_tensor(get(ds), dtype=torch.int64) for ds in datasets])

        try:
            parts = [
                stack(lambda ds: ds.tokens[ds.train_idx]),
                stack(lambda ds: ds.labels[ds.train_idx]),
                stack(lambda ds: ds.tokens[ds.test_idx]),
                stack(lambda ds: ds.labels[ds.test_idx]),
            ]
        except RuntimeError as e:
            raise ConfigError(f"the seeds' datasets have different sizes: {e}") from None
        return cls(*(p.to(device) for p in parts), batch_size=batch_size)

    @classmethod
    def for_batch(cls, cfgs: list[Config], datasets: list, device: torch.device) -> ExampleData:
        """The data of a batch of seeds of one config (the core's ``make_data``)."""
        return cls.from_datasets(datasets, device, cfgs[0].optim.batch_size)

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0 or self.batch_size >= self.n_train

    @property
    def steps_per_epoch(self) -> int:
        return 1 if self.full_batch else math.ceil(self.n_train / self.batch_size)

    def select(self, slots: list[int]) -> ExampleData:
        """The data of the given slots only."""
        idx = torch.as_tensor(slots, device=self.train_x.device)
        parts = (self.train_x, self.train_y, self.test_x, self.test_y)
        return ExampleData(*(t.index_select(0, idx) for t in parts), self.batch_size, self._orders)

    def _order(self, cfgs: list[Config], run: int, epoch: int) -> torch.Tensor:
        """Run ``run``'s mini-batch order for ``epoch``, seeded by its model seed and the
        epoch (so a seed sees the same batches alone, in any batch, and after a resume)."""
        if self._orders[0] != epoch:
            self._orders = (epoch, {})
        orders = self._orders[1]
        if run not in orders:
            gen = torch.Generator().manual_seed(cfgs[run].train.seed * 1_000_003 + epoch)
            orders[run] = torch.randperm(self.n_train, generator=gen)
        return orders[run]

    def batch(
        self, cfgs: list[Config], state: TrainState, index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (K, b, n_ctx) and labels (K, b) of step ``index`` of the state's epoch: the
        whole training set, or each seed's own mini-batch."""
        if self.full_batch:
            return self.train_x, self.train_y
        start, bs = index * self.batch_size, self.batch_size
        orders = [self._order(cfgs, run, state.epoch) for run in state.runs]
        idx = torch.stack([o[start : start + bs] for o in orders])
        idx = idx.to(self.train_x.device)
        x = torch.gather(self.train_x, 1, idx.unsqueeze(-1).expand(-1, -1, self.train_x.shape[2]))
        return x, torch.gather(self.train_y, 1, idx)

    def losses(self, cfgs: list[Config], state: TrainState, index: int) -> torch.Tensor:
        """Each seed's training loss (K,) on step ``index`` of the epoch."""
        x, y = self.batch(cfgs, state, index)
        return loss_function(cfgs[state.runs[0]].optim.loss)(stacked_forward(state, x), y)

    def eval_rows(self, cfgs: list[Config], state: TrainState, lr: float) -> list[dict]:
        """One metrics row per seed: loss and accuracy on the train and test examples, the
        squared weight norm, the learning rate, the softmax-collapse shares."""
        loss = cfgs[state.runs[0]].optim.loss
        tr = evaluate_stacked(state, self.train_x, self.train_y, loss)
        te = evaluate_stacked(state, self.test_x, self.test_y, loss)
        return [
            {
                "epoch": state.epoch,
                "step": state.step,
                "train_loss": tr[s]["loss"],
                "train_acc": tr[s]["acc"],
                "test_loss": te[s]["loss"],
                "test_acc": te[s]["acc"],
                "weight_norm_sq": weight_norm_sq(p.detach()[s] for p in state.params),
                "lr": lr,
                **tr[s]["collapse"],
                "wall_s": state.wall_s,
            }
            for s in range(state.k)
        ]
