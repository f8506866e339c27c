"""Delay laws, predictions and alarm rankings from run directories: written by hand with a planted
law and planted signals, so the answers are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from grokscope.config import resolve
from grokscope.store import rundir
from tests.conftest import run_cli, tiny_config

KAPPA, V_STAR = 0.8, 40.0


def fake_run(path, lr, wd, norm_mem, t_mem=100, grok=True, signal_jump=None, epochs=8000, seed=0):
    """A run directory whose metrics follow the first-passage law: the squared norm decays from
    ``norm_mem`` at T_mem by exp(-2 kappa lr wd t) and the run groks when it reaches V*; its
    analysis table carries a signal that jumps from 1 to 3 at ``signal_jump``."""
    cfg = resolve(tiny_config(f"optim.lr={lr}", f"optim.weight_decay={wd}", f"train.seed={seed}"))
    path.mkdir(parents=True)
    rundir.write_config(path, cfg)
    delay = np.log(norm_mem / V_STAR) / (2 * KAPPA * lr * wd) if grok else np.inf
    epochs_col = np.arange(0, epochs + 1, 10)
    norm = np.where(
        epochs_col < t_mem, norm_mem, norm_mem * np.exp(-2 * KAPPA * lr * wd * (epochs_col - t_mem))
    )
    rows = [
        {
            "epoch": int(e), "step": int(e), "train_loss": 0.1, "test_loss": 1.0,
            "train_acc": 1.0 if e >= t_mem else 0.5,
            "test_acc": 1.0 if e >= t_mem + delay else 0.1,
            "weight_norm_sq": float(n), "lr": lr, "wall_s": 0.0,
        }
        for e, n in zip(epochs_col, norm, strict=True)
    ]  # fmt: skip
    rundir.write_metrics(path, rows)
    rundir.write_status(path, state="done", epochs_done=epochs)
    rng = np.random.default_rng(seed)
    values = 1 + rng.normal(0, 0.01, len(epochs_col))
    if signal_jump is not None:
        values[epochs_col >= signal_jump] *= 3
    table = pd.DataFrame({"epoch": epochs_col, "gini_embed": values, "ildr": values[::-1]})
    rundir.write_table(path / "analysis.parquet", table)
    return float(t_mem + delay)


def test_fit_delay_recovers_the_law_and_predict_uses_it(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "sweep"
    grid = [(lr, wd, n) for lr in (1e-3, 3e-3) for wd in (0.5, 1.0, 2.0) for n in (400, 1500)]
    for i, (lr, wd, n) in enumerate(grid):
        fake_run(folder / "runs" / f"r{i}", lr, wd, n)
    code, out, err = run_cli(monkeypatch, capsys, "fit-delay", str(folder))
    assert code in (0, None), err
    law = json.loads((folder / "delay_law.json").read_text())
    assert law["kind"] == "first_passage" and law["n_"] == len(grid)
    assert abs(law["kappa_"] - KAPPA) / KAPPA < 0.05  # eval grid of 10 epochs: small bias
    assert abs(np.log(law["v_star_"] / V_STAR)) < 0.2
    # a new run: the prediction lands near the law's grokking epoch
    truth = fake_run(tmp_path / "new", 2e-3, 1.0, 800)
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        str(tmp_path / "new"),
        "--law",
        str(folder / "delay_law.json"),
    )
    assert code in (0, None), err
    predicted = int(out.split("predicted T_grok step ")[1].split()[0])
    assert abs(predicted - truth) / truth < 0.05


def test_predict_refuses_honestly(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "sweep"
    pairs = [(1e-3, 0.5), (1e-3, 1.0), (3e-3, 1.0), (3e-3, 2.0), (2e-3, 1), (2e-3, 2.0)]
    for i, (lr, wd) in enumerate(pairs + [(1e-3, 2.0), (3e-3, 0.5)]):
        fake_run(folder / f"r{i}", lr, wd, 600 + 200 * i)
    assert run_cli(monkeypatch, capsys, "fit-delay", str(folder))[0] in (0, None)
    law = str(folder / "delay_law.json")
    fake_run(tmp_path / "young", 1e-3, 1.0, 500, t_mem=10_000, epochs=500)
    code, out, _ = run_cli(monkeypatch, capsys, "predict", str(tmp_path / "young"), "--law", law)
    assert code in (0, None) and "cannot predict yet: the run has not memorized" in out
    assert "T_grok step" not in out
    code, _, err = run_cli(
        monkeypatch, capsys, "predict", str(tmp_path / "young"), "--law", "x.json"
    )
    assert code == 2 and "no delay law at x.json" in err
    laws = json.loads((folder / "delay_laws.json").read_text())
    (tmp_path / "ratio.json").write_text(json.dumps(laws["norm_ratio"]))
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        str(tmp_path / "young"),
        "--law",
        str(tmp_path / "ratio.json"),
    )
    assert code == 2 and "known only after grokking" in err


def alternating_runs(folder, control_wd: float) -> None:
    """Eight runs: even seeds grok (weight decay 1) with a signal jump before grokking, odd
    seeds do not (weight decay ``control_wd``) and carry no jump."""
    for i in range(8):
        grok = i % 2 == 0
        fake_run(
            folder / f"r{i}", 3e-3, 1.0 if grok else control_wd, 1000, grok=grok,
            signal_jump=(400 + 10 * i) if grok else None, seed=i,
        )  # fmt: skip


def test_warn_ranks_the_informative_signal_first(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "warn"
    alternating_runs(folder, control_wd=1.0)
    code, out, err = run_cli(monkeypatch, capsys, "warn", str(folder))
    assert code in (0, None), err
    table = pd.read_parquet(folder / "early_warning.parquet")
    assert table["signal"].iloc[0] == "gini_embed"
    top = table.iloc[0]
    assert top["hits"] == "4/4" and top["false_alarms"] == "0/4"
    assert top["lead_median"] > 0


def test_warn_scores_against_like_for_like_controls_by_default(monkeypatch, capsys, tmp_path):
    """A signal that only tells the regimes apart: it jumps in every run with weight decay 1,
    grokking or not, and never without weight decay. Against controls from the other regime
    (--controls all) it looks perfect; against like-for-like controls (the default: the same
    settings, other seeds, no grokking) it fires exactly as often as in the grokking runs, so it
    scores nothing (J <= 0 at every threshold)."""
    folder = tmp_path / "warn"
    for i in range(12):
        grok, wd = (i % 3 == 0), (0.0 if i % 3 == 2 else 1.0)
        jump = 400 + 10 * i if wd else None
        fake_run(folder / f"r{i}", 3e-3, wd, 1000, grok=grok, signal_jump=jump, seed=i)
    code, out, err = run_cli(monkeypatch, capsys, "warn", str(folder))
    assert code in (0, None), err
    like = pd.read_parquet(folder / "early_warning.parquet").set_index("signal").loc["gini_embed"]
    assert like["false_alarms"].endswith("/4") and like["j"] <= 0.0
    code, out, err = run_cli(monkeypatch, capsys, "warn", str(folder), "--controls", "all")
    assert code in (0, None), err
    every = pd.read_parquet(folder / "early_warning.parquet").set_index("signal").loc["gini_embed"]
    assert every["false_alarms"].endswith("/8") and every["j"] >= 0.4
    code, _, err = run_cli(monkeypatch, capsys, "warn", str(folder), "--controls", "some")
    assert code == 2 and "--controls must be one of like, all" in err


def test_warn_says_when_there_are_no_like_for_like_controls(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "warn"
    alternating_runs(folder, control_wd=0.0)
    code, out, err = run_cli(monkeypatch, capsys, "warn", str(folder))
    assert code in (0, None), err
    assert "no like-for-like controls" in out
    table = pd.read_parquet(folder / "early_warning.parquet")
    assert (table["false_alarms"] == "0/0").all() and table["j"].isna().all()


def test_fit_delay_only_and_an_unphysical_law(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "sweep"
    grid = [(lr, wd, n) for lr in (1e-3, 3e-3) for wd in (0.5, 1.0, 2.0) for n in (400, 900, 1500)]
    for i, (lr, wd, n) in enumerate(grid):
        fake_run(folder / f"r{i}", lr, wd, n)
    code, out, err = run_cli(
        monkeypatch, capsys, "fit-delay", str(folder), "--only", "optim.lr=0.003"
    )
    assert code in (0, None), err
    assert json.loads((folder / "delay_law.json").read_text())["n_"] == 9
    code, _, err = run_cli(monkeypatch, capsys, "fit-delay", str(folder), "--only", "optim.lr=9")
    assert code == 2 and "matches" in err
    code, _, err = run_cli(monkeypatch, capsys, "fit-delay", str(folder), "--only", "optim.x=1")
    assert code == 2 and "unknown config field" in err
    law = json.loads((folder / "delay_law.json").read_text())
    law["kappa_"], law["v_star_"], law["coef_"] = None, None, [-1.0, 5.0]
    (tmp_path / "bad.json").write_text(json.dumps(law))
    code, _, err = run_cli(
        monkeypatch, capsys, "predict", str(folder / "r0"), "--law", str(tmp_path / "bad.json")
    )
    assert code == 2 and "not physical" in err
