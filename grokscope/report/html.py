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
                ax.text(max(t, 1), 1.01, f"{label}={t}", color=colour, va="bottom",
                        ha="center", fontsize=8, transform=ax.get_xaxis_transform())
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


def _row(key: str, value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    elif value is None:
        value = "not reached / not found"
    elif isinstance(value, list | dict):
        value = json.dumps(value)
    return f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0} th,td{padding:.3em .8em;border-bottom:1px solid #ddd;
text-align:left} th{font-weight:600;color:#444}
figure{margin:1.5em 0} img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em} pre{background:#f6f6f6;padding:1em;overflow:auto}
"""


def write_report(run: Path) -> Path:
    """Write ``run/report.html`` from the run's status, metrics, summary and figures."""
    run = Path(run)
    cfg = rundir.read_config(run)
    status = rundir.read_status(run)
    metrics = rundir.read_metrics(run)
    summary = rundir.read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    figures = run / "figures"
    curves = figures / "training_curves.png"
    if not curves.is_file():
        plot_training_curves(metrics, curves, status.get("t_mem_epoch"), status.get("t_grok_epoch"))
    pngs = sorted(figures.glob("*.png"))
    order = list(CAPTIONS)
    pngs.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))

    t = cfg.task
    task = {
        "modular": f"({t.op}) mod {t.p}",
        "permutation": f"S{t.group_n}: {t.op}",
    }.get(t.name, f"sparse parity n={t.n_bits} k={t.k_bits}")
    last = metrics.iloc[-1].to_dict() if len(metrics) else {}
    rows = {
        "state": status.get("state"),
        "epochs trained": status.get("epochs_done"),
        "wall time (s)": status.get("wall_s"),
        f"t_mem_epoch (train acc ≥ {cfg.train.mem_threshold})": status.get("t_mem_epoch"),
        f"t_grok_epoch (test acc ≥ {cfg.train.grok_threshold})": status.get("t_grok_epoch"),
        "final train / test loss": f"{last.get('train_loss', float('nan')):.3g} / "
        f"{last.get('test_loss', float('nan')):.3g}",
        "final train / test accuracy": f"{last.get('train_acc', float('nan')):.3f} / "
        f"{last.get('test_acc', float('nan')):.3f}",
    }
    for key in ("fourier_basis", "key_frequencies", "neuron_single_freq_share", "phases", "notes"):
        if key in summary:
            rows[key] = summary[key]
    body = [
        f"<h1>{html.escape(run.name)}</h1>",
        f'<p class="sub">{html.escape(task)}, train fraction {t.train_fraction}, '
        f"{cfg.model.kind} (d_model {cfg.model.d_model}, {cfg.model.n_layers} layer), "
        f"AdamW lr {cfg.optim.lr} weight decay {cfg.optim.weight_decay}, seed {cfg.train.seed}</p>",
        "<table>" + "".join(_row(k, v) for k, v in rows.items()) + "</table>",
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
