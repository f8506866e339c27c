"""A self-contained HTML report of one run: headline numbers, then every figure, then the config.

Figures are embedded as base64 PNGs so the file can be mailed or attached as it is. The report
reads the run directory and writes only ``report.html`` (and, when the run has no figure of its
training curves yet, ``figures/training_curves.png``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from grokscope.config import describe_task, is_sequence  # noqa: E402
from grokscope.dynamics.structural import structural_events  # noqa: E402
from grokscope.report.structural_figures import accuracy_figure  # noqa: E402
from grokscope.store import rundir  # noqa: E402

# figures we know, in reading order, with a caption each; others follow alphabetically
CAPTIONS = {
    "training_curves": "Loss and accuracy over training (log epoch axis).",
    "loss_phases": "Train and test loss with the automatically found phases shaded.",
    "progress_measures": "Progress measures over training: restricted and excluded loss, Gini "
    "sparsity of the embedding and unembedding in the Fourier basis, weight norm.",
    "embedding_fourier_norms": "Norm of each Fourier component of the embedding.",
    "key_frequency_circles": "The embedding projected on each key frequency's cos / sin "
    "directions: the inputs lie on circles.",
    "neuron_frequency_histogram": "How many MLP neurons are dominated by each frequency.",
    "logit_fourier_spectrum": "2-D Fourier spectrum of the logits over the (a, b) grid.",
    "accuracy": "In-distribution and generalization accuracy over steps (left; dotted: t_id and "
    "t_gen), language-model loss per token (right).",
    "tree_measures": "Tree-structuredness over training (tree score, bracketing F1 of the induced "
    "trees against the gold parses) and the two rival predictors: weight norm, attention entropy.",
    "trees": "Trees induced from the final model (left) beside the grammar's parses (right).",
    "embedding_evolution": "Clouds to circles: each residue's embedding on the top two principal "
    "components of its checkpoint (colour: position on the operand grid), at checkpoints spread "
    "over training; embedding_evolution.gif animates every analysed checkpoint.",
    "geometry": "Geometry over training: circularity of the embedding (mean over key "
    "frequencies, best frequency, PCA-based), Fourier IPR and RQI, and the clock-vs-pizza "
    "diagnostics (distance irrelevance, gradient symmetricity); dotted: t_mem, t_grok.",
    "curvature": "Curvature of the training loss (top Hessian eigenvalue, trace, norm-scaled and "
    "adaptive sharpness, with the training loss) and the local learning coefficient.",
    "levels_loss": "Train and test loss per token with the exact plateaus H_k of the test set "
    "(dashed: the best loss using correlations up to level k) and each level's transition t*_k.",
    "levels_kl": "Left: KL divergence from each level's exact predictor to the model on the test "
    "set. Right: each level's progress on the positions that need it (0: the level below's "
    "predictor, 1: this level's; thick test, dashed train).",
    "levels_positions": "Test loss at every position before and after each transition, with the "
    "exact per-position plateaus; digits: the level each position's prediction needs.",
    "levels_cascade": "Perturbation cascade: swap one node of level k, regenerate below it; the "
    "model's response relative to the exact predictor's, per level of the predicted positions.",
}


def plot_training_curves(metrics, path: Path, t_mem: int | None, t_grok: int | None) -> Path:
    """Train / test loss (log-log) and accuracy against epoch, with t_mem and t_grok marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = metrics["epoch"].clip(lower=1)
    for ax in (ax_loss, ax_acc):
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        for t, label, colour in ((t_mem, "t_mem", "tab:blue"), (t_grok, "t_grok", "tab:red")):
            if t is not None:
                ax.axvline(max(t, 1), color=colour, ls=":", lw=1)
                ax.text(
                    max(t, 1),
                    1.01,
                    f"{label}={t}",
                    color=colour,
                    va="bottom",
                    ha="center",
                    fontsize=8,
                    transform=ax.get_xaxis_transform(),
                )
    ax_loss.plot(epochs, metrics["train_loss"], label="train", color="tab:blue")
    ax_loss.plot(epochs, metrics["test_loss"], label="test", color="tab:red")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, metrics["train_acc"], label="train", color="tab:blue")
    ax_acc.plot(epochs, metrics["test_acc"], label="test", color="tab:red")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.legend(loc="center left")
    fig.suptitle("Training curves", y=0.995)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = path.stem
    caption = CAPTIONS.get(name, name.replace("_", " "))
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _row(key: str, value) -> str:
    return f"<tr><th>{html.escape(key)}</th><td>{html.escape(_text(value))}</td></tr>"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _epoch(value) -> str:
    return "not reached" if value is None else f"epoch {value}"


