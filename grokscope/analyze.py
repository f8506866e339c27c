"""Analyse a run directory: progress measures per checkpoint, key frequencies, phases, figures.

``analyze_run(run)`` reads ``config.json`` and the checkpoints, and writes (atomically)

* ``analysis.parquet`` — one row per analysed checkpoint (columns in docs/analysis.md),
* ``summary.json`` — key frequencies, single-frequency neuron share, t_mem / t_grok, the three
  phase boundaries of Nanda et al. (2023), final-checkpoint ablations and ``notes`` on every
  measure that does not apply to the run's task,
* ``figures/*.png`` (unless ``figures=False``).

This module is the only place in the analysis that touches files: the measures
(:mod:`grokscope.measures`) and the phase finder (:mod:`grokscope.dynamics.phases`) are pure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope.dynamics.phases import PhaseParams, event_epoch, find_phases
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.measures import ablations, neurons, progress
from grokscope.measures.weights import weight_stats
from grokscope.models import build_model
from grokscope.store import rundir
from grokscope.tasks import build_dataset

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


def select_epochs(epochs: list[int], every: int) -> list[int]:
    """Every ``every``-th checkpoint epoch, starting with the first, always ending with the last."""
    if every < 1:
        raise GrokscopeError(f"--every must be >= 1, got {every}")
    chosen = list(epochs[::every])
    if chosen[-1] != epochs[-1]:
        chosen.append(epochs[-1])
    return chosen


def _numpy_params(weights: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in weights.items()}


def _none_if_nan(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def analyze_run(
    run: Path,
    every: int = 1,
    per_checkpoint_keys: bool = False,
    figures: bool = True,
    rule: neurons.KeyFreqRule | None = None,
    phase_params: PhaseParams | None = None,
    progress_cb: Callable[[int, int], None] | None = None,
) -> dict:
    """Analyse every ``every``-th checkpoint of ``run`` (the last one always) and write
    ``analysis.parquet``, ``summary.json`` and (``figures``) PNGs; returns the summary dict.

    Key frequencies come from the final checkpoint's neurons (:func:`neurons.key_frequencies`)
    and are held fixed for every row, unless ``per_checkpoint_keys``, which recomputes them at
    each checkpoint (the restricted / excluded losses then use each row's own keys).
    Raises RunDirError (one line) for a missing run, a bad config or no checkpoints.
    """
    run = Path(run)
    rule = rule or neurons.KeyFreqRule()
    phase_params = phase_params or PhaseParams()
    cfg = rundir.read_config(run)
    all_epochs = rundir.list_epochs(run)
    if not all_epochs:
        raise RunDirError(f"{run} has no checkpoints (expected {run / 'checkpoints'}/epoch_*)")
    chosen = select_epochs(all_epochs, every)
    t0 = time.perf_counter()

    ds = build_dataset(cfg.task)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, cfg.train.seed)
    model.eval()
    notes: list[str] = []
    reason = progress.fourier_reason(ds)
    grid = progress.grid_view(ds)  # residues, or discrete logs for x*y and x/y
    full_grid = grid is not None
    if reason is not None:
        notes.append(
            "key_frequencies, restricted_loss, excluded_loss, logit_var_explained and "
            f"ablations are null: {reason}"
        )
    if ds.modulus is None:
        notes.append("gini_embed, gini_unembed and neuron_single_freq_share are null: " + reason)
    elif not full_grid:
        notes.append("neuron_single_freq_share is null: the dataset does not cover the p x p grid")

    def load(epoch: int) -> dict[str, np.ndarray]:
        weights = rundir.load_weights(run, epoch)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise RunDirError(
                f"checkpoint of epoch {epoch} does not fit the config: {first}"
            ) from None
        return _numpy_params(weights)

    # Final checkpoint: the key frequencies and neuron statistics.
    final = all_epochs[-1]
    final_params = load(final)
    final_logits = progress.model_logits(model, ds.tokens)
    final_acts, final_fractions = None, None
    key_freqs: list[int] | None = None
    if full_grid:
        final_acts = progress.neuron_activations(model, ds.tokens)
        final_fractions = neurons.neuron_frequency_fractions(final_acts[grid.rows], grid.n)
    if reason is None:
        key_freqs = neurons.key_frequencies(final_fractions, rule)
        if not key_freqs:
            notes.append(
                f"no key frequencies at the final checkpoint (epoch {final}) by the rule "
                f"{asdict(rule)}: restricted_loss, excluded_loss and logit_var_explained are null"
            )
    ablation_rows = None
    if reason is None and key_freqs:  # while the model holds the final weights
        ablation_rows = ablations.ablation_rows(final_logits, final_acts, model, ds, key_freqs)

    rows = []
    for i, epoch in enumerate(chosen):
        params = final_params if epoch == final else load(epoch)
        logits = final_logits if epoch == final else progress.model_logits(model, ds.tokens)
        row: dict = {"epoch": int(epoch), **progress.basic_row(logits, ds)}
        fractions = None
        if per_checkpoint_keys and full_grid:
            if epoch == final:
                fractions = final_fractions
            else:
                acts = progress.neuron_activations(model, ds.tokens)
                fractions = neurons.neuron_frequency_fractions(acts[grid.rows], grid.n)
        keys = key_freqs
        if per_checkpoint_keys and reason is None:
            keys = neurons.key_frequencies(fractions, rule)
        row.update(progress.fourier_row(logits, ds, keys or []))
        row.update(progress.gini_row(params, ds))
        row["weight_norm_sq"] = progress.weight_norm_sq(params)
        if fractions is None and epoch == final:
            fractions = final_fractions
        row["neuron_single_freq_share"] = (
            neurons.single_frequency_share(fractions, rule.single_threshold)
            if fractions is not None
            else None
        )
        row["n_key_frequencies"] = None if keys is None else len(keys)
        if per_checkpoint_keys:
            row["key_frequencies"] = None if keys is None else [int(k) for k in keys]
        row.update(weight_stats(params))
        rows.append(row)
        if progress_cb is not None:
            progress_cb(i + 1, len(chosen))
    table = pd.DataFrame(rows)
    for col in BASE_COLUMNS:
        table[col] = table[col].astype("float64") if col != "epoch" else table[col]
    rundir.write_table(run / "analysis.parquet", table)

    # Events: t_mem / t_grok from the dense metrics when present, phases from the table.
    events_table = table
    metrics_path = run / "metrics.parquet"
    if metrics_path.is_file():
        events_table = rundir.read_metrics(run)
    t_mem = event_epoch(events_table, "train_acc", cfg.train.mem_threshold)
    t_grok = event_epoch(events_table, "test_acc", cfg.train.grok_threshold)
    phases = find_phases(table, phase_params)
    if phases.get("notes"):
        notes.extend(phases["notes"])

    last = table.iloc[-1]
    summary = {
        "run": str(run),
        "task": ds.name,
        "op": ds.info.get("op"),
        "p": ds.modulus,
        "fourier_basis": None if grid is None else grid.basis,
        "model": cfg.model.kind,
        "checkpoints_analysed": len(chosen),
        "every": every,
        "epochs": [int(chosen[0]), int(chosen[-1])],
        "key_frequencies": key_freqs,
        "key_frequencies_epoch": int(final),
        "key_frequency_rule": asdict(rule),
        "per_checkpoint_keys": per_checkpoint_keys,
        "neuron_single_freq_share": (
            neurons.single_frequency_share(final_fractions, rule.single_threshold)
            if final_fractions is not None
            else None
        ),
        "neuron_dominant_frequency_counts": (
            _dominant_counts(final_fractions) if final_fractions is not None else None
        ),
        "t_mem_epoch": t_mem,
        "t_grok_epoch": t_grok,
        "mem_threshold": cfg.train.mem_threshold,
        "grok_threshold": cfg.train.grok_threshold,
        "phases": {
            k: phases[k] for k in ("memorization_end", "circuit_formation_end", "cleanup_end")
        },
        "phase_details": phases["details"],
        "phase_params": asdict(phase_params),
        "final": {
            k: _none_if_nan(float(last[k])) if last[k] is not None else None
            for k in BASE_COLUMNS
            if k != "epoch"
        },
        "ablations": ablation_rows,
        "notes": notes,
        "analysis_wall_s": None,
        "figures": [],
    }
    if figures:
        from grokscope.report.analysis_figures import write_analysis_figures

        embed = progress.embedding_matrix(final_params, ds.modulus) if ds.modulus else None
        if embed is not None and grid is not None:
            embed = embed[grid.order]  # rows in grid order: by discrete log for x*y, x/y
        summary["figures"] = write_analysis_figures(
            run / "figures",
            table,
            summary,
            embed=embed,
            fractions=final_fractions,
            logits=final_logits[grid.rows][:, grid.order] if full_grid else None,
            p=grid.n if full_grid else ds.modulus,
            residues=grid.order if full_grid else None,
            generator=grid.generator if full_grid else None,
        )
    summary["analysis_wall_s"] = round(time.perf_counter() - t0, 3)
    rundir.write_json(run / "summary.json", summary)
    return summary


def _dominant_counts(fractions: np.ndarray) -> dict[str, int]:
    """{frequency: number of neurons whose dominant frequency it is} for frequencies with any
    neuron ('0' = dead neurons)."""
    counts = np.bincount(neurons.dominant_frequencies(fractions), minlength=fractions.shape[1] + 1)
    return {str(k): int(c) for k, c in enumerate(counts) if c > 0}
