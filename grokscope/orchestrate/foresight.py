"""Foresight across runs: the tables the delay laws and the alarm rules are fitted on, read from
run directories, and the prediction of one run's grokking time.

A folder of runs is a sweep directory (``runs/`` below it) or any folder whose subfolders are run
directories. Times are optimizer steps (the ``step`` column at T_mem and T_grok), so full-batch
and mini-batch runs share the learning rate x weight decay clock of the laws.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from grokscope.config import to_dict
from grokscope.dynamics.delay_laws import KINDS, DelayLaw
from grokscope.dynamics.early_warning import (
    CONTROL_CHOICES,
    AlarmRule,
    SignalRun,
    cross_validate,
    like_for_like,
    onset_time,
    stratified_folds,
)
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.events import event_epoch
from grokscope.orchestrate.load import load_run
from grokscope.store import rundir
from grokscope.store.query import collect_runs

# (analysis.parquet column, direction towards generalization); the held-out test loss is the
# reference every other signal is read against (it watches the very labels grokking is about)
# signals that need the key frequencies: causal (computable during training) only when the
# analysis took them at every checkpoint (grokscope analyze --per-checkpoint-keys); with the
# final checkpoint's keys they read the future, and warn leaves them out
KEY_SIGNALS = ("restricted_loss", "circularity_keys")
SIGNALS = (
    ("restricted_loss", "down"),
    ("gini_embed", "up"),
    ("gini_unembed", "up"),
    ("circularity_keys", "up"),
    ("pca_circularity", "up"),
    ("fourier_ipr_pooled", "up"),
    ("ildr", "up"),
    ("weight_norm_sq", "down"),
    ("hessian_top1", "up"),
    ("sharpness_scaled_hessian", "up"),
    ("llc", "down"),
    ("test_loss", "down"),
)


def _step_at(metrics: pd.DataFrame, epoch: int | None) -> int | None:
    if epoch is None:
        return None
    row = metrics[metrics["epoch"] == epoch]
    return int(row["step"].iloc[0]) if len(row) else None


def law_clock_reason(cfg) -> str | None:
    """Why a run's weight norm does not shrink on the lr x weight-decay clock the delay laws
    assume (None when it does)."""
    o = cfg.optim
    if o.weight_decay <= 0:
        return "no weight decay"
    if o.at_mem != "none":
        return f"optim.at_mem={o.at_mem} changes the decay at memorization"
    if o.decay_to != "zero":
        return "weight decay toward the initial weights"
    if o.weight_norm > 0:
        return "the weight norm is held fixed"
    if o.lr_decay != "none":
        return "a decaying learning rate"
    return None


def run_row(run: Path, loaded=None) -> dict:
    """One run's delay-law inputs: t_mem / t_grok (steps; None: not reached), lr, wd, train
    fraction, squared weight norms at both events, seed (``loaded``: the run already read)."""
    loaded = load_run(run) if loaded is None else loaded
    cfg, kind, metrics = loaded.config, loaded.kind, loaded.metrics
    if not kind.delay_laws:
        raise GrokscopeError(f"{run}: delay laws and alarms are for algorithmic runs")
    if metrics is None:
        raise RunDirError(f"{run / 'metrics.parquet'} is missing")
    mem_col, grok_col = kind.event_columns()
    e_mem = event_epoch(metrics, mem_col, cfg.train.mem_threshold)
    e_grok = event_epoch(metrics, grok_col, cfg.train.grok_threshold)
    norm = metrics.set_index("epoch")["weight_norm_sq"]
    return {
        "run": run.name,
        "path": str(run),
        "seed": cfg.train.seed,
        "lr": cfg.optim.lr,
        "wd": cfg.optim.weight_decay,
        "train_fraction": cfg.task.train_fraction,
        "t_mem": _step_at(metrics, e_mem),
        "t_grok": _step_at(metrics, e_grok),
        "t_mem_epoch": e_mem,
        "t_grok_epoch": e_grok,
        "norm_mem": None if e_mem is None else float(norm[e_mem]),
        "norm_grok": None if e_grok is None else float(norm[e_grok]),
        "epochs_done": int(metrics["epoch"].iloc[-1]) if len(metrics) else 0,
        "off_clock": law_clock_reason(cfg),
        "t_onset_epoch": onset_time(
            metrics["epoch"].to_numpy(), metrics["test_loss"].to_numpy(float), e_mem
        ),
        "per_checkpoint_keys": bool((loaded.summary or {}).get("per_checkpoint_keys")),
        "settings": settings_key(cfg),
    }


def settings_key(cfg) -> str:
    """A run's hyperparameters as text, its seeds left out (the task, model and optimizer
    sections without ``task.data_seed``): two runs with equal keys differ only by seed (and
    schedule: budget, evaluation and checkpoint intervals)."""
    parts = to_dict(cfg)
    parts = {k: parts[k] for k in ("task", "model", "optim")}
    parts["task"] = {k: v for k, v in parts["task"].items() if k != "data_seed"}
    return json.dumps(parts, sort_keys=True)


def matches(run: Path, only: dict[str, str]) -> bool:
    """Whether the run's config has every ``section.field`` of ``only`` at the given value
    (compared as config values parsed from the text)."""
    cfg = rundir.read_config(run)
    for key, text in only.items():
        section, _, name = key.partition(".")
        sec = getattr(cfg, section, None)
        if sec is None or not hasattr(sec, name):
            raise GrokscopeError(f"--only: unknown config field {key!r}")
        value = getattr(sec, name)
        try:
            wanted = type(value)(text) if not isinstance(value, bool) else text == "true"
        except ValueError:
            raise GrokscopeError(f"--only {key}={text}: not a {type(value).__name__}") from None
        if value != wanted:
            return False
    return True


def fit_delay_laws(
    folder: Path | list[Path], only: dict[str, str] | None = None
) -> tuple[pd.DataFrame, dict[str, DelayLaw | str]]:
    """Every law fitted on the runs of ``folder`` (those matching ``only``) that memorized and
    grokked on the lr x weight-decay clock; a law that cannot be fitted gets the reason."""
    runs = [r for r in collect_runs(folder) if matches(r, only or {})]
    if not runs:
        raise GrokscopeError(f"no run under {folder} matches {only}")
    table = pd.DataFrame([run_row(r) for r in runs])
    ok = table.dropna(subset=["t_mem", "t_grok"])
    ok = ok[ok["off_clock"].isna() & (ok["t_grok"] > ok["t_mem"])]
    laws: dict[str, DelayLaw | str] = {}
    for kind in KINDS:
        try:
            laws[kind] = DelayLaw(kind).fit(ok)
        except ValueError as e:
            laws[kind] = str(e)
    return table, laws


def write_delay_laws(folder: Path, laws: dict[str, DelayLaw | str]) -> tuple[Path, Path]:
    """Write ``folder/delay_law.json`` (the first-passage law, the one :func:`predict_run`
    uses) and ``folder/delay_laws.json`` (every fitted law); their paths. GrokscopeError, and
    nothing written, when the first-passage law could not be fitted."""
    fitted = {k: v.to_dict() for k, v in laws.items() if not isinstance(v, str)}
    first = laws["first_passage"]
    if isinstance(first, str):
        raise GrokscopeError(f"no first-passage law: {first}")
    law_path, laws_path = Path(folder) / "delay_law.json", Path(folder) / "delay_laws.json"
    first.save(law_path)
    laws_path.write_text(json.dumps(fitted, indent=2))
    return law_path, laws_path


def read_delay_law(path: Path) -> DelayLaw:
    """The delay law saved at ``path`` (by :func:`write_delay_laws`); GrokscopeError when the
    file is missing or is not a delay law."""
    path = Path(path)
    if not path.is_file():
        raise GrokscopeError(f"no delay law at {path} (write one with grokscope fit-delay)")
    try:
        return DelayLaw.load(path)
    except (ValueError, KeyError, TypeError) as e:
        raise GrokscopeError(f"{path} is not a delay law file: {e}") from None


def predict_run(run: Path, law: DelayLaw) -> dict:
    """The grokking step of ``run`` predicted from its memorization (first-passage law): the
    predicted step and its interval, or ``prediction`` None and the reason it cannot be made."""
    if law.kind == "first_passage" and law.kappa_ is None:
        raise GrokscopeError(
            "the fitted first-passage law is not physical (its log-norm coefficient is <= 0): "
            "it makes no prediction; fit it on runs that differ only in lr and weight decay"
        )
    if law.kind != "first_passage":
        raise GrokscopeError(
            f"a {law.kind} law needs quantities known only after grokking; predict with a "
            "first_passage law (grokscope fit-delay writes one)"
        )
    row = run_row(Path(run))
    out = {"run": str(run), "t_mem": row["t_mem"], "t_grok_observed": row["t_grok"]}
    if row["t_mem"] is None:
        why = (
            "the run has not memorized yet (train accuracy below its mem_threshold): the law "
            "starts from the weight norm at memorization"
        )
        return {**out, "prediction": None, "reason": why}
    if row["off_clock"] is not None:
        why = f"{row['off_clock']}: the law's clock (lr x weight decay) does not describe this run"
        return {**out, "prediction": None, "reason": why}
    delay = float(law.predict(pd.DataFrame([row]))[0])
    if not math.isfinite(delay) or delay <= 0:
        why = f"the law gives a delay of {delay:.0f} steps for this run: outside the law's range"
        return {**out, "prediction": None, "reason": why}
    lo, hi = (float(v) for v in law.interval(pd.DataFrame([row]))[0])
    return {
        **out,
        "prediction": round(row["t_mem"] + delay),
        "interval": [round(row["t_mem"] + lo), _round_or_inf(row["t_mem"] + hi)],
        "delay": delay,
        "law": {
            "kind": law.kind,
            "n": law.n_,
            "mape_loo": law.mape_loo_,
            "coverage": law.coverage,
        },
    }


def _round_or_inf(x: float) -> float | int:
    return x if math.isinf(x) else round(x)


def analysed_runs(folder: Path | list[Path]) -> list[tuple[str, pd.DataFrame, dict]]:
    """(name, analysis table, :func:`run_row`) of every analysed run of ``folder``, read once."""
    out = []
    for run in collect_runs(folder):
        loaded = load_run(run)
        if loaded.analysis is not None:
            out.append((run.name, loaded.analysis, run_row(run, loaded)))
    return out


def signal_runs(
    folder: Path | list[Path], signal: str, analysed: list | None = None
) -> list[SignalRun]:
    """Every analysed run of ``folder`` (or of ``analysed``, from :func:`analysed_runs`) with
    the signal's column, as :class:`SignalRun`; a run that never grokked within its budget is a
    control."""
    out = []
    for name, table, row in analysed_runs(folder) if analysed is None else analysed:
        if signal not in table or table[signal].isna().all():
            continue
        if signal in KEY_SIGNALS and not row.get("per_checkpoint_keys"):
            continue  # keys from the final checkpoint: not computable during training
        out.append(
            SignalRun(
                table["epoch"].to_numpy(),
                table[signal].to_numpy(float),
                row["t_mem_epoch"],
                row["t_grok_epoch"],
                name,
                row.get("t_onset_epoch"),
                row.get("settings", ""),
            )
        )
    return out


def rank_signals(
    folder: Path | list[Path], n_folds: int = 2, control: str = "like"
) -> pd.DataFrame:
    """Each signal's alarm rule, cross-validated over ``n_folds`` folds of the runs (stratified:
    :func:`grokscope.dynamics.early_warning.stratified_folds`): held-out hit rate,
    false-alarm rate, median lead time (epochs) and J, pooled over folds; ranked by J, then by
    lead time. ``control``: ``"like"`` (default) counts only like-for-like controls
    (:func:`grokscope.dynamics.early_warning.like_for_like`), ``"all"`` every run that
    memorized and did not grok."""
    rows = []
    analysed = analysed_runs(folder)
    for signal, direction in SIGNALS:
        runs = signal_runs(folder, signal, analysed)
        if control == "like":
            runs = like_for_like(runs)
        if not any(r.t_grok is not None for r in runs):
            continue
        folds = stratified_folds(runs, n_folds)
        results = cross_validate(AlarmRule(signal, direction), runs, folds)
        if not results:
            continue
        leads = [x for r in results for x in r["leads"]]
        onset = [x for r in results for x in r["onset_leads"]]
        hits = sum(r["hit"]["k"] for r in results)
        n_grok = sum(r["hit"]["n"] for r in results)
        if not n_grok:  # no held-out grokking run carries the signal: nothing was scored
            continue
        fas = sum(r["false_alarm"]["k"] for r in results)
        n_ctrl = sum(r["false_alarm"]["n"] for r in results)
        hit = hits / n_grok if n_grok else math.nan
        fa = fas / n_ctrl if n_ctrl else math.nan
        rows.append(
            {
                "signal": signal,
                "direction": direction,
                "c": [r["c"] for r in results],
                "hits": f"{hits}/{n_grok}",
                "false_alarms": f"{fas}/{n_ctrl}",
                "hit_rate": hit,
                "false_alarm_rate": fa,
                "j": hit - fa,  # NaN without held-out controls: undecided
                "lead_median": float(np.median(leads)) if leads else math.nan,
                "lead_min": float(np.min(leads)) if leads else math.nan,
                "lead_max": float(np.max(leads)) if leads else math.nan,
                "onset_lead_median": float(np.median(onset)) if onset else math.nan,
                "before_onset": f"{sum(x > 0 for x in onset)}/{len(onset)}",
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["j", "lead_median"], ascending=[False, False])
    return table.reset_index(drop=True)


def warning_signals(
    folders: Path | list[Path], n_folds: int = 2, control: str = "like"
) -> pd.DataFrame:
    """:func:`rank_signals` over the pooled folders, refusing (GrokscopeError) fewer than 2
    folds, an unknown ``control`` and folders without an analysed grokking run that scores any
    signal."""
    if n_folds < 2:
        raise GrokscopeError(f"--folds must be >= 2, got {n_folds}")
    if control not in CONTROL_CHOICES:
        choices = ", ".join(CONTROL_CHOICES)
        raise GrokscopeError(f"--controls must be one of {choices}, got {control!r}")
    table = rank_signals(folders, n_folds, control)
    if not len(table):
        first = folders if isinstance(folders, str | Path) else folders[0]
        raise GrokscopeError(f"no analysed grokking runs under {first} (run grokscope analyze)")
    return table


def write_warning_table(folder: Path, table: pd.DataFrame) -> Path:
    """Write the ranking of :func:`rank_signals` to ``folder/early_warning.parquet``; its
    path. The per-fold thresholds ``c`` are stored as text."""
    path = Path(folder) / "early_warning.parquet"
    rundir.write_table(path, table.astype({"c": str}))
    return path
