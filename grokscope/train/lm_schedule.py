"""Which training lines each seed of a language-model batch reads at each step, so that K seeds
stack into one computation and each seed reads what it would read alone.

Stacking K seeds needs every seed's batch of a step to have the same shape; reading what it would
read alone needs that shape (and the lines) not to depend on the other seeds. Both hold with a
shared schedule of length classes and per-seed lines:

- **Length classes.** The training lines are grouped by length into classes of consecutive
  lengths, each holding at least :data:`MIN_CLASS_BATCHES` batches' worth of lines (a length
  with that many lines is a class of its own). Every batch of class c is padded to the class's
  longest line, its width, whoever draws it: a line is padded by at most the spread of its
  class (zero when a class is one length, the common case), so padding stays near the few
  percent of sorted buckets (:func:`padding_share`).
- **The schedule** (shared). Round r (about one pass over the data) holds ceil(n_c / B) steps
  of every class c, in an order shuffled by (``schedule_seed``, r): the class, and so the
  shape, of every step is a function of the dataset's lengths, the batch size and the schedule
  seed alone.
- **The lines** (per seed). Seed s reads each class's lines as an endless stream of shuffled
  copies of the class, copy i shuffled by (s, c, i); the j-th step of class c takes lines j B
  ... (j + 1) B - 1 of the stream. Every line of a class is read once per copy.

So a seed's batch at a step is a function of (its dataset, batch size, schedule seed, its own
model seed, step) and never of the other seeds in the batch, and a resumed run reads what the
uninterrupted one read. Seeds of one batch share the order in which line lengths come (not the
lines): a mild coupling between seeds, the price of stacking them; a seed alone has the same
schedule, so the coupling is the same whether seeds train together or apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# a length class holds at least this many batches' worth of lines
MIN_CLASS_BATCHES = 4


def length_classes(lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """Class index (0, 1, ...) of each line: consecutive lengths grouped, shortest first, until
    a class holds at least ``MIN_CLASS_BATCHES * batch_size`` lines (the last class takes what
    is left, merged into the one before when smaller)."""
    lengths = np.asarray(lengths)
    values, counts = np.unique(lengths, return_counts=True)
    need = MIN_CLASS_BATCHES * batch_size
    of_value = np.zeros(len(values), dtype=np.int64)
    cls, held = 0, 0
    for i, n in enumerate(counts):
        of_value[i] = cls
        held += n
        if held >= need:
            cls, held = cls + 1, 0
    if 0 < held < need and cls > 0:  # a short tail joins the class before it
        of_value[of_value == cls] = cls - 1
    return of_value[np.searchsorted(values, lengths)]


@dataclass
class LengthSchedule:
    """The shared length-class schedule of a training set (module docstring)."""

    lengths: np.ndarray
    batch_size: int
    schedule_seed: int
    classes: np.ndarray = field(init=False)
    members: list[np.ndarray] = field(init=False)
    widths: np.ndarray = field(init=False)
    slots: np.ndarray = field(init=False)  # steps of each class per round
    _round: tuple[int, np.ndarray, np.ndarray] | None = field(default=None, init=False)
    _perms: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.lengths = np.asarray(self.lengths)
        if len(self.lengths) == 0:
            raise ValueError("a training set needs at least one line")
        self.classes = length_classes(self.lengths, self.batch_size)
        n_classes = int(self.classes.max()) + 1
        self.members = [np.flatnonzero(self.classes == c) for c in range(n_classes)]
        self.widths = np.array([int(self.lengths[m].max()) for m in self.members])
        self.slots = np.array([math.ceil(len(m) / self.batch_size) for m in self.members])

    @property
    def steps_per_round(self) -> int:
        return int(self.slots.sum())

    def _order(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Round ``r``: the class of each of its steps, and each step's occurrence index within
        its class in this round."""
        if self._round is None or self._round[0] != r:
            rng = np.random.default_rng([self.schedule_seed, r, 104729])
            order = rng.permutation(np.repeat(np.arange(len(self.slots)), self.slots))
            occurrence = np.zeros(len(order), dtype=np.int64)
            seen = np.zeros(len(self.slots), dtype=np.int64)
            for i, c in enumerate(order):
                occurrence[i] = seen[c]
                seen[c] += 1
            self._round = (r, order, occurrence)
        return self._round[1], self._round[2]

    def step_class(self, step: int) -> tuple[int, int]:
        """(class, the number of steps of that class before ``step``) of a step."""
        r, i = divmod(step, self.steps_per_round)
        order, occurrence = self._order(r)
        c = int(order[i])
        return c, r * int(self.slots[c]) + int(occurrence[i])

    def width(self, step: int) -> int:
        """The padded width (tokens) of every seed's batch at ``step``."""
        return int(self.widths[self.step_class(step)[0]])

    def rows(self, seed: int, step: int) -> np.ndarray:
        """The training lines (indices) seed ``seed`` reads at ``step``: ``batch_size`` lines of
        the step's class, from the seed's own stream of shuffled copies of the class."""
        c, j = self.step_class(step)
        members = self.members[c]
        n, b = len(members), self.batch_size
        out = np.empty(b, dtype=np.int64)
        start = j * b
        filled = 0
        while filled < b:
            copy, offset = divmod(start + filled, n)
            perm = self._perm(seed, c, copy, n)
            take = min(b - filled, n - offset)
            out[filled : filled + take] = members[perm[offset : offset + take]]
            filled += take
        return out

    def _perm(self, seed: int, c: int, copy: int, n: int) -> np.ndarray:
        """Copy ``copy`` of class ``c`` shuffled for ``seed`` (the last few kept)."""
        key = (seed, c, copy)
        if key not in self._perms:
            if len(self._perms) >= 64:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = np.random.default_rng([seed, c, copy, 7919]).permutation(n)
        return self._perms[key]


def padding_share(schedule: LengthSchedule, steps: int) -> float:
    """Share of the padded tokens of the first ``steps`` steps (seed 0) that are padding."""
    real = pad = 0
    for t in range(steps):
        lens = schedule.lengths[schedule.rows(0, t)]
        real += int(lens.sum())
        pad += int(len(lens) * schedule.width(t) - lens.sum())
    return pad / max(real + pad, 1)
