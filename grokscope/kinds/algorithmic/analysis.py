"""The analysis of an algorithmic run: progress measures per checkpoint, key frequencies,
phases, figures (driven by the one loop over checkpoints,
:func:`grokscope.orchestrate.analyze.analyze_run`).

* ``analysis.parquet`` — one row per analysed checkpoint (columns in docs/analysis.md),
* ``summary.json`` — key frequencies, single-frequency neuron share, t_mem / t_grok, the three
  phase boundaries of Nanda et al. (2023), final-checkpoint ablations and ``notes`` on every
  measure that does not apply to the run's task,
* ``figures/*.png``.

The measures (:mod:`grokscope.measures`) and the phase finder (:mod:`grokscope.dynamics.phases`)
are pure; the figures are written by :mod:`grokscope.report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.config import Config
from grokscope.display import none_if_nan
from grokscope.dynamics.phases import PHASE_KEYS, PhaseParams, find_phases
from grokscope.events import event_epoch
from grokscope.measures import ablations, geometry, neurons, progress
from grokscope.measures.curvature import checkpoint_curvature
from grokscope.measures.weights import WEIGHT_STATS_DEFINITION, weight_stats
from grokscope.models import HookedModule
from grokscope.report import geometry_figures
from grokscope.report.analysis_figures import write_analysis_figures
from grokscope.tasks import Dataset

BASE_COLUMNS = (
    "epoch",
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "restricted_loss",
    "excluded_loss",
    "logit_var_explained",
    "gini_embed",
    "gini_unembed",
    "weight_norm_sq",
    "neuron_single_freq_share",
    "n_key_frequencies",
)


def _numpy_params(weights: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in weights.items()}


@dataclass
class _Context:
    """What every checkpoint of one analysis shares: the run, its task and model, the grid of
    the Fourier measures (residues, or discrete logs for x*y and x/y) and the notes so far."""

    run: Path
    cfg: Config
    ds: Dataset
    model: HookedModule
    grid: progress.GridView | None
    reason: str | None  # why the Fourier measures do not apply, or None
    rule: neurons.KeyFreqRule
    load_weights: Callable[[int], dict[str, torch.Tensor]]  # puts a checkpoint in the model
    metrics: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)  # epoch -> E, grid order

    @property
    def full_grid(self) -> bool:
        return self.grid is not None

    def load(self, epoch: int) -> dict[str, np.ndarray]:
        """Put the weights of ``epoch`` into the model; return them as NumPy arrays."""
        return _numpy_params(self.load_weights(epoch))

    def ildr_hook(self) -> str:
        """The penultimate layer ILDR reads: the residual stream entering the unembedding, or
        the last hidden layer of an MLP."""
        resid = [n for n in self.model.hook_names() if n.endswith("hook_resid_post")]
        return resid[-1] if resid else self.model.neuron_hook

    def forward(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the weights in the model now, from one pass over every example: the logits, the
        MLP neurons' activations and the penultimate layer's, at the answer position."""
        neuron, penult = self.model.neuron_hook, self.ildr_hook()
        logits, acts = progress.answer_pass(self.model, self.ds.tokens, [neuron, penult])
        return logits, acts[neuron], acts[penult]

    def fractions(self, acts: np.ndarray) -> np.ndarray | None:
        """Each neuron's share of energy per frequency, from its activations ``acts``; None off
        the full grid (no neuron frequencies there)."""
        if not self.full_grid:
            return None
        return neurons.neuron_frequency_fractions(acts[self.grid.rows], self.grid.n)


def _context(run, model: HookedModule, load, rule: neurons.KeyFreqRule) -> _Context:
    ds = run.dataset
    ctx = _Context(
        run.path, run.config, ds, model, progress.grid_view(ds), progress.fourier_reason(ds),
        rule, load, run.metrics,
    )  # fmt: skip
    if ctx.reason is not None:
        ctx.notes.append(
            "the key frequencies, the restricted and excluded losses, the logit variance "
            f"explained and the ablations are not computed: {ctx.reason}"
        )
    if ds.modulus is None:
        ctx.notes.append(
            "the Gini sparsities of the embedding and unembedding and the share of "
            "single-frequency neurons are not computed: " + ctx.reason
        )
    elif not ctx.full_grid:
        ctx.notes.append(
            "the share of single-frequency neurons is not computed: the dataset does not cover "
            "the p x p grid"
        )
    return ctx


@dataclass
class _Final:
    """The final checkpoint: its weights, logits, neuron fractions, key frequencies, ablations."""

    epoch: int
    params: dict[str, np.ndarray]
    logits: np.ndarray
    penultimate: np.ndarray
    fractions: np.ndarray | None
    key_freqs: list[int] | None
    ablations: list[dict] | None


