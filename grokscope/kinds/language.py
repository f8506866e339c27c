"""What the language-model kinds (structural grokking, tree languages) share: one optimizer step
per loop epoch, in-distribution and generalization events, and their lines."""

from __future__ import annotations

from grokscope.config import Config
from grokscope.events import STRUCTURAL_SUSTAIN
from grokscope.kinds.base import Event, Kind

# the curvature columns need a full-batch training loss over fixed examples
CURVATURE_REFUSED = {"curvature_every": "curvature is measured on algorithmic runs only"}


def step_text(value) -> str:
    return "not reached" if value is None else f"step {value}"


# the ordering verdict of grokscope.dynamics.levels.in_order, in words
ORDER_TEXT = {True: "yes", False: "no", None: "undecided (fewer than two levels reached, or a tie)"}


def plateau_text(plateaus: dict) -> str:
    """The exact plateaus H_k of a level summary, as 'H0 3.160, H1 1.818, ...'."""
    return ", ".join(f"H{k} {v:.3f}" for k, v in plateaus.items() if v is not None)


class LanguageKind(Kind):
    """A kind whose runs are language models, one optimizer step per epoch, seeds of one
    dataset trained together as stacked weights."""

    unit = "step"
    events = (
        Event("t_id", "id_acc", "mem_threshold"),
        # held for 3 evaluations, as structural_events reads it from the metrics: the trainer,
        # show, runs, analyze and the report give the same t_gen
        Event("t_gen", "gen_acc", "grok_threshold", STRUCTURAL_SUSTAIN),
    )

    # what id_acc / gen_acc measure, in words: the task's accuracy (structural tasks) or, where
    # the next token is random, agreement with the exact (Bayes) predictor's most likely tokens
    accuracy_words = "accuracy"

    def trains_alone(self, cfg: Config) -> bool:
        # seeds of one dataset stack (grokscope.train.lm_data); seeds of different data do not
        return False

    def check_batch(self, cfgs: list[Config]) -> None:
        from grokscope.train.lm_data import check_one_dataset

        check_one_dataset(cfgs)

    def status_names(self) -> dict[str, str]:
        """status.json names what a language model's run holds: its events are t_id and t_gen,
        its loop counts optimizer steps."""
        return {
            "t_mem_epoch": "t_id_step",
            "t_grok_epoch": "t_gen_step",
            "epochs_done": "steps_done",
            "epochs_budget": "steps_budget",
            "diverged_epoch": "diverged_step",
        }

    def model_text(self, cfg: Config) -> str:
        m = cfg.model
        return (
            f"{m.n_layers}-layer {m.ln_position}-LN transformer LM d_model {m.d_model}, "
            f"{m.n_heads} heads, d_ff {m.d_mlp}, dropout {m.dropout:g}"
        )

    def split_text(self, cfg: Config) -> str:
        return f"{cfg.task.n_test} test / {cfg.task.n_gen} generalization lines"

    def subtitle_split(self, cfg: Config) -> str:
        return ""

    def progress_text(self, row: dict) -> str:
        return (
            f"id/gen acc {row['id_acc']:.3f}/{row['gen_acc']:.3f} "
            f"loss {row['train_loss']:.2f}/{row['gen_loss']:.2f}"
        )

    def last_eval_text(self, row: dict) -> str:
        return (
            f"at step {int(row['epoch'])}: in-distribution acc {row['id_acc']:.3f}, "
            f"generalization acc {row['gen_acc']:.3f}; LM loss train {row['train_loss']:.3f} "
            f"gen {row['gen_loss']:.3f}"
        )

    def report_rows(self, run) -> dict[str, str]:
        status, cfg = run.status or {}, run.config
        metrics = run.metrics
        last = metrics.iloc[-1].to_dict() if metrics is not None and len(metrics) else {}
        rows = {
            "state": f"{status.get('state')}, {status.get('epochs_done')} of "
            f"{cfg.train.epochs} steps",
        }
        words = self.accuracy_words
        if last:
            rows[f"{words} at the last evaluation"] = (
                f"in distribution {last['id_acc']:.3f}, generalization {last['gen_acc']:.3f}"
            )
        # the kind's two events, under status.json's core keys
        for ev, key, where in zip(
            self.events, ("t_mem_epoch", "t_grok_epoch"), ("in-distribution", "generalization"),
            strict=True,
        ):  # fmt: skip
            text = step_text(status.get(key))
            if status.get(key) is None and metrics is not None and ev.column in metrics:
                text += f": the {where} {words} peaked at {metrics[ev.column].max():.3f}"
            threshold = getattr(cfg.train, ev.threshold)
            rows[f"{ev.name} ({where} {words} >= {threshold:g})"] = text
        return rows

    def curves_figure(self, run, folder):
        from grokscope.dynamics.structural import structural_events
        from grokscope.report.structural_figures import accuracy_figure

        r = run.config.train
        events = structural_events(run.metrics, r.mem_threshold, r.grok_threshold)
        return accuracy_figure(
            run.metrics, events, run.path.name, folder / "accuracy.png",
            (r.mem_threshold, r.grok_threshold), self.accuracy_words,
        )  # fmt: skip
