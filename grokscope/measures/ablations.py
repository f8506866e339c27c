"""Fourier ablations: keep only the key frequencies, or remove one, and see what the loss does.

Nanda et al. (ICLR 2023), section 4.2 / appendix: replacing the logits or the MLP neuron
activations by their key-frequency part barely changes the loss of the grokked network, while
removing a single key frequency hurts it badly. Two targets:

* **logits** — per class over the grid: keep = the key directions cos / sin(w_k (a +- b)) plus
  the class mean (the restricted logits); remove k = subtract the directions of frequency k.
* **neurons** — the last MLP layer's activations at the answer position, per neuron over the
  grid: keep = the grid mean plus the eight 2-D Fourier terms of every key frequency
  ((const, cos/sin k), (cos/sin k, const), (cos/sin k, cos/sin k)); remove k = subtract the
  eight terms of k. The patched activations are fed through the rest of the model with
  :meth:`HookedModule.run_with_hooks` (float32, like the model), and the loss is taken as
  training does (float64 cross-entropy over all logits).

Every loss here is over all pairs of the grid (``loss``: the p^2 pairs for x +- y, the nonzero
operands for x * y and x / y, where the grid is ordered by discrete log) and over its test pairs
(``test_loss``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from grokscope.measures.fourier import fourier_basis, frequency_rows, project_sum_directions
from grokscope.measures.progress import cross_entropy, fourier_view, restricted_logits
from grokscope.models import HookedModule
from grokscope.tasks import Dataset


def frequency_mask(p: int, freqs: Iterable[int], const: bool = False) -> np.ndarray:
    """(p, p) bool mask of the 2-D Fourier terms that belong to the frequencies ``freqs``
    (the eight terms per k of Nanda et al. 2023); ``const`` adds the (const, const) term."""
    mask = np.zeros((p, p), dtype=bool)
    mask[0, 0] = const
    for k in freqs:
        rows = frequency_rows(p, int(k))
        mask[0, rows] = True
        mask[rows, 0] = True
        mask[np.ix_(rows, rows)] = True
    return mask


def filter_grid(values: np.ndarray, p: int, mask: np.ndarray) -> np.ndarray:
    """Keep only the 2-D Fourier terms in ``mask`` of every column of a (p * p, n) grid table
    (a-major); returns the reconstruction, same shape, float64."""
    F = fourier_basis(p)
    v = np.asarray(values, dtype=np.float64).reshape(p, p, -1)
    coeffs = np.einsum("ia,jb,abn->ijn", F, F, v, optimize=True)
    coeffs = coeffs * mask[:, :, None]
    out = np.einsum("ia,jb,ijn->abn", F, F, coeffs, optimize=True)
    return out.reshape(np.shape(values))


def keep_frequencies(values: np.ndarray, p: int, freqs: Iterable[int]) -> np.ndarray:
    """Grid mean plus the terms of ``freqs`` of every column of a (p * p, n) grid table."""
    return filter_grid(values, p, frequency_mask(p, freqs, const=True))


def remove_frequency(values: np.ndarray, p: int, k: int) -> np.ndarray:
    """A (p * p, n) grid table minus its eight frequency-k terms."""
    return np.asarray(values, dtype=np.float64) - filter_grid(values, p, frequency_mask(p, [k]))


def _losses(logits: np.ndarray, labels: np.ndarray, test: np.ndarray) -> dict[str, float]:
    return {
        "loss": cross_entropy(logits, labels),
        "test_loss": cross_entropy(logits[test], labels[test]),
    }


@torch.no_grad()
def patched_logits(model: HookedModule, tokens: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """(N, d_vocab_out) float64 logits on ``tokens`` (N, n_ctx) with the neuron activations at
    the answer position replaced by ``acts`` (N, n_neurons), all examples in one batch."""
    new = torch.as_tensor(acts, dtype=torch.float32)

    def patch(x: torch.Tensor, name: str) -> torch.Tensor:
        if x.ndim == 3:
            x = x.clone()
            x[:, -1] = new
            return x
        return new

    x = torch.as_tensor(tokens, dtype=torch.int64)
    logits = model.run_with_hooks(x, [(model.neuron_hook, patch)])[:, -1]  # read out at the end
    return logits.to(torch.float64).numpy()


def ablation_rows(
    logits: np.ndarray,
    acts: np.ndarray,
    model: HookedModule,
    ds: Dataset,
    key_freqs: Iterable[int],
) -> list[dict]:
    """One row per ablation: target (logits / neurons), ablation (none / keep_key / remove),
    freq (the removed frequency or None), loss (all pairs of the grid), test_loss.

    ``logits`` (N, d_vocab_out) and ``acts`` (N, n_neurons) are the unablated model's on every
    example of ``ds``. The grid is :func:`fourier_view`'s: all p^2 pairs for x +- y, the nonzero
    operands ordered by discrete log for x * y and x / y. Raises ValueError when the Fourier
    circuit does not apply.
    """
    view = fourier_view(ds)
    if view is None:
        raise ValueError(f"Fourier ablations need a Fourier circuit over the grid, not {ds.name}")
    n, sign = view.n, view.sign
    logits, acts = np.asarray(logits)[view.rows], np.asarray(acts)[view.rows]
    labels, tokens = np.asarray(ds.labels)[view.rows], np.asarray(ds.tokens)[view.rows]
    test = view.positions(ds.test_idx, len(ds.labels))

    def losses(z: np.ndarray) -> dict[str, float]:
        return _losses(z, labels, test)

    freqs = sorted(int(k) for k in key_freqs)
    rows = [{"target": "logits", "ablation": "none", "freq": None, **losses(logits)}]
    if not freqs:
        return rows
    kept = restricted_logits(logits, n, freqs, sign)
    rows.append({"target": "logits", "ablation": "keep_key", "freq": None, **losses(kept)})
    for k in freqs:
        without = logits - project_sum_directions(logits, n, [k], sign)
        rows.append({"target": "logits", "ablation": "remove", "freq": k, **losses(without)})
    out = patched_logits(model, tokens, keep_frequencies(acts, n, freqs))
    rows.append({"target": "neurons", "ablation": "keep_key", "freq": None, **losses(out)})
    for k in freqs:
        out = patched_logits(model, tokens, remove_frequency(acts, n, k))
        rows.append({"target": "neurons", "ablation": "remove", "freq": k, **losses(out)})
    return rows
