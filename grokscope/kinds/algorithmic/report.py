"""The report lines of an algorithmic run (headline, phases, ablations) and its training-curves
figure (its figure captions: :mod:`grokscope.kinds.algorithmic.captions`)."""

from __future__ import annotations

from pathlib import Path

from grokscope.report.figure_io import save_figure, subplots
from grokscope.report.html import html_table as _table
from grokscope.report.html import text as _text


def plot_training_curves(metrics, path: Path, t_mem: int | None, t_grok: int | None) -> Path:
    """Train / test loss (log-log) and accuracy against epoch, with t_mem and t_grok marked."""
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(11, 4))
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
    return save_figure(fig, path)


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