def _final_checkpoint(ctx: _Context, epoch: int) -> _Final:
    """Key frequencies from the final checkpoint's neurons, and the ablations, taken while the
    model holds the final weights."""
    params = ctx.load(epoch)
    logits, acts, penultimate = ctx.forward()
    acts = acts.astype(np.float64)
    fractions = ctx.fractions(acts)
    key_freqs = None
    if ctx.reason is None:
        key_freqs = neurons.key_frequencies(fractions, ctx.rule)
        if not key_freqs:
            ctx.notes.append(
                f"no key frequencies at the final checkpoint (epoch {epoch}): no frequency "
                f"held {ctx.rule.min_neuron_fraction:g} of the energy of "
                f"{ctx.rule.min_neuron_share:.0%} of the neurons; the restricted and excluded "
                "losses and the logit variance explained are not computed"
            )
    rows = None
    if ctx.reason is None and key_freqs:
        rows = ablations.ablation_rows(logits, acts, ctx.model, ctx.ds, key_freqs)
    return _Final(epoch, params, logits, penultimate, fractions, key_freqs, rows)


def _checkpoint_row(
    ctx: _Context, final: _Final, epoch: int, weights: dict, per_checkpoint_keys: bool
) -> dict:
    """One row of analysis.parquet: every measure at checkpoint ``epoch`` (the model holds its
    ``weights``)."""
    at_final = epoch == final.epoch
    params = final.params if at_final else _numpy_params(weights)
    if at_final:
        logits, penultimate, fractions = final.logits, final.penultimate, final.fractions
    else:
        logits, acts, penultimate = ctx.forward()
        fractions = ctx.fractions(acts) if per_checkpoint_keys else None
    row: dict = {"epoch": int(epoch), **progress.basic_row(logits, ctx.ds)}
    keys = final.key_freqs
    if per_checkpoint_keys and ctx.reason is None:
        keys = neurons.key_frequencies(fractions, ctx.rule)
    row.update(progress.fourier_row(logits, ctx.ds, keys or []))
    row.update(progress.gini_row(params, ctx.ds))
    row["weight_norm_sq"] = progress.weight_norm_sq(params)
    row["neuron_single_freq_share"] = (
        neurons.single_frequency_share(fractions, ctx.rule.single_threshold)
        if fractions is not None
        else None
    )
    row["n_key_frequencies"] = None if keys is None else len(keys)
    if per_checkpoint_keys:
        row["key_frequencies"] = None if keys is None else [int(k) for k in keys]
    row.update(weight_stats(params))
    row["weight_stats_definition"] = WEIGHT_STATS_DEFINITION
    row.update(_geometry(ctx, params, logits, penultimate, keys, epoch))
    return row


# operations whose grid is a sum or a difference (of residues or of discrete logs): the ones
# where the clock-vs-pizza diagnostics (distance irrelevance, gradient symmetricity) are defined
CLOCK_PIZZA_OPS = ("x+y", "x-y", "x*y", "x/y")


def _geometry(
    ctx: _Context, params: dict, logits: np.ndarray, penultimate: np.ndarray, keys, epoch: int
) -> dict:
    """The geometry columns (:func:`grokscope.measures.geometry.geometry_row`) of a checkpoint of
    a modular task with a residue embedding; all None otherwise (a note says why).
    ``penultimate``: the penultimate layer's activations at the answer position on every
    example (:meth:`_Context.forward`), read by ILDR on the held-out ones."""
    ds, grid = ctx.ds, ctx.grid
    test = ds.test_idx
    ildr = geometry.class_distance_ratio(penultimate[test], ds.labels[test])
    empty = {**dict.fromkeys(geometry.GEOMETRY_COLUMNS), "ildr": ildr}
    if ds.modulus is None:
        _note_once(ctx, "geometry columns are null: the task has no residues")
        return empty
    if "embed.W_E" not in params and "layers.0.W" not in params:
        _note_once(ctx, "geometry columns are null: the model has no residue embedding")
        return empty
    E = progress.embedding_matrix(params, ds.modulus)
    if grid is not None:
        E = E[grid.order]
    ctx.embeddings[int(epoch)] = E
    correct, grads = None, None
    clock_pizza = ctx.full_grid and ds.info.get("op") in CLOCK_PIZZA_OPS
    if clock_pizza:
        correct = geometry.correct_logit_grid(logits[grid.rows], ds.labels[grid.rows], grid.n)
        if "hook_embed" in ctx.model.hook_names():
            triples = geometry.symmetricity_triples(grid.n, 100, seed=0)
            rows = grid.rows[triples[:, 0] * grid.n + triples[:, 1]]
            grads = geometry.embedding_gradients(
                ctx.model, ds.tokens[rows], grid.order[triples[:, 2]]
            )
    else:
        _note_once(
            ctx,
            "distance_irrelevance and gradient_symmetricity are null: defined for sums and "
            "differences on the full grid (x+y, x-y, x*y, x/y)",
        )
    sign = grid.sign if grid is not None else 1
    return geometry.geometry_row(E, keys, correct, sign, grads, ildr)