def headline_rows(cfg, status: dict, last: dict, summary: dict) -> dict[str, str]:
    """The headline numbers, labelled in words; what a run does not have is left out."""
    rows = {
        "state": f"{status.get('state')} after {status.get('epochs_done')} of "
        f"{cfg.train.epochs} epochs ({status.get('wall_s', 0):.0f} s of training)",
        f"memorized (train accuracy ≥ {cfg.train.mem_threshold:g})": _epoch(
            status.get("t_mem_epoch")
        ),
        f"grokked (test accuracy ≥ {cfg.train.grok_threshold:g})": _epoch(
            status.get("t_grok_epoch")
        ),
    }
    if last:
        rows["final loss, train / test"] = f"{last['train_loss']:.3g} / {last['test_loss']:.3g}"
        rows["final accuracy, train / test"] = f"{last['train_acc']:.3f} / {last['test_acc']:.3f}"
    keys = summary.get("key_frequencies")
    if keys is not None:
        basis = summary.get("fourier_basis")
        rows["key frequencies"] = _text(keys) + (f" (Fourier basis: {basis})" if basis else "")
    share = summary.get("neuron_single_freq_share")
    if share is not None:
        rows["single-frequency MLP neurons (≥ 85 % of energy in one)"] = f"{share:.1%}"
    return rows


PHASE_LABELS = {
    "memorization_end": "memorization",
    "circuit_formation_end": "circuit formation",
    "cleanup_end": "cleanup",
}
ABLATION_LABELS = {
    "none": "nothing removed",
    "keep_key": "only the key frequencies kept",
    "remove": "frequency {freq} removed",
}


def phases_table(phases: dict) -> str:
    """Each phase with the epochs it spans (Nanda et al. 2023's three phases)."""
    rows, start = [], 0
    for key, label in PHASE_LABELS.items():
        end = phases.get(key)
        rows.append([label, f"{start}", "not found" if end is None else f"{end}"])
        if end is None:
            break
        start = end
    return _table(["phase", "from epoch", "to epoch"], rows)


