"""Documents with paragraphs, topics and boundaries (:mod:`grokscope.tasks.documents`): language
models scored against the exact predictor of every level (token frequencies, sentence,
paragraph topic, topic trajectory, genre) at every evaluation, level transitions t*_k, and per
checkpoint the adaptation after a topic change, boundary inference and the responses to edits
that separate the paragraph marker from content."""

from __future__ import annotations

from pathlib import Path

from grokscope.config import Config, ConfigError, TaskConfig
from grokscope.kinds.base import SweepView
from grokscope.kinds.language import (
    CURVATURE_REFUSED,
    ORDER_TEXT,
    LanguageKind,
    plateau_text,
    step_text,
)
from grokscope.tasks.documents import (
    FIRST_WORD,
    LEVEL_NAMES,
    LEVELS,
    TEMPLATE_LENGTHS,
    DocumentError,
    check_settings,
    documents_task,
    make_grammar,
)

FIELDS = (
    "task.doc_genres", "task.doc_paragraphs", "task.doc_topics", "task.doc_topic_words",
    "task.doc_topic_overlap", "task.doc_function_words", "task.doc_templates",
    "task.doc_sentences", "task.doc_boundary",
)  # fmt: skip

CAPTIONS = {
    "documents_loss": "Train and test loss per token with the exact plateaus H_k of the test set "
    "(dashed: the best loss knowing structure up to level k) and each level's transition t*_k.",
    "documents_levels": "Left: KL divergence from each level's exact predictor to the model on "
    "the test set. Right: each level's coefficient c_k (0: none of the level's evidence, 1: all "
    "of it; thick test, dashed train).",
    "documents_adaptation": "Loss on the d-th content word after a topic change (paragraphs "
    "after the first), at checkpoints through training (colour), beside the exact curves of the "
    "paragraph, trajectory and genre levels (dashed).",
    "documents_interventions": "Responses to edits over training: the signed change of the "
    "target topic's share in the model's predictions at the probes, over the exact predictor's "
    "change (1: as an optimal model; above 1: over-reacts; below 0: moves the wrong way).",
}


def grammar_of(t: TaskConfig):
    return make_grammar(
        t.doc_genres, t.doc_paragraphs, t.doc_topics, t.doc_topic_words, t.doc_topic_overlap,
        t.doc_function_words, t.doc_templates, t.doc_sentences, t.doc_boundary, t.data_seed,
    )  # fmt: skip


def validate(cfg: Config) -> None:
    """A document language that can exist and whose exact references fit in memory."""
    from grokscope.tasks.document_inference import MAX_REFERENCE_BYTES, reference_bytes

    t = cfg.task
    try:
        check_settings(
            t.doc_genres, t.doc_paragraphs, t.doc_topics, t.doc_topic_words,
            t.doc_topic_overlap, t.doc_function_words, t.doc_templates, t.doc_sentences,
            t.doc_boundary,
        )  # fmt: skip
    except DocumentError as e:
        raise ConfigError(str(e)) from None
    if t.doc_paragraphs > 12 or t.doc_sentences > 12:
        raise ConfigError(
            "task.doc_paragraphs and task.doc_sentences must be at most 12 (the exact inference "
            "tracks every paragraph and sentence index)"
        )
    # the longest document any seed's templates allow (DocumentGrammar.max_length's bound)
    width = 2 + t.doc_paragraphs * t.doc_sentences * (TEMPLATE_LENGTHS[1] + 2)
    vocab = (
        FIRST_WORD + t.doc_function_words + t.doc_topics * (t.doc_topic_words - t.doc_topic_overlap)
    )
    # the largest evaluation set held at once (training slice, test, generalization)
    n = max(min(t.n_train, t.n_test), t.n_test, t.n_gen)
    need = reference_bytes(n, width, vocab)
    if need > MAX_REFERENCE_BYTES:
        raise ConfigError(
            f"the exact per-level references of {n} documents could take {need / 2**30:.1f} GiB "
            f"(limit {MAX_REFERENCE_BYTES / 2**30:g} GiB): lower task.n_test / task.n_gen, "
            "task.doc_paragraphs or task.doc_sentences"
        )


