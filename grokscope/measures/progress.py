"""Progress measures of Nanda et al. (ICLR 2023), evaluated over the full p x p grid.

Nanda, Chan, Lieberum, Smith & Steinhardt, "Progress measures for grokking via mechanistic
interpretability", section 5, track the formation of the Fourier circuit with:

* **restricted loss** — the logits keep only their components along the key directions
  cos(w_k (a + b)) and sin(w_k (a + b)) (per output class, over the grid), plus the mean logit
  ("bias correction"); cross-entropy over *all* pairs. Low when the key-frequency circuit alone
  computes the answer.
* **excluded loss** — the logits with those key components removed (no bias correction);
  cross-entropy on the *training* pairs. It rises when the network starts to rely on the circuit
  to fit the training data.
* **Gini** (Hurley & Rickard 2009) of the norms of the Fourier components of ``W_E`` (over the
  input residue) and of ``W_L = W_out W_U`` (over the output class): sparsity in frequency.
* **sum of squared weights** over all parameters.

Conventions (documented choices):

* Logits are the model's float32 outputs cast to float64; every loss is the float64
  cross-entropy over **all** ``d_vocab_out`` logits ('=' included), exactly as training computes
  it, so ``train_loss`` / ``test_loss`` equal the run's metrics.
* The projections act on the (a, b) grid separately for every output column; for the restricted
  and excluded losses they are applied to all ``d_vocab_out`` columns (the '=' column too) and
  the loss is then taken as above. Purely descriptive Fourier quantities (variance explained,
  spectra) use the first p columns only (the '=' class dropped).
* "Mean logit" is the mean of each class's logit over the p^2 pairs — the constant direction on
  the grid. (A per-example mean over classes would be a softmax no-op and change nothing.)
* ``sign`` is +1 for (a + b) mod p and -1 for (a - b) mod p, whose circuit uses
  cos / sin(w_k (a - b)) instead.
* Multiplication and division mod a prime p are addition and subtraction of discrete logarithms:
  with g a primitive root, a = g^i and b = g^j give a * b = g^(i + j), exponents mod p - 1. For
  x*y and x/y the measures therefore live on the (p - 1) x (p - 1) grid of nonzero operands
  ordered by their logarithms, with frequencies of Z_(p-1) (a :class:`GridView`); the pairs with
  a zero operand (answer 0, or 0 / b) are left out of the restricted and excluded losses. Networks
  trained on x*y are reported to learn exactly this circuit in the log basis (Gromov 2023 on
  modular arithmetic; the key frequencies then show in the log-ordered embedding).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from grokscope.config import is_prime
from grokscope.measures.fourier import (
    component_norms,
    embed_fourier,
    project_sum_directions,
    unembed_fourier,
)
from grokscope.models import HookedModule
from grokscope.tasks import Dataset

FOURIER_SIGNS = {"x+y": 1, "x-y": -1}
LOG_SIGNS = {"x*y": 1, "x/y": -1}
CHUNK = 16384


# -- running the model over the grid ---------------------------------------------------------------


@torch.no_grad()
def model_logits(model: HookedModule, tokens: np.ndarray) -> np.ndarray:
    """(N, d_vocab_out) float64 logits of ``model`` on every row of ``tokens`` (float32 forward,
    like training; cast to float64 afterwards)."""
    x = torch.as_tensor(tokens, dtype=torch.int64)
    parts = [model(x[i : i + CHUNK]).to(torch.float64) for i in range(0, len(x), CHUNK)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def answer_pass(
    model: HookedModule, tokens: np.ndarray, names: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, d_vocab_out) float64 logits and the named activations at the answer position (name
    -> (N, width), in the model's float32: a consumer that needs float64 converts the rows it
    reads) of ``model`` on every row of ``tokens``, from one forward pass per chunk of CHUNK
    rows (:meth:`HookedModule.answer_pass`): what the per-checkpoint measures read (logits, the
    neurons, the penultimate layer) without a pass each."""
    x = torch.as_tensor(tokens, dtype=torch.int64)
    parts = [model.answer_pass(x[i : i + CHUNK], names) for i in range(0, len(x), CHUNK)]

    def joined(ts: list[torch.Tensor]) -> np.ndarray:
        return (ts[0] if len(ts) == 1 else torch.cat(ts)).numpy()

    logits = joined([out for out, _ in parts]).astype(np.float64)
    return logits, {n: joined([got[n] for _, got in parts]) for n in names}


