"""The dataset every task builds: the complete example table, labels and a seeded split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """All examples of a task.

    ``tokens`` (N, n_ctx) int64: the input sequence, whose last token is '=' and whose label is read
    out at that last position. ``labels`` (N,) int64 are token ids in ``[0, n_classes)``.
    ``d_vocab`` counts input tokens ('=' included). ``operands`` (N, 2) holds (a, b) for binary
    tasks (None otherwise) and ``modulus`` is p for modular tasks, so measures can lay the examples
    on the (a, b) grid.
    """

    name: str
    tokens: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray
    d_vocab: int
    n_classes: int
    operands: np.ndarray | None = None
    modulus: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_ctx(self) -> int:
        return int(self.tokens.shape[1])


def split_indices(n: int, train_fraction: float, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``range(n)``; both parts sorted, at least one example in each.

    The train size is ``int(train_fraction * n)`` (rounded down, as Nanda et al. 2023 do: 3,830
    of the 12,769 pairs at 30 %).
    """
    rng = np.random.default_rng(data_seed)
    order = rng.permutation(n)
    n_train = min(max(int(train_fraction * n), 1), n - 1)
    return np.sort(order[:n_train]), np.sort(order[n_train:])