class Documents(LanguageKind):
    name = "documents"
    tasks = ("documents",)
    figure_captions = CAPTIONS
    accuracy_words = "agreement with the exact predictor"

    def build_dataset(self, t: TaskConfig):
        return documents_task(grammar_of(t), t.n_train, t.n_dev, t.n_test, t.n_gen, t.data_seed)

    def train_data(self, cfgs, datasets, device):
        from grokscope.kinds.documents.data import DocumentData

        return DocumentData.for_batch(cfgs, datasets, device)

    def level_count(self, cfg: Config) -> int:
        return LEVELS

    def export_tables(self, cfg: Config, ds) -> tuple[dict, dict]:
        """The documents, each with its gold latents per token (genre, paragraph, topic,
        sentence, template, slot, role; -1 where one does not apply)."""
        import numpy as np

        from grokscope.tasks.documents import LATENT_NAMES

        tables, sheet = super().export_tables(cfg, ds)
        for split, table in list(tables.items()):
            sp, lat = ds.splits[split], ds.info["latents"][split]
            table = tables[split] = table.drop(
                columns=["answer_start", "target", "sentence_len", "tree"]
            )
            for name in LATENT_NAMES:
                parts = np.split(lat[name], sp.offsets[1:-1]) if len(sp) else []
                table[name] = [part.tolist() for part in parts]
        g = ds.info["grammar"]
        sheet.update(
            {
                "roles": "0 <bos>, 1 word, 2 '.', 3 <par> at a boundary, 4 <par> inside a "
                "paragraph, 5 <eos>",
                "templates": [list(t) for t in g.templates],
                "paragraph_counts": list(g.paragraph_counts),
                "topic_vocabularies": [g.topic_vocabulary(z).tolist() for z in range(g.topics)],
            }
        )
        return tables, sheet

    def describe(self, cfg: Config) -> str:
        t = cfg.task
        return (
            f"documents ({t.doc_boundary} boundaries, {t.doc_genres} genres, {t.doc_topics} "
            f"topics of {t.doc_topic_words} words), {t.n_train} training documents"
        )

    def split_text(self, cfg: Config) -> str:
        return f"{cfg.task.n_test} test / {cfg.task.n_gen} generalization documents"

    def run_name(self, cfg: Config) -> str:
        t = cfg.task
        return f"docs-{t.doc_boundary}-P{t.n_train}-L{cfg.model.n_layers}"

    def analysis(self, run, options: dict):
        from grokscope.kinds.documents.analysis import DocumentAnalysis

        self.refuse_options(options, CURVATURE_REFUSED)
        return DocumentAnalysis(run, options)

    def summary_lines(self, s: dict) -> list[str]:
        lang = s["language"]
        plateaus = plateau_text(s["plateaus_test"])
        times = []
        f = s["final"]
        for k, entry in s["levels"].items():
            t = entry.get("test", {}).get("t_star")
            c, se = f.get(f"coef_l{k}_test"), f.get(f"coef_se_l{k}_test")
            times.append(
                f"level {k} ({LEVEL_NAMES[int(k)]}): t* {'not reached' if t is None else t}"
                + ("" if c is None else f", final c_{k} {c:.2f}")
                + ("" if se is None else f" ± {se:.2f} (s.e. over test documents)")
            )
        surprise = s["surprise_exact"]
        lines = [
            f"{len(s['analysed_epochs'])} checkpoints analysed in {s['analysis_wall_s']:.1f} s",
            f"documents: {lang['boundary']} boundaries, {lang['genres']} genres "
            f"({lang['paragraph_counts']} paragraphs), {lang['topics']} topics; "
            f"{s['n_train']} training documents; test plateaus {plateaus}",
            *times,
            f"levels learned in order: {ORDER_TEXT[s['in_order']]}",
            f"surprise on a paragraph's first words: model {_num(f.get('surprise_model_test'))}, "
            f"exact paragraph level {_num(surprise.get('2'))}, trajectory {_num(surprise.get('3'))}"
            f", genre {_num(surprise.get('4'))} nats",
            "responses to edits (model / exact): "
            + ", ".join(f"{n} {_num(f.get(f'response_{n}'))}" for n in s["edit_pairs"]),
        ]
        if f.get("boundary_auc_model") is not None:
            lines.append(
                f"boundary read from content: AUC model {_num(f['boundary_auc_model'])}, exact "
                f"{_num(f.get('boundary_auc_exact'))}; correlation with the exact posterior "
                f"{_num(f.get('boundary_corr'))}"
            )
        return lines

    def report_rows(self, run) -> dict[str, str]:
        rows = super().report_rows(run)
        summary = run.summary or {}
        if summary.get("kind") != "documents":
            return rows
        rows["exact plateaus of the test set (nats)"] = plateau_text(summary["plateaus_test"])
        for k, entry in summary["levels"].items():
            te = entry.get("test", {})
            rows[f"level {k} ({LEVEL_NAMES[int(k)]}) transition t*_{k} (test / train)"] = (
                f"{step_text(te.get('t_star'))} / {step_text(entry.get('train', {}).get('t_star'))}"
            )
        rows["levels learned in order"] = ORDER_TEXT[summary["in_order"]]
        return rows

    def convergence(self, run, threshold: float | None) -> int | None:
        """The transition of the genre level on the test set (None until reached)."""
        from grokscope.dynamics.levels import level_events

        top = level_events(run.metrics, LEVELS)["levels"].get(str(LEVELS), {})
        return top.get("test", {}).get("t_star")

    def sweep_summary(self, root: Path, manifest: dict, figures: bool, options: dict) -> SweepView:
        from grokscope.kinds.documents.sweep_summary import document_lines, response_figure
        from grokscope.kinds.tree_language.sweep_summary import levels_view

        view = levels_view(root, manifest, figures)
        extra = document_lines(root, manifest)
        if figures:
            path = response_figure(
                root, manifest, Path(root) / "figures" / "documents_responses.png"
            )
            view.figures += [path] if path is not None else []
        wrote = f"wrote {Path(root) / 'summary.parquet'} and {len(view.figures)} figures"
        view.lines = [*view.lines[:-1], *extra, wrote]
        return view


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


KIND = Documents()

__all__ = ["FIELDS", "KIND", "ConfigError", "validate"]
