"""Every label against a brute-force computation; splits are seeded and disjoint."""

import itertools

import numpy as np
import pytest

from grokscope.config import MODULAR_OPS, Config, TaskConfig, resolve
from grokscope.kinds import build_dataset
from grokscope.tasks import modular_task, permutation_task, sparse_parity_task


def brute(op: str, x: int, y: int, p: int) -> int | None:
    """Label by plain Python integer arithmetic (None where the op is undefined)."""

    def inv(v):
        return next(w for w in range(1, p) if (v * w) % p == 1)

    if op == "x+y":
        return (x + y) % p
    if op == "x-y":
        return (x - y) % p
    if op == "x*y":
        return (x * y) % p
    if op == "x/y":
        return None if y == 0 else (x * inv(y)) % p
    if op == "x^2+y^2":
        return (x**2 + y**2) % p
    if op == "x^2+xy+y^2":
        return (x**2 + x * y + y**2) % p
    if op == "x^2+xy+y^2+x":
        return (x**2 + x * y + y**2 + x) % p
    if op == "x^3+xy":
        return (x**3 + x * y) % p
    if op == "x^3+xy^2+y":
        return (x**3 + x * y**2 + y) % p
    if op == "x/y if y odd else x-y":
        return (x * inv(y)) % p if y % 2 == 1 else (x - y) % p
    raise AssertionError(op)


@pytest.mark.parametrize("op", MODULAR_OPS)
@pytest.mark.parametrize("p", [7, 97])
def test_modular_labels_match_brute_force(op, p):
    ds = modular_task(op, p, 0.3, data_seed=0)
    expected = {(x, y): brute(op, x, y, p) for x in range(p) for y in range(p)}
    expected = {k: v for k, v in expected.items() if v is not None}
    got = {(int(a), int(b)): int(lab) for (a, b), lab in zip(ds.operands, ds.labels, strict=False)}
    assert got == expected
    assert (ds.tokens[:, 2] == p).all() and (ds.tokens[:, :2] == ds.operands).all()
    assert ds.d_vocab == p + 1 and ds.n_classes == p


def test_modular_grid_order_is_a_major():
    ds = modular_task("x+y", 11, 0.3, 0)
    idx = 4 * 11 + 7
    assert tuple(ds.operands[idx]) == (4, 7) and ds.labels[idx] == 0


@pytest.mark.parametrize("op", ["x*y", "x*y*x^-1"])
@pytest.mark.parametrize("n", [3, 4])
def test_permutation_labels_match_brute_force(op, n):
    ds = permutation_task(op, n, 0.5, 0)
    elements = list(itertools.permutations(range(n)))
    assert ds.d_vocab == len(elements) + 1

    def comp(f, g):  # (f o g)(i) = f(g(i))
        return tuple(f[g[i]] for i in range(n))

    def inv(f):
        out = [0] * n
        for i, v in enumerate(f):
            out[v] = i
        return tuple(out)

    for (a, b), lab in zip(ds.operands, ds.labels, strict=False):
        x, y = elements[a], elements[b]
        want = comp(x, y) if op == "x*y" else comp(comp(x, y), inv(x))
        assert elements[lab] == want


def test_s5_default_size():
    ds = build_dataset(TaskConfig(name="permutation", op="x*y"))
    assert len(ds.labels) == 120 * 120 and ds.n_classes == 120


def test_sparse_parity_labels_and_distinct_inputs():
    ds = sparse_parity_task(n_bits=12, k_bits=3, n_samples=500, train_fraction=0.5, data_seed=3)
    bits = ds.tokens[:, :-1]
    rel = ds.info["relevant_bits"]
    assert len(rel) == 3 and len(set(rel)) == 3
    for row, lab in zip(bits, ds.labels, strict=False):
        assert lab == sum(int(row[i]) for i in rel) % 2
    assert len({r.tobytes() for r in bits}) == 500
    assert (ds.tokens[:, -1] == 2).all() and ds.d_vocab == 3


def test_split_seeded_disjoint_complete():
    a = modular_task("x+y", 31, 0.3, data_seed=1)
    b = modular_task("x+y", 31, 0.3, data_seed=1)
    c = modular_task("x+y", 31, 0.3, data_seed=2)
    assert np.array_equal(a.train_idx, b.train_idx)
    assert not np.array_equal(a.train_idx, c.train_idx)
    assert len(np.intersect1d(a.train_idx, a.test_idx)) == 0
    assert len(a.train_idx) + len(a.test_idx) == 31 * 31
    assert len(a.train_idx) == int(0.3 * 31 * 31)


def test_default_task_is_nanda_main_run():
    ds = build_dataset(resolve(Config()).task)
    assert len(ds.labels) == 12769 and len(ds.train_idx) == 3830