# the local learning coefficient (Lau et al. 2023), its step size and localisation calibrated at
# each checkpoint (curvature.calibrated_llc): 2 SGLD chains of 200 steps (50 burn-in),
# mini-batches of 512, n beta = n / log n; Hessian top-3 by Lanczos to a 1e-3 residual, trace
# by 50 Hutchinson probes (benchmarks/bench_curvature.py)
CURVATURE_LLC = {"num_chains": 2, "num_steps": 200, "num_burnin": 50}
CURVATURE_COLUMNS = (
    "hessian_top1",
    "hessian_top2",
    "hessian_top3",
    "hessian_trace",
    "hessian_trace_se",
    "sharpness_norm_scaled",
    "sharpness_scaled_hessian",
    "llc",
    "llc_se",
    "llc_reliable",
    "llc_gamma",
    "llc_epsilon",
)


def _curvature(ctx: _Context) -> dict:
    """The curvature columns of the training loss at the weights in the model now."""
    idx = ctx.ds.train_idx
    tokens = torch.as_tensor(ctx.ds.tokens[idx], dtype=torch.int64)
    labels = torch.as_tensor(ctx.ds.labels[idx], dtype=torch.int64)
    out = checkpoint_curvature(
        ctx.model, tokens, labels, k=3, llc_batch_size=min(512, len(idx)), llc_kwargs=CURVATURE_LLC
    )
    return {k: float(out[k]) for k in CURVATURE_COLUMNS}


def _note_once(ctx: _Context, note: str) -> None:
    if note not in ctx.notes:
        ctx.notes.append(note)


def _summary(
    ctx: _Context,
    final: _Final,
    table: pd.DataFrame,
    chosen: list[int],
    every: int,
    per_checkpoint_keys: bool,
    phase_params: PhaseParams,
) -> dict:
    """summary.json: key frequencies, neuron shares, t_mem / t_grok (from the dense metrics when
    present), the phases found in the table, the final row and the ablations."""
    cfg, ds, run = ctx.cfg, ctx.ds, ctx.run
    events_table = ctx.metrics if ctx.metrics is not None else table
    phases = find_phases(table, phase_params)
    if phases.get("notes"):
        ctx.notes.extend(phases["notes"])
    last = table.iloc[-1]
    fractions = final.fractions
    return {
        "run": str(run),
        "task": ds.name,
        "op": ds.info.get("op"),
        "p": ds.modulus,
        "fourier_basis": None if ctx.grid is None else ctx.grid.basis,
        "model": cfg.model.kind,
        "checkpoints_analysed": len(chosen),
        "every": every,
        "epochs": [int(chosen[0]), int(chosen[-1])],
        "key_frequencies": final.key_freqs,
        "key_frequencies_epoch": int(final.epoch),
        "key_frequency_rule": asdict(ctx.rule),
        "per_checkpoint_keys": per_checkpoint_keys,
        "neuron_single_freq_share": (
            neurons.single_frequency_share(fractions, ctx.rule.single_threshold)
            if fractions is not None
            else None
        ),
        "neuron_dominant_frequency_counts": (
            _dominant_counts(fractions) if fractions is not None else None
        ),
        "t_mem_epoch": event_epoch(events_table, "train_acc", cfg.train.mem_threshold),
        "t_grok_epoch": event_epoch(events_table, "test_acc", cfg.train.grok_threshold),
        "mem_threshold": cfg.train.mem_threshold,
        "grok_threshold": cfg.train.grok_threshold,
        "phases": {k: phases[k] for k in PHASE_KEYS},
        "phase_details": phases["details"],
        "phase_params": asdict(phase_params),
        "final": {
            k: none_if_nan(float(last[k])) if last[k] is not None else None
            for k in BASE_COLUMNS
            if k != "epoch"
        },
        "ablations": final.ablations,
        "notes": ctx.notes,
        "analysis_wall_s": None,
        "figures": [],
    }