def ablations_table(ablations: list[dict]) -> str:
    """Loss after each ablation of the final checkpoint, logits and neurons."""
    rows = []
    for a in ablations:
        what = ABLATION_LABELS.get(a["ablation"], a["ablation"]).format(freq=a.get("freq"))
        rows.append([a["target"], what, a["loss"], a.get("test_loss")])
    return _table(["ablated in", "what", "loss (all pairs)", "test loss"], rows)


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.5em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0} th,td{padding:.3em .8em;border-bottom:1px solid #ddd;
text-align:left} th{font-weight:600;color:#444}
figure{margin:1.5em 0} img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} pre{background:#f6f6f6;padding:1em;overflow:auto}
"""


def sequence_rows(cfg, status: dict, last: dict, summary: dict) -> dict[str, str]:
    """The headline of a sequence run: where it stands, t_id / t_gen, the final tree measures."""
    rows = {
        "state": f"{status.get('state')}, {status.get('epochs_done')} of {cfg.train.epochs} steps",
    }
    if last:
        rows["accuracy at the last evaluation"] = (
            f"in distribution {last['id_acc']:.3f}, generalization {last['gen_acc']:.3f}"
        )
    rows["t_id (in-distribution accuracy >= threshold)"] = _step(status.get("t_mem_epoch"))
    rows["t_gen (generalization accuracy >= threshold)"] = _step(status.get("t_grok_epoch"))
    if summary.get("kind") == "tree_language":
        plateaus = ", ".join(
            f"H{k} {v:.3f}" for k, v in summary["plateaus_test"].items() if v is not None
        )
        rows["exact plateaus of the test set (nats)"] = plateaus
        for k, entry in summary["levels"].items():
            te = entry.get("test", {})
            rows[f"level {k} transition t*_{k} (test / train)"] = (
                f"{_step(te.get('t_star'))} / {_step(entry.get('train', {}).get('t_star'))}"
                + ("" if te.get("rise") is None else f", rise {te['rise']} steps")
            )
        flag = {True: "yes", False: "no", None: "undecided (no level reached)"}
        rows["levels learned in order"] = flag[summary["in_order"]]
    if summary.get("kind") == "sequence":
        flag = {True: "yes", False: "no", None: "undecided (censored or no t_id)"}
        rows["structural grokking (t_gen > 2 t_id)"] = flag[summary["structural_grokking"]]
        f = summary["final"]
        rows["final tree score / bracketing F1"] = (
            f"{_text(f['tree_score'])} / {_text(f['bracket_f1'])} "
            f"({summary['tree_sentences']} test sentences)"
        )
        rows["final weight norm / attention entropy"] = (
            f"{_text(f['weight_norm'])} / {_text(f['attn_entropy'])} nats"
        )
    return rows


def _step(value) -> str:
    return "not reached" if value is None else f"step {value}"


def write_report(run: Path) -> Path:
    """Write ``run/report.html`` from the run's status, metrics, summary and figures."""
    run = Path(run)
    cfg = rundir.read_config(run)
    status = rundir.read_status(run)
    metrics = rundir.read_metrics(run)
    summary = rundir.read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    figures = run / "figures"
    seq = is_sequence(cfg.task)
    curves = figures / ("accuracy.png" if seq else "training_curves.png")
    if not curves.is_file() and seq:
        r = cfg.train
        events = structural_events(metrics, r.mem_threshold, r.grok_threshold)
        accuracy_figure(metrics, events, run.name, curves)
    elif not curves.is_file():
        plot_training_curves(metrics, curves, status.get("t_mem_epoch"), status.get("t_grok_epoch"))
    pngs = sorted(figures.glob("*.png"))
    order = list(CAPTIONS)
    pngs.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))

    t = cfg.task
    task = describe_task(t)
    last = metrics.iloc[-1].to_dict() if len(metrics) else {}
    headline = sequence_rows if seq else headline_rows
    rows = headline(cfg, status, last, summary)
    extra = []
    if summary.get("phases"):
        extra += ["<h2>Phases</h2>", phases_table(summary["phases"])]
    if summary.get("ablations"):
        extra += [
            "<h2>Ablations at the final checkpoint</h2>",
            ablations_table(summary["ablations"]),
        ]
    if summary.get("notes"):
        items = "".join(f"<li>{html.escape(str(n))}</li>" for n in summary["notes"])
        extra += [f"<h2>Notes</h2><ul>{items}</ul>"]
    body = [
        f"<h1>{html.escape(run.name)}</h1>",
        f'<p class="sub">{html.escape(task)}, '
        + ("" if seq else f"train fraction {t.train_fraction}, ")
        + f"{cfg.model.kind} (d_model {cfg.model.d_model}, {cfg.model.n_layers} layer), "
        f"AdamW lr {cfg.optim.lr} weight decay {cfg.optim.weight_decay}, seed {cfg.train.seed}</p>",
        "<table>" + "".join(_row(k, v) for k, v in rows.items()) + "</table>",
        *extra,
        *[_img(p) for p in pngs],
        "<details><summary>config.json</summary><pre>"
        + html.escape(json.dumps(rundir.read_json(run / "config.json"), indent=2))
        + "</pre></details>",
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.name)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
    out = run / "report.html"
    rundir.atomic_write(out, page.encode())
    return out
