"""Structural grokking (Murty, Sharma, Andreas & Manning, ACL 2023): language models on question
formation, tense inflection and Dyck; in-distribution and generalization accuracy, t_id and
t_gen, tree projections per checkpoint, predictor correlations per sweep."""

from __future__ import annotations

from pathlib import Path

from grokscope.config import Config, TaskConfig
from grokscope.display import f3, fmt, isnull
from grokscope.kinds.base import SweepView
from grokscope.kinds.language import CURVATURE_REFUSED, LanguageKind
from grokscope.tasks.dyck import dyck_task
from grokscope.tasks.question_formation import question_formation_task
from grokscope.tasks.tense_inflection import tense_inflection_task

CAPTIONS = {
    "accuracy": "In-distribution and generalization accuracy over steps (left; dotted: t_id and "
    "t_gen where reached, the legend names those that were not), language-model loss per token "
    "(right).",
    "tree_measures": "Tree-structuredness over training (tree score, bracketing F1 of the induced "
    "trees against the gold parses) and the two rival predictors: weight norm, attention entropy.",
    "trees": "Trees induced from the final model (left) beside the grammar's parses (right).",
}


FLAG_TEXT = {
    True: "yes",
    False: "no",
    None: "undecided (censored, no t_id, or the evaluation grid cannot tell)",
}