def _figures(ctx: _Context, final: _Final, table: pd.DataFrame, summary: dict) -> list:
    ds, grid = ctx.ds, ctx.grid
    extra = []
    if ctx.embeddings:
        folder, t_mem, t_grok = ctx.run / "figures", summary["t_mem_epoch"], summary["t_grok_epoch"]
        last = ctx.embeddings[max(ctx.embeddings)]
        per = geometry.circularity_per_frequency(last)
        keys = [k for k in (final.key_freqs or []) if 1 <= k <= len(per)]
        k = max(keys, key=lambda j: per[j - 1]) if keys else int(np.nanargmax(per)) + 1
        extra = [
            geometry_figures.embedding_evolution_figure(
                ctx.embeddings,
                k,
                t_mem,
                t_grok,
                folder / "embedding_evolution.png",
                summary.get("phases"),
            ),
            geometry_figures.embedding_animation(
                ctx.embeddings, k, folder / "embedding_evolution.gif"
            ),
            geometry_figures.geometry_figure(table, t_mem, t_grok, folder / "geometry.png"),
        ]
        if "hessian_top1" in table and table["hessian_top1"].notna().any():
            extra.append(
                geometry_figures.curvature_figure(table, t_mem, t_grok, folder / "curvature.png")
            )
    embed = progress.embedding_matrix(final.params, ds.modulus) if ds.modulus else None
    if embed is not None and grid is not None:
        embed = embed[grid.order]  # rows in grid order: by discrete log for x*y, x/y
    full = ctx.full_grid
    return extra + write_analysis_figures(
        ctx.run / "figures",
        table,
        summary,
        embed=embed,
        fractions=final.fractions,
        logits=final.logits[grid.rows][:, grid.order] if full else None,
        p=grid.n if full else ds.modulus,
        residues=grid.order if full else None,
        generator=grid.generator if full else None,
    )


class AlgorithmicAnalysis:
    """The analysis of an algorithmic run (the kind's :class:`grokscope.kinds.base.Analysis`).

    Key frequencies come from the final checkpoint's neurons (:func:`neurons.key_frequencies`)
    and are held fixed for every row, unless ``per_checkpoint_keys``, which recomputes them at
    each checkpoint (the restricted / excluded losses then use each row's own keys).
    ``curvature_every`` > 0 adds the curvature columns (:data:`CURVATURE_COLUMNS`) at every
    ``curvature_every``-th analysed checkpoint and the last (null elsewhere): about 10-25 s per
    checkpoint on a CPU, so off by default."""

    def __init__(self, run, options: dict) -> None:
        self.run = run
        self.every = int(options.get("every") or 1)
        self.per_checkpoint_keys = bool(options.get("per_checkpoint_keys"))
        self.rule = options.get("rule") or neurons.KeyFreqRule()
        self.phase_params = options.get("phase_params") or PhaseParams()
        self.curvature_every = int(options.get("curvature_every") or 0)

    def begin(self, model: HookedModule, load, epochs: list[int]) -> None:
        self.ctx = _context(self.run, model, load, self.rule)
        self.final = _final_checkpoint(self.ctx, epochs[-1])
        self.n = len(epochs)
        self.i = 0

    def row(self, epoch: int, weights: dict) -> dict:
        row = _checkpoint_row(self.ctx, self.final, epoch, weights, self.per_checkpoint_keys)
        if self.curvature_every:
            measured = self.i % self.curvature_every == 0 or self.i == self.n - 1
            row.update(_curvature(self.ctx) if measured else dict.fromkeys(CURVATURE_COLUMNS))
        self.i += 1
        return row

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]:
        table = pd.DataFrame(rows)
        for col in BASE_COLUMNS:
            table[col] = table[col].astype("float64") if col != "epoch" else table[col]
        for col in geometry.GEOMETRY_COLUMNS:
            kind = "Int64" if col == "circularity_best_freq" else "float64"
            table[col] = pd.to_numeric(table[col]).astype(kind)
        summary = _summary(
            self.ctx, self.final, table, epochs, self.every, self.per_checkpoint_keys,
            self.phase_params,
        )  # fmt: skip
        return table, summary

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list:
        return _figures(self.ctx, self.final, table, summary)


def _dominant_counts(fractions: np.ndarray) -> dict[str, int]:
    """{frequency: number of neurons whose dominant frequency it is} for frequencies with any
    neuron ('0' = dead neurons)."""
    counts = np.bincount(neurons.dominant_frequencies(fractions), minlength=fractions.shape[1] + 1)
    return {str(k): int(c) for k, c in enumerate(counts) if c > 0}
