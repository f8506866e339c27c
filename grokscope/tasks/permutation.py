"""Composition in the symmetric group S_n (Power et al. 2022 use S5)."""

from __future__ import annotations

import itertools

import numpy as np

from grokscope.tasks.dataset import Dataset, split_indices


def permutations(n: int) -> np.ndarray:
    """All n! permutations of range(n) in lexicographic order; row i is element i."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def compose(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(x o y)(i) = x[y[i]]: apply y first, then x. Works row-wise on (..., n) arrays."""
    return np.take_along_axis(x, y, axis=-1)


def inverse(x: np.ndarray) -> np.ndarray:
    """The inverse permutation, row-wise."""
    return np.argsort(x, axis=-1)


def permutation_task(op: str, n: int, train_fraction: float, data_seed: int) -> Dataset:
    """All pairs (a, b) of S_n elements as tokens ``a b =`` ('=' = n!); label x*y or x*y*x^-1."""
    perms = permutations(n)
    size = len(perms)
    index = {tuple(row): i for i, row in enumerate(perms)}
    a, b = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    a, b = a.ravel(), b.ravel()
    result = compose(perms[a], perms[b])
    if op == "x*y*x^-1":
        result = compose(result, inverse(perms[a]))
    elif op != "x*y":
        raise ValueError(f"unknown permutation op {op!r}")
    labels = np.array([index[tuple(r)] for r in result], dtype=np.int64)
    tokens = np.stack([a, b, np.full_like(a, size)], axis=1).astype(np.int64)
    train_idx, test_idx = split_indices(len(labels), train_fraction, data_seed)
    return Dataset(
        name=f"S{n} {op}",
        tokens=tokens,
        labels=labels,
        train_idx=train_idx,
        test_idx=test_idx,
        d_vocab=size + 1,
        n_classes=size,
        operands=np.stack([a, b], axis=1).astype(np.int64),
        info={"op": op, "group_n": n},
    )