def neuron_activations(model: HookedModule, tokens: np.ndarray) -> np.ndarray:
    """(N, n_neurons) float64 activations of ``model.neuron_hook`` (last MLP layer after the
    non-linearity) at the position the answer is read from."""
    return answer_activations(model, tokens, model.neuron_hook)


@torch.no_grad()
def answer_activations(model: HookedModule, tokens: np.ndarray, hook: str) -> np.ndarray:
    """(N, width) float64 activation ``hook`` at the position the answer is read from, in
    chunks of CHUNK examples."""
    x = torch.as_tensor(tokens, dtype=torch.int64)
    parts = []
    for i in range(0, len(x), CHUNK):
        _, cache = model.run_with_cache(x[i : i + CHUNK], [hook])
        act = cache[hook]
        parts.append((act[:, -1] if act.ndim == 3 else act).to(torch.float64))
    return torch.cat(parts).numpy()


def fourier_sign(ds: Dataset) -> int | None:
    """+1 / -1 when ``ds`` is (a + b) / (a - b) mod p on the full a-major grid, else None."""
    if ds.modulus is None or ds.info.get("op") not in FOURIER_SIGNS:
        return None
    if len(ds.labels) != ds.modulus**2:
        return None
    return FOURIER_SIGNS[ds.info["op"]]


@dataclass(frozen=True)
class GridView:
    """The operand grid on which a modular task's Fourier measures are taken.

    ``rows`` index the dataset's examples in grid order (first operand major), ``n`` is the
    side of the grid (the group size whose frequencies 1..n // 2 are used), ``order[i]`` is the
    residue standing at grid index i, ``sign`` the s of the key directions cos / sin(w_k (i + s
    j)), and ``basis`` says which: residues for sums, discrete logs base ``generator``.
    """

    rows: np.ndarray
    n: int
    order: np.ndarray
    sign: int
    basis: str
    generator: int | None = None

    def take(self, values: np.ndarray) -> np.ndarray:
        """The view's rows of a per-example table (no copy when the view is the whole dataset
        in order, as for x + y and x - y)."""
        values = np.asarray(values)
        if len(values) == len(self.rows) and np.array_equal(self.rows, np.arange(len(values))):
            return values
        return values[self.rows]

    def positions(self, idx: np.ndarray, n_examples: int) -> np.ndarray:
        """Positions in the view of the dataset rows ``idx`` that lie on it, in idx order."""
        where = np.full(n_examples, -1)
        where[self.rows] = np.arange(len(self.rows))
        pos = where[np.asarray(idx)]
        return pos[pos >= 0]


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group mod the prime ``p``."""
    n, factors, d = p - 1, set(), 2
    m = n
    while d * d <= m:
        while m % d == 0:
            factors.add(d)
            m //= d
        d += 1
    if m > 1:
        factors.add(m)
    for g in range(1, p):
        if all(pow(g, n // q, p) != 1 for q in factors):
            return g
    raise ValueError(f"{p} has no primitive root (is it prime?)")


def grid_view(ds: Dataset) -> GridView | None:
    """The grid of ``ds`` for Fourier measures: the discrete-log grid of nonzero operands for
    x*y and x/y mod a prime, the residue grid for any other op; None unless ``ds`` is modular
    arithmetic holding every pair of that grid."""
    p = ds.modulus
    if p is None or ds.operands is None:
        return None
    p = int(p)
    at = np.full((p, p), -1)  # at[a, b]: the example of the pair (a, b)
    at[ds.operands[:, 0], ds.operands[:, 1]] = np.arange(len(ds.operands))
    op = ds.info.get("op")
    if op in LOG_SIGNS and is_prime(p):
        g = primitive_root(p)
        order = np.array([pow(g, i, p) for i in range(p - 1)])
        rows = at[order[:, None], order[None, :]].ravel()
        return GridView(rows, p - 1, order, LOG_SIGNS[op], f"discrete log base {g}", g)
    if (at < 0).any():
        return None
    return GridView(at.ravel(), p, np.arange(p), FOURIER_SIGNS.get(op, 1), "residues")


def fourier_view(ds: Dataset) -> GridView | None:
    """:func:`grid_view` when the Fourier circuit of Nanda et al. applies to ``ds`` (x + y and
    x - y over residues, x * y and x / y over discrete logs), else None."""
    view = grid_view(ds)
    if view is None or ds.info.get("op") not in {**FOURIER_SIGNS, **LOG_SIGNS}:
        return None
    if ds.info.get("op") in LOG_SIGNS and view.basis == "residues":
        return None  # p not prime: no cyclic group of units
    return view


def fourier_reason(ds: Dataset) -> str | None:
    """None when the Fourier-circuit measures apply to ``ds``; otherwise one line saying why not."""
    op = ds.info.get("op")
    if ds.modulus is None:
        return f"task '{ds.name}' is not modular arithmetic: no Fourier basis over Z_p"
    if op not in FOURIER_SIGNS and op not in LOG_SIGNS:
        return (
            f"op {op} is not a function of a + b, a - b (or of their discrete logs, x*y and "
            "x/y), so the Fourier circuit of Nanda et al. (2023) (key frequencies, restricted / "
            "excluded loss) does not apply"
        )
    if op in LOG_SIGNS and not is_prime(int(ds.modulus)):
        return f"op {op} needs a prime p for discrete logarithms; p = {ds.modulus}"
    if fourier_view(ds) is None:
        return "the dataset does not cover the full p x p grid"
    return None


# -- losses -----------------------------------------------------------------------------------


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean float64 cross-entropy (log-softmax over all columns), as training computes it
    (torch's float64 logsumexp: the same sums as NumPy's, with a vectorised exp several times
    faster, which matters at four losses per checkpoint over p^2 rows)."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float64))
    idx = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    picked = z.gather(1, idx[:, None])[:, 0]
    return float((torch.logsumexp(z, dim=1) - picked).mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose largest logit is the label."""
    return float(np.mean(np.asarray(logits).argmax(axis=1) == np.asarray(labels)))


