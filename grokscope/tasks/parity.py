"""Sparse parity: the label is the parity of k hidden bits out of n (Barak et al. 2022).

A fixed sample of distinct bit strings makes it a finite classification task that can be
memorized and then grokked (Merrill, Tsilivis & Shukla 2023 use n = 40, k = 3).
"""

from __future__ import annotations

import numpy as np

from grokscope.tasks.dataset import Dataset, split_indices


def sparse_parity_task(
    n_bits: int, k_bits: int, n_samples: int, train_fraction: float, data_seed: int
) -> Dataset:
    """``n_samples`` distinct random bit strings as tokens ``b_1 .. b_n =`` ('=' = 2).

    The relevant bits are a seeded random subset of size k (stored in ``info['relevant_bits']``);
    the label is their sum mod 2.
    """
    if n_bits < 63 and n_samples > 2**n_bits:
        raise ValueError(f"cannot draw {n_samples} distinct strings of {n_bits} bits")
    rng = np.random.default_rng(data_seed)
    relevant = np.sort(rng.choice(n_bits, size=k_bits, replace=False))
    seen: set[bytes] = set()
    rows: list[np.ndarray] = []
    while len(rows) < n_samples:
        row = rng.integers(0, 2, size=n_bits, dtype=np.int64)
        key = row.astype(np.uint8).tobytes()
        if key not in seen:
            seen.add(key)
            rows.append(row)
    bits = np.stack(rows)
    labels = bits[:, relevant].sum(axis=1) % 2
    tokens = np.concatenate([bits, np.full((n_samples, 1), 2, dtype=np.int64)], axis=1)
    train_idx, test_idx = split_indices(n_samples, train_fraction, data_seed)
    return Dataset(
        name=f"sparse parity n={n_bits} k={k_bits}",
        tokens=tokens,
        labels=labels.astype(np.int64),
        train_idx=train_idx,
        test_idx=test_idx,
        d_vocab=3,
        n_classes=2,
        info={"relevant_bits": relevant.tolist()},
    )
