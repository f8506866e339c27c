"""Algorithmic tasks (modular arithmetic, permutations, sparse parity): fixed-length examples
with one label, seeds trained stacked, the progress measures of Nanda et al. (2023), phases,
geometry and curvature per checkpoint, Kaplan-Meier grokking times per sweep cell."""

from __future__ import annotations

from pathlib import Path

from grokscope import display
from grokscope.config import Config, TaskConfig
from grokscope.kinds.algorithmic.captions import CAPTIONS
from grokscope.kinds.base import Kind, SweepView
from grokscope.tasks.modular import modular_task
from grokscope.tasks.parity import sparse_parity_task
from grokscope.tasks.permutation import permutation_task

# the analysis, report and training data (torch, matplotlib) are imported where they are used,
# so that the registry, and every one-line error before training, stays light


class Algorithmic(Kind):
    name = "algorithmic"
    tasks = ("modular", "permutation", "sparse_parity")
    figure_captions = CAPTIONS
    delay_laws = True

    def build_dataset(self, t: TaskConfig):
        if t.name == "modular":
            return modular_task(t.op, t.p, t.train_fraction, t.data_seed)
        if t.name == "permutation":
            return permutation_task(t.op, t.group_n, t.train_fraction, t.data_seed)
        return sparse_parity_task(t.n_bits, t.k_bits, t.n_samples, t.train_fraction, t.data_seed)

    def train_data(self, cfgs, datasets, device):
        from grokscope.train.examples import ExampleData

        return ExampleData.for_batch(cfgs, datasets, device)

    def export_tables(self, cfg: Config, ds) -> tuple[dict, dict]:
        """The train and test examples: ``index`` (in the complete table), ``tokens``, ``label``
        and, for binary operations, the operands ``a`` and ``b``."""
        import pandas as pd

        tables = {}
        for split, idx in (("train", ds.train_idx), ("test", ds.test_idx)):
            table = pd.DataFrame(
                {"index": idx, "tokens": ds.tokens[idx].tolist(), "label": ds.labels[idx]}
            )
            if ds.operands is not None:
                table["a"], table["b"] = ds.operands[idx, 0], ds.operands[idx, 1]
            tables[split] = table
        sheet = {
            "split_rule": f"a seeded random {cfg.task.train_fraction:g} of all examples "
            "(task.data_seed), the rest test",
            "examples": int(len(ds.labels)),
            "tokens": "the input sequence; the last token is '=', whose position the label "
            "is read at; label ids lie in [0, n_classes)",
            "n_classes": int(ds.n_classes),
            "d_vocab": int(ds.d_vocab),
        }
        return tables, sheet

    def trains_alone(self, cfg: Config) -> bool:
        # an intervention at T_mem changes each seed's optimizer at its own memorization
        return cfg.optim.at_mem != "none"

    def model_text(self, cfg: Config) -> str:
        m = cfg.model
        if m.kind == "transformer":
            return f"{m.n_layers}-layer transformer d_model {m.d_model}"
        return f"{m.n_layers}-layer MLP width {m.d_mlp} ({m.act})"

    def describe(self, cfg: Config) -> str:
        t = cfg.task
        if t.name == "modular":
            return f"({t.op}) mod {t.p}"
        if t.name == "permutation":
            return f"S{t.group_n}: {t.op}"
        return f"sparse parity n={t.n_bits} k={t.k_bits}"

    def run_name(self, cfg: Config) -> str:
        t = cfg.task
        what = {"modular": f"{t.op}-p{t.p}", "permutation": f"S{t.group_n}-{t.op}"}.get(
            t.name, f"parity-n{t.n_bits}-k{t.k_bits}"
        )
        return what.replace("/", "div").replace("*", "mul").replace("^", "").replace(" ", "_")

    def analysis(self, run, options: dict):
        from grokscope.kinds.algorithmic.analysis import AlgorithmicAnalysis

        return AlgorithmicAnalysis(run, options)

    def summary_lines(self, summary: dict) -> list[str]:
        from grokscope.dynamics.phases import PHASE_KEYS  # here: the registry loads no pandas

        lines = []
        keys = summary.get("key_frequencies")
        if keys is not None:
            basis = summary.get("fourier_basis")
            listed = ", ".join(str(k) for k in keys) or "none"
            lines.append(f"key frequencies {listed}" + (f" over {basis}" if basis else ""))
            share = display.share(summary.get("neuron_single_freq_share"))
            lines.append(f"single-frequency neurons {share}")
        ph = summary.get("phases") or {}
        if ph:
            ends = [ph.get(k) for k in PHASE_KEYS]
            ends = ["not found" if e is None else e for e in ends]
            lines.append("phases end at epochs {} / {} / {}".format(*ends))
            lines.append("  (memorization / circuit formation / cleanup)")
        return lines

    def analysis_lines(self, summary: dict) -> list[str]:
        """What ``analyze`` prints: the time taken, the events, the headline and the notes."""
        return [
            f"{summary['checkpoints_analysed']} checkpoints analysed in "
            f"{summary['analysis_wall_s']:.1f} s",
            "t_mem {}, t_grok {}".format(
                *(
                    "not reached" if summary[k] is None else f"epoch {summary[k]}"
                    for k in ("t_mem_epoch", "t_grok_epoch")
                )
            ),
            *self.summary_lines(summary),
            *(f"note: {n}" for n in summary["notes"]),
        ]

    def report_rows(self, run) -> dict[str, str]:
        from grokscope.kinds.algorithmic.report import headline_rows

        return headline_rows(run.config, run.status or {}, run.last_row(), run.summary or {})

    def report_sections(self, run) -> list[tuple[str, str]]:
        from grokscope.kinds.algorithmic.report import ablations_table, phases_table

        summary = run.summary or {}
        out = []
        if summary.get("phases"):
            out.append(("Phases", phases_table(summary["phases"])))
        if summary.get("ablations"):
            out.append(("Ablations at the final checkpoint", ablations_table(summary["ablations"])))
        return out

    def curves_figure(self, run, folder: Path) -> Path:
        from grokscope.kinds.algorithmic.report import plot_training_curves

        status = run.status or {}
        return plot_training_curves(
            run.metrics, folder / "training_curves.png", status.get("t_mem_epoch"),
            status.get("t_grok_epoch"),
        )  # fmt: skip

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        from grokscope.kinds.algorithmic.sweep_summary import summarize
        from grokscope.store.sweepdir import grid_fields

        ratio, lag = options.get("time_ratio"), options.get("lag_fraction")
        args = {} if ratio is None else {"time_ratio": ratio}
        _, cells, paths = summarize(root, lag_fraction=lag, figures=figures, **args)
        fields = grid_fields(manifest)

        def num(v) -> str:
            return "inf" if display.isnull(v) else f"{v:g}"

        rows = []
        for _, row in cells.iterrows():
            median = row["t_grok_median"]
            lo, hi = row["t_grok_lo"], row["t_grok_hi"]
            rows.append(
                [
                    *[display.fmt(row[f]) for f in fields],
                    f"{row['n_grokked']}/{row['n_runs']}",
                    "not reached" if display.isnull(median) else f"{median:g}",
                    "-" if display.isnull(lo) else f"{num(lo)}..{num(hi)}",
                    str(row["phase"]),
                ]
            )
        return SweepView(
            [f.split(".")[-1] for f in fields] + ["grokked", "median t_grok", "95% CI", "phase"],
            rows,
            [
                f"phase rule: {cells['phase_rule'].iloc[0]}",
                f"wrote {Path(root) / 'summary.parquet'} and {len(paths)} figures",
            ],
            paths,
        )


KIND = Algorithmic()