class Structural(LanguageKind):
    name = "structural"
    tasks = ("question_formation", "tense_inflection", "dyck")
    figure_captions = CAPTIONS

    def build_dataset(self, t: TaskConfig):
        sizes = (t.n_train, t.n_dev, t.n_test, t.n_gen, t.data_seed)
        if t.name == "question_formation":
            return question_formation_task(*sizes)
        if t.name == "tense_inflection":
            return tense_inflection_task(*sizes)
        return dyck_task(t.dyck_k, t.dyck_depth, *sizes, max_len=t.max_len)

    def train_data(self, cfgs, datasets, device):
        from grokscope.kinds.structural.data import StructuralData

        return StructuralData.for_batch(cfgs, datasets, device)

    def describe(self, cfg: Config) -> str:
        t = cfg.task
        if t.name == "dyck":
            return f"Dyck-{t.dyck_k}, depth {t.dyck_depth}, {t.n_train} training strings"
        what = "question formation" if t.name == "question_formation" else "tense inflection"
        return f"{what}, {t.n_train} training sentences"

    def run_name(self, cfg: Config) -> str:
        t, layers = cfg.task, cfg.model.n_layers
        if t.name == "dyck":
            return f"dyck{t.dyck_k}-{t.dyck_depth}-L{layers}"
        return f"{'qf' if t.name == 'question_formation' else 'tense'}-L{layers}"

    def analysis(self, run, options: dict):
        from grokscope.kinds.structural.analysis import StructuralAnalysis

        self.refuse_options(options, CURVATURE_REFUSED)
        return StructuralAnalysis(run, options)

    def summary_lines(self, s: dict) -> list[str]:
        f = {k: (float("nan") if v is None else v) for k, v in s["final"].items()}
        flag = FLAG_TEXT[s["structural_grokking"]]
        lag = s["lag_steps"]
        if lag is None:
            lag = "-" if s["lag_lower_steps"] is None else f"> {s['lag_lower_steps']}"
        baseline = s.get("f1_baselines", {}).get("right_branching", float("nan"))
        return [
            f"{len(s['analysed_epochs'])} checkpoints analysed in {s['analysis_wall_s']:.1f} s",
            f"t_id {s['t_id_step']}, t_gen {s['t_gen_step']} (steps); lag {lag}; "
            f"structural grokking: {flag}",
            f"final: id acc {f['id_acc']:.3f}, gen acc {f['gen_acc']:.3f}, tree score "
            f"{f['tree_score']:.3f}, bracketing F1 {f['bracket_f1']:.3f} "
            f"({s['tree_sentences']} sentences; right-branching trees: {baseline:.3f})",
        ]

    def report_rows(self, run) -> dict[str, str]:
        from grokscope.report.html import text as _text

        rows = super().report_rows(run)
        summary = run.summary or {}
        if summary.get("kind") != "sequence":
            return rows
        rows["structural grokking (t_gen > 2 t_id)"] = FLAG_TEXT[summary["structural_grokking"]]
        f = summary["final"]
        rows["final tree score / bracketing F1"] = (
            f"{_text(f['tree_score'])} / {_text(f['bracket_f1'])} "
            f"({summary['tree_sentences']} test sentences)"
        )
        rows["final weight norm / attention entropy"] = (
            f"{_text(f['weight_norm'])} / {_text(f['attn_entropy'])} nats"
        )
        return rows

    def convergence(self, run, threshold: float | None) -> int | None:
        """t_gen: generalization accuracy held at the threshold (the structural rule)."""
        from grokscope.dynamics.structural import structural_events

        r = run.config.train
        limit = r.grok_threshold if threshold is None else threshold
        return structural_events(run.metrics, r.mem_threshold, limit)["t_gen_step"]

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        from grokscope.kinds.structural.sweep_summary import summarize_structural

        _, cells, corr, trend, paths = summarize_structural(root, manifest, figures)
        fields = list(manifest["spec"]["grid"])
        rows = [
            [
                *[fmt(row[f]) for f in fields],
                f"{row['n_done']}/{row['n_runs']}",
                f3(row["gen_acc_mean"]),
                _interval(row, "gen_acc_last5k"),
                f3(row["gen_acc_max_mean"]),
                f"{row['n_structural']}/{row['n_done']}"
                + (
                    ""
                    if isnull(row["structural_lo"])
                    else f" ({row['structural_lo']:.2f}-{row['structural_hi']:.2f})"
                ),
                f3(row["tree_score_mean"]),
                f3(row["bracket_f1_mean"]),
                "-" if isnull(row["weight_norm_mean"]) else f"{row['weight_norm_mean']:.1f}",
                f3(row["attn_entropy_mean"]),
            ]
            for _, row in cells.iterrows()
        ]
        lines = [
            f"spearman({c['measure']}, final gen acc) = {f3(c['rho'])} "
            f"(p {f3(c['p'])}, {c['n_runs']} finished and analysed runs)"
            for _, c in corr.iterrows()
        ]
        lines.append(trend_text(trend))
        lines.append(
            f"means over finished runs (intervals 95 %: t over seeds, Clopper-Pearson for the "
            f"share grokking structurally); wrote {Path(root) / 'summary.parquet'}, runs.parquet"
            + (f" and {len(paths)} figure" if paths else "")
        )
        headers = [f.split(".")[-1] for f in fields] + [
            "done", "gen acc", "last 5k (95% CI)", "max gen", "structural", "tree score", "F1",
            "weight norm", "attn entropy",
        ]  # fmt: skip
        return SweepView(headers, rows, lines, paths)


def _interval(row, col: str) -> str:
    mean, lo, hi = row.get(f"{col}_mean"), row.get(f"{col}_lo"), row.get(f"{col}_hi")
    if mean is None or isnull(mean):
        return "-"
    return f3(mean) + ("" if lo is None or isnull(lo) else f" ({lo:.2f}-{hi:.2f})")


def trend_text(trend: dict | str) -> str:
    """The inverted-U tests in one line (grokscope.dynamics.depth_trend)."""
    if isinstance(trend, str):
        return f"inverted U over depth: not tested: {trend}"
    c, q = trend["contrast"], trend["quadratic"]
    return (
        f"inverted U over depth (last-5k generalization; negative = inverted U): ends - middle "
        f"{c['contrast']:+.3f} (95 % CI {c['low']:+.3f} to {c['high']:+.3f}, p {c['p']:.3f}); "
        f"quadratic term {q['b2']:+.4f} per layer^2 (95 % CI {q['low']:+.4f} to "
        f"{q['high']:+.4f}, p {q['p']:.3f})"
    )


KIND = Structural()