def restricted_logits(logits: np.ndarray, p: int, freqs: Iterable[int], sign: int = 1):
    """Key-direction components of every class's grid logits plus that class's mean logit.

    ``logits``: (p * p, n_classes) a-major. Nanda et al. (2023), restricted loss.
    """
    logits = np.asarray(logits, dtype=np.float64)
    return project_sum_directions(logits, p, freqs, sign) + logits.mean(axis=0, keepdims=True)


def excluded_logits(logits: np.ndarray, p: int, freqs: Iterable[int], sign: int = 1):
    """The grid logits minus their key-direction components (no bias correction; Nanda et al.
    2023, excluded loss)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits - project_sum_directions(logits, p, freqs, sign)


def restricted_loss(
    logits: np.ndarray, labels: np.ndarray, p: int, freqs: Iterable[int], sign: int = 1
) -> float:
    """Cross-entropy of :func:`restricted_logits` over all p^2 pairs."""
    return cross_entropy(restricted_logits(logits, p, freqs, sign), labels)


def excluded_loss(
    logits: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    p: int,
    freqs: Iterable[int],
    sign: int = 1,
) -> float:
    """Cross-entropy of :func:`excluded_logits` on the training pairs only."""
    ex = excluded_logits(logits, p, freqs, sign)
    return cross_entropy(ex[train_idx], np.asarray(labels)[train_idx])


def logit_variance_explained(
    logits: np.ndarray, p: int, freqs: Iterable[int], sign: int = 1
) -> float:
    """Share of the centred logit variance of classes 0..p-1 (over the grid) that lies along the
    key directions: ||projection||^2 / ||logits - class means||^2."""
    z = np.asarray(logits, dtype=np.float64)[:, :p]
    centred = z - z.mean(axis=0, keepdims=True)
    total = float(np.square(centred).sum())
    if total == 0:
        return float("nan")
    return float(np.square(project_sum_directions(z, p, freqs, sign)).sum()) / total


# -- weights ----------------------------------------------------------------------------------


def gini(values: np.ndarray) -> float:
    """Gini coefficient of a non-negative vector (Hurley & Rickard 2009):
    G(c) = 1 - 2 sum_k (c_(k) / |c|_1) (N - k + 1/2) / N with c sorted ascending (k = 1..N).
    0 for a constant vector, 1 - 1/N for a one-hot; NaN for an all-zero vector."""
    c = np.sort(np.abs(np.asarray(values, dtype=np.float64).ravel()))
    n = c.size
    total = c.sum()
    if n == 0 or total == 0:
        return float("nan")
    k = np.arange(1, n + 1)
    return float(1 - 2 * np.sum((c / total) * (n - k + 0.5) / n))


def embedding_matrix(params: Mapping[str, np.ndarray], p: int) -> np.ndarray:
    """(p, d) the input map of residues 0..p-1: ``embed.W_E`` rows, or for a one-hot MLP the
    first-layer rows of operand a (``layers.0.W[:p]``)."""
    if "embed.W_E" in params:
        return np.asarray(params["embed.W_E"], dtype=np.float64)[:p]
    return np.asarray(params["layers.0.W"], dtype=np.float64)[:p]


def neuron_logit_matrix(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """W_L (n_neurons, d_vocab_out): the direct map from the last MLP layer's neurons to the
    logits. ``W_out @ W_U`` for a transformer (last block), ``W_U`` for the MLP."""
    W_U = np.asarray(params["unembed.W_U"], dtype=np.float64)
    outs = sorted(
        (int(k.split(".")[1]), k) for k in params if k.startswith("blocks.") and k.endswith("W_out")
    )
    if not outs:
        return W_U
    return np.asarray(params[outs[-1][1]], dtype=np.float64) @ W_U


def gini_embed(params: Mapping[str, np.ndarray], p: int, order: np.ndarray | None = None) -> float:
    """Gini of the Fourier-component norms of the embedding over the input residue
    (Nanda et al. 2023): near 1 when few frequencies are embedded. With ``order`` (residues in
    grid order, e.g. by discrete log) the rows are taken in that order, over Z_len(order)."""
    E = embedding_matrix(params, p)
    if order is not None:
        E = E[order]
    return gini(component_norms(embed_fourier(E, len(E))))


def gini_unembed(
    params: Mapping[str, np.ndarray], p: int, order: np.ndarray | None = None
) -> float:
    """Gini of the Fourier-component norms of W_L = W_out W_U over the output class (classes
    0..p-1, or the classes ``order`` in that order; Nanda et al. 2023)."""
    W_L = neuron_logit_matrix(params)[:, :p]
    if order is not None:
        W_L = W_L[:, order]
    coeffs = unembed_fourier(W_L, W_L.shape[1])  # (n_neurons, n)
    return gini(component_norms(coeffs.T))


def weight_norm_sq(params: Mapping[str, np.ndarray]) -> float:
    """Sum of squared weights over all parameters (float64)."""
    return float(sum(np.square(np.asarray(v, dtype=np.float64)).sum() for v in params.values()))


# -- one row ----------------------------------------------------------------------------------


def basic_row(logits: np.ndarray, ds: Dataset) -> dict[str, float]:
    """Train / test loss and accuracy from the logits of every example of ``ds``."""
    y = ds.labels
    tr, te = ds.train_idx, ds.test_idx
    return {
        "train_loss": cross_entropy(logits[tr], y[tr]),
        "test_loss": cross_entropy(logits[te], y[te]),
        "train_acc": accuracy(logits[tr], y[tr]),
        "test_acc": accuracy(logits[te], y[te]),
    }


def fourier_row(
    logits: np.ndarray, ds: Dataset, key_freqs: Iterable[int]
) -> dict[str, float | None]:
    """Restricted / excluded loss and variance explained for the key frequencies, on the grid of
    :func:`fourier_view`; None for all three when the Fourier circuit does not apply to ``ds`` or
    there are no key frequencies."""
    view = fourier_view(ds)
    freqs = list(key_freqs)
    if view is None or not freqs:
        return {"restricted_loss": None, "excluded_loss": None, "logit_var_explained": None}
    p = int(ds.modulus)
    z = view.take(np.asarray(logits, dtype=np.float64))
    labels = view.take(ds.labels)
    proj = project_sum_directions(z, view.n, freqs, view.sign)  # once, for all three measures
    mean = z.mean(axis=0, keepdims=True)
    tr = view.positions(ds.train_idx, len(ds.labels))
    centred = z[:, :p] - mean[:, :p]
    total = float(np.square(centred).sum())
    return {
        "restricted_loss": cross_entropy(proj + mean, labels),
        "excluded_loss": cross_entropy(z[tr] - proj[tr], labels[tr]),
        "logit_var_explained": (
            float(np.square(proj[:, :p]).sum()) / total if total > 0 else float("nan")
        ),
    }


def gini_row(params: Mapping[str, np.ndarray], ds: Dataset) -> dict[str, float | None]:
    """Embedding and W_L Gini for modular tasks (any op: residues index W_E rows and W_U
    columns), in the basis of :func:`fourier_view` (over discrete logs for x*y and x/y, over
    residues otherwise); None for other tasks."""
    if ds.modulus is None:
        return {"gini_embed": None, "gini_unembed": None}
    p = int(ds.modulus)
    view = fourier_view(ds)
    order = view.order if view is not None and view.generator is not None else None
    return {
        "gini_embed": gini_embed(params, p, order),
        "gini_unembed": gini_unembed(params, p, order),
    }
