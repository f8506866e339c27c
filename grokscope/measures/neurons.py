"""Per-neuron frequency content and the model's key frequencies.

Nanda et al. (ICLR 2023), section 4 and appendix: after grokking, almost every MLP neuron of the
(a + b) mod p transformer is a function of a single frequency k: its centred activation over
the p x p grid lies in the span of the eight 2-D Fourier terms

    (const, cos k), (const, sin k), (cos k, const), (sin k, const),
    (cos k, cos k), (cos k, sin k), (sin k, cos k), (sin k, sin k)

(rows over a, then over b). We call the share of a neuron's centred 2-D Fourier energy in these
terms its *frequency fraction* for k. The paper reports 433 of 512 neurons (85 %) with more than
85 % of their variance in one frequency, and five key frequencies.

Key-frequency rule (ours; :class:`KeyFreqRule`). Every neuron votes for its dominant frequency
(the k with the largest fraction) if that fraction is at least ``min_neuron_fraction`` (default
0.5: the frequency explains most of the neuron); a frequency is *key* when at least
``min_neuron_share`` of all neurons (default 0.02) vote for it. Why this rule: it is exactly
the paper's notion (frequencies that dominate the neuron activations) turned into a decision
that can say "none". Random or memorising networks spread their neuron energy over the ~p/2
frequencies and over cross-frequency products (which belong to no frequency), so their fractions
stay far below 0.5 and no frequency collects votes; a grokked network concentrates each neuron
on one of a handful of frequencies, each of which then holds a few to tens of percent of the
neurons. The share is of *all* neurons so that a few stray clean neurons in a network that has
not formed a circuit do not make a key frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.measures.fourier import centre_grid, fourier_2d, frequency_rows


@dataclass(frozen=True)
class KeyFreqRule:
    """Which frequencies count as key (see the module docstring for the reasoning).

    ``min_neuron_fraction``: a neuron votes for its dominant frequency only if that frequency
    carries at least this share of its centred 2-D Fourier energy.
    ``min_neuron_share``: a frequency is key if at least this share of all neurons vote for it.
    ``single_threshold``: the "single-frequency neuron" cut of Nanda et al. (2023), 0.85.
    """

    min_neuron_fraction: float = 0.5
    min_neuron_share: float = 0.02
    single_threshold: float = 0.85


def neuron_frequency_fractions(acts: np.ndarray, p: int) -> np.ndarray:
    """(n_neurons, p // 2): share of each neuron's centred 2-D Fourier energy in frequency k.

    ``acts`` is (p * p, n_neurons) in a-major order (or (p, p, n_neurons)). Column k - 1 is
    frequency k. Rows sum to at most 1: the remainder is in cross-frequency products
    (cos k1, cos k2 with k1 != k2). A neuron that is constant on the grid (dead) has all zeros.
    """
    acts = np.asarray(acts, dtype=np.float64).reshape(p, p, -1)
    coeffs = fourier_2d(centre_grid(acts, p), p)
    energy = np.square(coeffs)
    total = energy.reshape(p * p, -1).sum(axis=0)
    n_freq = p // 2
    out = np.zeros((energy.shape[2], n_freq))
    for k in range(1, n_freq + 1):
        rows = frequency_rows(p, k)
        e = energy[0, rows].sum(axis=0) + energy[rows, 0].sum(axis=0)
        e = e + energy[np.ix_(rows, rows)].sum(axis=(0, 1))
        out[:, k - 1] = e
    safe = np.where(total > 0, total, 1.0)
    return np.where(total[:, None] > 0, out / safe[:, None], 0.0)


def dominant_frequencies(fractions: np.ndarray) -> np.ndarray:
    """(n_neurons,) int: each neuron's frequency with the largest fraction; 0 for a neuron
    without any (dead, or all its energy in cross-frequency products: every fraction <= 1e-9,
    a tolerance for rounding)."""
    fractions = np.asarray(fractions)
    dom = fractions.argmax(axis=1) + 1
    return np.where(fractions.max(axis=1) > 1e-9, dom, 0)


def key_frequencies(fractions: np.ndarray, rule: KeyFreqRule = KeyFreqRule()) -> list[int]:
    """The key frequencies by :class:`KeyFreqRule`, ascending (may be empty)."""
    fractions = np.asarray(fractions)
    n_neurons = fractions.shape[0]
    if n_neurons == 0:
        return []
    votes = dominant_frequencies(fractions)[fractions.max(axis=1) >= rule.min_neuron_fraction]
    counts = np.bincount(votes, minlength=fractions.shape[1] + 1)[1:]
    keys = np.nonzero(counts >= rule.min_neuron_share * n_neurons)[0] + 1
    return [int(k) for k in keys if counts[k - 1] > 0]


def single_frequency_share(fractions: np.ndarray, threshold: float = 0.85) -> float:
    """Share of neurons with at least ``threshold`` of their energy in one frequency
    (Nanda et al. 2023: 433 / 512 = 85 % at threshold 0.85). Dead neurons count as not single."""
    fractions = np.asarray(fractions)
    if fractions.shape[0] == 0:
        return float("nan")
    return float(np.mean(fractions.max(axis=1) >= threshold))
