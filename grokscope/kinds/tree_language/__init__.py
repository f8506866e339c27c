"""Tree languages (the Random Hierarchy Model of Cagnetta et al. 2024, optionally filtered as in
Garnier-Brun et al. 2025): language models scored against the exact predictor of every level at
every evaluation, level transitions t*_k, the perturbation cascade per checkpoint, the
training-set size each level needs per sweep."""

from __future__ import annotations

from pathlib import Path

from grokscope.config import Config, TaskConfig
from grokscope.kinds.base import SweepView
from grokscope.kinds.language import (
    CURVATURE_REFUSED,
    ORDER_TEXT,
    LanguageKind,
    plateau_text,
    step_text,
)
from grokscope.tasks.tree_language import tree_language_task

CAPTIONS = {
    "levels_loss": "Train and test loss per token with the exact plateaus H_k of the test set "
    "(dashed: the best loss using correlations up to level k) and each level's transition t*_k.",
    "levels_kl": "Left: KL divergence from each level's exact predictor to the model on the test "
    "set. Right: each level's coefficient c_k, the weight of that level's evidence in the "
    "model's log-likelihood (0: none of it, 1: all of it; thick test, dashed train; a run "
    "recorded before the coefficients shows the positional progress f_k, as its axis says).",
    "levels_positions": "Test loss at every position before and after each transition, with the "
    "exact per-position plateaus; digits: the level each position's prediction needs.",
    "levels_cascade": "Perturbation cascade: swap one node of level k, regenerate below it; the "
    "model's response relative to the exact predictor's, per level of the predicted positions.",
}


def filter_text(g: dict) -> str:
    """'unfiltered', or the filter level and its rule."""
    if g.get("filter_level") is None or g["filter_level"] >= g["levels"]:
        return "unfiltered"
    rule = g.get("filter_rule")
    return f"filtered at level {g['filter_level']}" + (f" ({rule})" if rule else "")


MEASURE_TEXT = {
    "coefficient": "coefficients c_k (level-specific, every position)",
    "positional": "positional progress f_k (recorded before the coefficients; not level-specific)",
}


class TreeLanguage(LanguageKind):
    name = "tree_language"
    tasks = ("tree_language",)
    figure_captions = CAPTIONS
    accuracy_words = "agreement with the exact predictor"

    def build_dataset(self, t: TaskConfig):
        return tree_language_task(
            t.tree_levels,
            t.tree_vocab,
            t.tree_rules,
            t.tree_branching,
            t.tree_levels if t.tree_filter < 0 else t.tree_filter,
            t.tree_units,
            t.tree_boundary,
            t.n_train, t.n_dev, t.n_test, t.n_gen, t.data_seed, t.tree_filter_rule,
        )  # fmt: skip

    def train_data(self, cfgs, datasets, device):
        from grokscope.kinds.tree_language.data import TreeData

        return TreeData.for_batch(cfgs, datasets, device)

    def level_count(self, cfg: Config) -> int:
        return cfg.task.tree_levels

    def export_tables(self, cfg: Config, ds) -> tuple[dict, dict]:
        """The sequences with the symbols of every level above the tokens: ``latent_l{l}`` per
        sequence, one list per unit, of the level-l nodes left to right."""
        tables, sheet = super().export_tables(cfg, ds)
        g = ds.info["grammar"]
        for split, table in tables.items():
            for level in range(1, g.levels + 1):
                table[f"latent_l{level}"] = ds.info["latents"][split][level].tolist()
        sheet.update(
            {
                "grammar": {"levels": g.levels, "vocab": g.vocab, "rules": g.rules_per_symbol,
                            "branching": g.branching},
                "rules": [r.tolist() for r in g.rules],
                "filter_level": ds.info["filter_level"],
                "filter_rule": ds.info.get("filter_rule"),
                "token_offset": ds.info["token_offset"],
            }
        )  # fmt: skip
        return tables, sheet

    def describe(self, cfg: Config) -> str:
        t = cfg.task
        filtered = (
            "" if t.tree_filter < 0 else f" filtered at {t.tree_filter} ({t.tree_filter_rule})"
        )
        return (
            f"tree language L={t.tree_levels} v={t.tree_vocab} m={t.tree_rules} "
            f"s={t.tree_branching}{filtered}, {t.n_train} training sequences"
        )

    def run_name(self, cfg: Config) -> str:
        t = cfg.task
        return f"tree{t.tree_levels}-P{t.n_train}-L{cfg.model.n_layers}"

    def analysis(self, run, options: dict):
        from grokscope.kinds.tree_language.analysis import TreeAnalysis

        self.refuse_options(options, CURVATURE_REFUSED)
        return TreeAnalysis(run, options)

    def summary_lines(self, s: dict) -> list[str]:
        g = s["grammar"]
        plateaus = plateau_text(s["plateaus_test"])
        times = []
        for k, entry in s["levels"].items():
            te, tr = entry.get("test", {}), entry.get("train", {})
            if not te.get("measurable"):
                times.append(f"level {k}: no signal")
                continue
            t = te.get("t_star")
            rise = "" if te.get("rise") is None else f", rise {te['rise']}"
            gap = "" if entry.get("gap") is None else f", train first by {entry['gap']}"
            times.append(
                f"level {k}: t* {'not reached' if t is None else t} "
                f"(train {tr.get('t_star')}{rise}{gap})"
            )
        order = ORDER_TEXT[s["in_order"]]
        f = s["final"]
        kl = ", ".join(
            f"KL to level {k} {f[f'kl_l{k}_test']:.3f}"
            for k in s["plateaus_test"]
            if f.get(f"kl_l{k}_test") is not None
        )
        return [
            f"{len(s['analysed_epochs'])} checkpoints analysed in {s['analysis_wall_s']:.1f} s",
            f"grammar L={g['levels']} v={g['vocab']} m={g['rules']} s={g['branching']}, "
            f"{filter_text(g)}, {s['n_train']} training sequences; "
            f"test plateaus {plateaus}",
            f"transitions read on the level {MEASURE_TEXT[s.get('measure', 'positional')]}",
            *times,
            f"levels learned in order: {order}; final test {kl or '-'}",
        ]

    def report_rows(self, run) -> dict[str, str]:
        rows = super().report_rows(run)
        summary = run.summary or {}
        if summary.get("kind") != "tree_language":
            return rows
        plateaus = plateau_text(summary["plateaus_test"])
        rows["exact plateaus of the test set (nats)"] = plateaus
        for k, entry in summary["levels"].items():
            te = entry.get("test", {})
            rows[f"level {k} transition t*_{k} (test / train)"] = (
                f"{step_text(te.get('t_star'))} / "
                f"{step_text(entry.get('train', {}).get('t_star'))}"
                + ("" if te.get("rise") is None else f", rise {te['rise']} steps")
            )
        rows["levels learned in order"] = ORDER_TEXT[summary["in_order"]]
        rows["level progress read on"] = MEASURE_TEXT[summary.get("measure", "positional")]
        return rows

    def convergence(self, run, threshold: float | None) -> int | None:
        """The transition of the highest level on the test set (t*_L; None until reached)."""
        from grokscope.dynamics.levels import level_events

        levels = run.config.task.tree_levels
        top = level_events(run.metrics, levels)["levels"].get(str(levels), {})
        return top.get("test", {}).get("t_star")

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        from grokscope.kinds.tree_language.sweep_summary import levels_view

        return levels_view(root, manifest, figures)


KIND = TreeLanguage()
