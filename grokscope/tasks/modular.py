"""Binary operations modulo p: the full list of Power et al. (2022), section A.1."""

from __future__ import annotations

import numpy as np

from grokscope.tasks.dataset import Dataset, split_indices


def modular_inverse(b: np.ndarray, p: int) -> np.ndarray:
    """b^(p-2) mod p (Fermat), the inverse of b != 0 for prime p."""
    return np.array([pow(int(x), p - 2, p) for x in np.ravel(b)], dtype=np.int64).reshape(
        np.shape(b)
    )


def modular_labels(op: str, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """Vectorised labels of ``op`` on operand arrays (int64 arithmetic, values < p^3 fit)."""
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if op == "x+y":
        out = a + b
    elif op == "x-y":
        out = a - b
    elif op == "x*y":
        out = a * b
    elif op == "x/y":
        out = a * modular_inverse(b, p)
    elif op == "x^2+y^2":
        out = a * a + b * b
    elif op == "x^2+xy+y^2":
        out = a * a + a * b + b * b
    elif op == "x^2+xy+y^2+x":
        out = a * a + a * b + b * b + a
    elif op == "x^3+xy":
        out = a * a % p * a + a * b
    elif op == "x^3+xy^2+y":
        out = a * a % p * a + a * (b * b % p) + b
    elif op == "x/y if y odd else x-y":
        odd = b % 2 == 1
        inv = modular_inverse(np.where(odd, b, 1), p)
        out = np.where(odd, a * inv, a - b)
    else:
        raise ValueError(f"unknown modular op {op!r}")
    return np.mod(out, p)


def modular_task(op: str, p: int, train_fraction: float, data_seed: int) -> Dataset:
    """All pairs (a, b) in [0, p)^2 (b != 0 for division) as tokens ``a b =`` with '=' = p.

    Examples are ordered a-major (index a * p + b for the full grid), as the (a, b) grid that the
    Fourier measures of Nanda et al. (2023) use.
    """
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "x/y":
        keep = b != 0
        a, b = a[keep], b[keep]
    labels = modular_labels(op, a, b, p)
    tokens = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int64)
    train_idx, test_idx = split_indices(len(labels), train_fraction, data_seed)
    return Dataset(
        name=f"modular {op} mod {p}",
        tokens=tokens,
        labels=labels.astype(np.int64),
        train_idx=train_idx,
        test_idx=test_idx,
        d_vocab=p + 1,
        n_classes=p,
        operands=np.stack([a, b], axis=1).astype(np.int64),
        modulus=p,
        info={"op": op, "p": p},
    )
