"""The kind protocol: everything that differs between kinds of study, in one object.

A kind (algorithmic tasks, structural grokking in language models, tree languages, ...) says
how its data is built and trained on, which metrics each evaluation writes, which events are
read from them, what is measured per checkpoint, what its summary, report lines and sweep
summary say. The training core, the analysis loop, ``show``, ``runs``, the report and the sweep
summary call the kind and never ask which kind it is (the shape of scikit-learn's estimator
protocol: a small fixed set of methods every kind honours; of PyTorch Lightning's split between
the loop and the module that says what a step is).

A kind subclasses :class:`Kind` and overrides what differs; docs/kinds.md is the guide. Every
method receives plain values or a loaded run (:class:`RunLike`: the one run reader,
:class:`grokscope.orchestrate.load.Run`), never a path to read by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from grokscope.config import Config, TaskConfig
from grokscope.errors import GrokscopeError
from grokscope.events import event_epoch

if TYPE_CHECKING:  # the registry stays light: a one-line error needs no pandas or torch
    import pandas as pd


@dataclass(frozen=True)
class Event:
    """A threshold event of a kind: the first evaluation whose ``column`` reaches the run's
    ``train.<threshold>`` (held there, by the kind's rule). ``name`` is how it is printed and
    stored (``t_mem`` -> ``status.json`` key ``t_mem_epoch``)."""

    name: str
    column: str
    threshold: str  # "mem_threshold" or "grok_threshold"
    sustain: int = 1  # evaluations in a row it must hold (grokscope.events.first_sustained)


class RunLike(Protocol):
    """What a kind reads of a run: a run's files (the fields of
    :class:`grokscope.store.runfiles.RunFiles`: path, config, status, metrics, analysis,
    summary, epochs, ``last_row()``) and its task's dataset; in practice a
    :class:`grokscope.orchestrate.load.Run`."""

    @property
    def dataset(self) -> Any: ...


class Analysis(Protocol):
    """A kind's analysis of one run, driven by the one loop over checkpoints
    (:func:`grokscope.orchestrate.analyze.analyze_run`): ``begin`` once (the model and a loader
    of any checkpoint's weights in hand), ``row`` per checkpoint with the model holding that
    checkpoint's weights, ``finish`` the table and summary, ``figures`` last."""

    def begin(self, model, load, epochs: list[int]) -> None: ...

    def row(self, epoch: int, weights: dict) -> dict: ...

    def finish(self, rows: list[dict], epochs: list[int]) -> tuple[pd.DataFrame, dict]: ...

    def figures(self, table: pd.DataFrame, summary: dict, folder: Path) -> list[str]: ...


@dataclass
class SweepView:
    """What ``sweep-summary`` shows of a sweep: a table (headers and rows of text) and lines."""

    headers: list[str]
    rows: list[list[str]]
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


class Kind:
    """The default answers; each kind overrides what differs."""

    name: str = ""
    tasks: tuple[str, ...] = ()
    unit: str = "epoch"  # the loop's time: epochs (full passes) or optimizer steps
    events: tuple[Event, Event] = (
        Event("t_mem", "train_acc", "mem_threshold"),
        Event("t_grok", "test_acc", "grok_threshold"),
    )
    # whether the delay laws and early-warning alarms (grokscope.dynamics) apply to its runs
    delay_laws: bool = False

    # -- names and events ------------------------------------------------------------------------

    def event_columns(self) -> tuple[str, str]:
        """The metrics columns of the two events the trainer tracks (``t_mem_epoch`` /
        ``t_grok_epoch`` in the core's status; named for the kind in status.json,
        :meth:`status_names`)."""
        return self.events[0].column, self.events[1].column

    def status_names(self) -> dict[str, str]:
        """What status.json calls the core's keys for this kind's runs (none renamed: the core's
        names, ``t_mem_epoch``, ``t_grok_epoch``, ``epochs_done``, ...); the file records the
        renaming and :func:`grokscope.store.rundir.read_status` maps it back."""
        return {}

    def event_rules(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(column, evaluations it must hold) of the two events, for the training core."""
        a, b = self.events
        return (a.column, a.sustain), (b.column, b.sustain)

    def level_count(self, cfg: Config) -> int:
        """Levels of the hierarchy whose transitions t*_k its runs record
        (:func:`grokscope.dynamics.levels.level_events`); 0: none."""
        return 0

    def describe(self, cfg: Config) -> str:
        """The task in a few words (reports, ``show``)."""
        return cfg.task.name

    def run_name(self, cfg: Config) -> str:
        """The task part of a run id: no slashes or spaces."""
        return cfg.task.name

    def model_text(self, cfg: Config) -> str:
        m = cfg.model
        return f"{m.n_layers}-layer {m.kind} d_model {m.d_model}"

    def split_text(self, cfg: Config) -> str:
        return f"{cfg.task.train_fraction:.0%} train"

    def subtitle(self, cfg: Config) -> str:
        """The line under a report's title: task, split, model, optimizer, seed."""
        m, o = cfg.model, cfg.optim
        return (
            f"{self.describe(cfg)}, {self.subtitle_split(cfg)}{m.kind} (d_model {m.d_model}, "
            f"{m.n_layers} layer), AdamW lr {o.lr} weight decay {o.weight_decay}, "
            f"seed {cfg.train.seed}"
        )

    def subtitle_split(self, cfg: Config) -> str:
        return f"train fraction {cfg.task.train_fraction}, "

    # -- data and training -----------------------------------------------------------------------

    def trains_alone(self, cfg: Config) -> bool:
        """Whether seeds of this config train one at a time rather than stacked."""
        return False

    def check_batch(self, cfgs: list[Config]) -> None:
        """Raise ConfigError (one line) when these configs cannot train as one batch of this
        kind, beyond the core's rule (:func:`grokscope.train.core.check_batch`); checked before
        any directory is made."""

    def build_dataset(self, t: TaskConfig):
        """The complete dataset of a (resolved, validated) task config."""
        raise NotImplementedError

    def export_tables(self, cfg: Config, ds) -> tuple[dict[str, pd.DataFrame], dict]:
        """Every split of the dataset ``ds`` as a table (one row per example or line) and what
        the datasheet says beyond the config (``grokscope export-data``). The default serves a
        :class:`grokscope.tasks.sequence.SequenceDataset`: tokens, text, answer span, the metric's
        target and the gold parse."""
        from grokscope.tasks.sequence import sequence_tables

        sheet = {
            "vocab": list(ds.vocab),
            "split_rule": "each split drawn independently from the task's generator, seeded by "
            "(task.data_seed, split)",
            "text": "tokens joined by spaces; the tokens are ids into vocab",
        }
        return sequence_tables(ds), sheet

    def train_data(self, cfgs: list[Config], datasets: list, device):
        """The core's data (:class:`grokscope.train.core.CoreData`) for a batch of seeds."""
        raise NotImplementedError

    def progress_text(self, row: dict) -> str:
        """One metrics row in a few words (the progress bar and log lines)."""
        return (
            f"acc {row['train_acc']:.3f}/{row['test_acc']:.3f} "
            f"loss {row['train_loss']:.1e}/{row['test_loss']:.1e}"
        )

    # -- analysis ----------------------------------------------------------------------------------

    def analysis(self, run: RunLike, options: dict) -> Analysis:
        raise NotImplementedError

    def refuse_options(self, options: dict, refused: dict[str, str]) -> None:
        """One line for an analysis option this kind does not take, set (``refused``: option
        name -> the reason printed)."""
        for key, why in refused.items():
            if options.get(key):
                raise GrokscopeError(why)

    def summary_lines(self, summary: dict) -> list[str]:
        """The analysis headline (``analyze`` and ``show``)."""
        return []

    def status_text(self, status: dict) -> str:
        """The line ``train`` ends with: state, time trained, the two events."""
        a, b = self.events
        return (
            f"{status['state']}: {status['epochs_done']} {self.unit}s in "
            f"{status.get('wall_s', 0):.1f} s; {a.name}_{self.unit}={status.get('t_mem_epoch')} "
            f"{b.name}_{self.unit}={status.get('t_grok_epoch')}"
        )

    def config_text(self, cfg: Config) -> str:
        """Two lines: the task, its split and data seed; the model, its seed and the optimizer."""
        t, o = cfg.task, cfg.optim
        return (
            f"task: {self.describe(cfg)}, {self.split_text(cfg)}, data seed {t.data_seed}\n"
            f"model: {self.model_text(cfg)}, seed {cfg.train.seed}; AdamW lr {o.lr:g}, "
            f"wd {o.weight_decay:g}" + (f", batch {o.batch_size}" if o.batch_size else "")
        )

    def show_lines(self, run: RunLike) -> list[str]:
        """What ``show`` prints between a run's path and its analysis: the config in brief, the
        state, the last evaluation and the two events as the trainer recorded them."""
        status, cfg = run.status or {}, run.config
        lines = [
            self.config_text(cfg),
            f"{status.get('state', 'unknown')}: {status.get('epochs_done', 0)} of "
            f"{cfg.train.epochs} {self.unit}s, {len(run.epochs)} checkpoints"
            + (f"; error: {status['error']}" if status.get("error") else ""),
        ]
        if run.metrics is not None and len(run.metrics):
            lines.append(self.last_eval_text(run.metrics.iloc[-1].to_dict()))
        a, b = self.events
        lines.append(
            f"{a.name} {status.get('t_mem_epoch')}, {b.name} {status.get('t_grok_epoch')} "
            f"({self.unit}s; None: not yet)"
        )
        return lines

    def analysis_lines(self, summary: dict) -> list[str]:
        """What ``analyze`` prints about the summary it wrote (the headline by default)."""
        return self.summary_lines(summary)

    def last_eval_text(self, row: dict) -> str:
        """The last metrics row (``show``)."""
        return (
            f"at {self.unit} {int(row['epoch'])}: train acc {row['train_acc']:.3f} loss "
            f"{row['train_loss']:.2e}; test acc {row['test_acc']:.3f} loss {row['test_loss']:.2e}"
        )

    # -- report --------------------------------------------------------------------------------

    def report_rows(self, run: RunLike) -> dict[str, str]:
        """The report's headline table, labelled in words."""
        return {}

    def report_sections(self, run: RunLike) -> list[tuple[str, str]]:
        """Extra sections of the report: (title, an HTML table, e.g. from
        :func:`grokscope.report.html.html_table`)."""
        return []

    def curves_figure(self, run: RunLike, folder: Path) -> Path:
        """The training-curves figure of the report, drawn when the run has none yet."""
        raise NotImplementedError

    figure_captions: dict[str, str] = {}

    # -- across runs ---------------------------------------------------------------------------

    def convergence(self, run: RunLike, threshold: float | None) -> int | None:
        """When the run converged, for the training map (None: never within its budget)."""
        col = self.events[1].column
        own = getattr(run.config.train, self.events[1].threshold)
        limit = own if threshold is None else threshold
        return event_epoch(run.metrics, col, limit)

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        raise GrokscopeError(f"no sweep summary for {self.name} runs")
