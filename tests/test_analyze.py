"""analyze_run end to end: a tiny trained run, a hand-planted run, other tasks, errors, CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from grokscope import cli
from grokscope.config import Config, apply_overrides, resolve
from grokscope.errors import GrokscopeError, RunDirError
from grokscope.kinds.algorithmic.analysis import BASE_COLUMNS
from grokscope.measures.weights import WEIGHT_STAT_COLUMNS
from grokscope.models import build_model
from grokscope.orchestrate.analyze import analyze_run, select_epochs
from grokscope.orchestrate.train import train_run
from grokscope.store import rundir
from tests.conftest import tiny_config
from tests.test_progress import planted_transformer

SUMMARY_KEYS = {
    "key_frequencies",
    "neuron_single_freq_share",
    "t_mem_epoch",
    "t_grok_epoch",
    "phases",
    "notes",
    "ablations",
}
FIGURES = {
    "loss_phases.png",
    "progress_measures.png",
    "embedding_fourier_norms.png",
    "neuron_frequency_histogram.png",
    "logit_fourier_spectrum.png",
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny_config("train.epochs=200", "train.checkpoint_every=50", "train.eval_every=10")
    train_run(resolve(cfg), run)
    return run


def test_trained_run_writes_documented_files_and_columns(trained_run):
    summary = analyze_run(trained_run)
    table = pd.read_parquet(trained_run / "analysis.parquet")
    assert set(BASE_COLUMNS) <= set(table.columns)
    assert set(WEIGHT_STAT_COLUMNS) <= set(table.columns)
    assert list(table["epoch"]) == rundir.list_epochs(trained_run)
    on_disk = json.loads((trained_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert set(on_disk["phases"]) == {"memorization_end", "circuit_formation_end", "cleanup_end"}
    assert on_disk["key_frequencies"] == summary["key_frequencies"]
    assert isinstance(on_disk["key_frequencies"], list)
    assert all(isinstance(k, int) for k in on_disk["key_frequencies"])
    assert FIGURES <= {p.name for p in (trained_run / "figures").iterdir()}
    assert set(summary["figures"]) <= {p.name for p in (trained_run / "figures").iterdir()}


def test_losses_equal_the_training_metrics(trained_run):
    analyze_run(trained_run, figures=False)
    table = pd.read_parquet(trained_run / "analysis.parquet").set_index("epoch")
    metrics = rundir.read_metrics(trained_run).set_index("epoch")
    common = table.index.intersection(metrics.index)
    assert len(common) >= 5
    for col in ("train_loss", "test_loss", "train_acc", "test_acc", "weight_norm_sq"):
        np.testing.assert_allclose(table.loc[common, col], metrics.loc[common, col], rtol=1e-5)
    status = rundir.read_status(trained_run)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["t_mem_epoch"] == status["t_mem_epoch"]
    assert summary["t_grok_epoch"] == status["t_grok_epoch"]


def test_every_k_keeps_first_and_last(trained_run):
    assert select_epochs([0, 1, 2, 5, 10, 20], 2) == [0, 2, 10, 20]
    assert select_epochs([0, 1, 2, 5, 10], 2) == [0, 2, 10]
    with pytest.raises(GrokscopeError):
        select_epochs([0, 1], 0)
    summary = analyze_run(trained_run, every=3, figures=False)
    epochs = rundir.list_epochs(trained_run)
    table = pd.read_parquet(trained_run / "analysis.parquet")
    assert list(table["epoch"]) == select_epochs(epochs, 3)
    assert summary["checkpoints_analysed"] == len(table)


def planted_run(path, epochs=(0, 100, 200), random_first=False):
    """A run directory whose checkpoints are the hand-built key-frequency transformer (the
    first one a random initialisation with ``random_first``)."""
    p, key = 17, [2, 5]
    cfg = apply_overrides(
        Config(preset="planted"),
        [
            f"task.p={p}",
            "task.train_fraction=0.3",
            "model.d_model=4",
            "model.n_heads=1",
            "model.d_head=4",
            "model.d_mlp=48",
        ],
    )
    resolve(cfg)
    path.mkdir(parents=True)
    rundir.write_config(path, cfg)
    weights = planted_transformer(p, key).state_dict()
    for i, e in enumerate(epochs):
        w = weights
        if random_first and i == 0:
            w = build_model(cfg.model, p + 1, 3, seed=0).state_dict()
        rundir.save_checkpoint(path, e, w, {}, {"epoch": e})
    return path, key


def test_planted_run_gives_exactly_the_planted_key_frequencies(tmp_path):
    run, key = planted_run(tmp_path / "planted")
    summary = analyze_run(run, per_checkpoint_keys=True)
    assert summary["key_frequencies"] == key
    assert summary["neuron_dominant_frequency_counts"] == {"2": 24, "5": 24}
    table = pd.read_parquet(run / "analysis.parquet")
    assert all(list(k) == key for k in table["key_frequencies"])
    assert (table["restricted_loss"] < table["test_loss"]).all()
    assert (table["excluded_loss"] > 5 * table["train_loss"]).all()
    assert (table["n_key_frequencies"] == 2).all()
    # Gini of the planted embedding: 4 equal components out of 17 -> 1 - 4/17
    np.testing.assert_allclose(table["gini_embed"], 1 - 4 / 17, rtol=1e-5)
    kinds = {(r["target"], r["ablation"], r["freq"]) for r in summary["ablations"]}
    assert ("neurons", "remove", 5) in kinds
    assert "key_frequency_circles.png" in summary["figures"]
    # geometry: two equal circles at the planted frequencies, read through E_a + E_b (a pizza)
    np.testing.assert_allclose(table["circularity_keys"], 1.0, atol=1e-9)
    np.testing.assert_allclose(table["fourier_ipr_pooled"], 0.5, atol=1e-9)
    assert set(table["circularity_best_freq"]) <= set(key)
    assert (table["gradient_symmetricity"] > 0.99).all()
    assert (table["distance_irrelevance"] < 0.4).all()
    assert {"embedding_evolution.png", "embedding_evolution.gif"} <= set(summary["figures"])
    # identical checkpoints: flat curves, so no phase can be found and none is invented
    assert summary["phases"] == {
        "memorization_end": None,
        "circuit_formation_end": None,
        "cleanup_end": None,
    }


def test_ablations_use_the_final_weights(tmp_path):
    run, key = planted_run(tmp_path / "planted", epochs=(0, 200), random_first=True)
    summary = analyze_run(run, figures=False)
    assert summary["key_frequencies"] == key
    by = {(r["target"], r["ablation"], r["freq"]): r["loss"] for r in summary["ablations"]}
    table = pd.read_parquet(run / "analysis.parquet")
    final = table.iloc[-1]
    assert by[("logits", "keep_key", None)] == pytest.approx(final["restricted_loss"])
    # neuron patching runs the final model: keeping the key terms matches the key logits
    assert by[("neurons", "keep_key", None)] == pytest.approx(by[("logits", "keep_key", None)], 0.1)
    assert table["restricted_loss"].iloc[0] > 10 * final["restricted_loss"]


def test_other_tasks_write_nulls_with_notes(tmp_path):
    cfg = tiny_config(
        "task.name=sparse_parity",
        "task.n_bits=8",
        "task.k_bits=2",
        "task.n_samples=100",
        "train.epochs=20",
    )
    train_run(resolve(cfg), tmp_path / "parity")
    summary = analyze_run(tmp_path / "parity")
    assert summary["key_frequencies"] is None
    assert summary["neuron_single_freq_share"] is None
    assert summary["ablations"] is None
    assert any("not modular" in n for n in summary["notes"])
    table = pd.read_parquet(tmp_path / "parity" / "analysis.parquet")
    assert table["restricted_loss"].isna().all() and table["gini_embed"].isna().all()
    assert table["train_loss"].notna().all()
    assert {"loss_phases.png", "progress_measures.png"} <= set(summary["figures"])


def test_x_times_y_is_analysed_over_discrete_logs(tmp_path):
    """x*y mod 23 is analysed on the grid of nonzero operands ordered by their logs base 5:
    key frequencies of Z_22 and the restricted / excluded losses on that grid."""
    train_run(resolve(tiny_config("task.op=x*y", "train.epochs=100")), tmp_path / "mul")
    summary = analyze_run(tmp_path / "mul")
    assert summary["fourier_basis"] == "discrete log base 5"  # p = 23
    keys = summary["key_frequencies"]
    assert keys and all(1 <= k <= 11 for k in keys)  # frequencies of Z_22
    table = pd.read_parquet(tmp_path / "mul" / "analysis.parquet")
    assert table["restricted_loss"].notna().all() and table["excluded_loss"].notna().all()
    assert table["gini_embed"].between(0, 1).all()
    kinds = {(r["target"], r["ablation"], r["freq"]) for r in summary["ablations"]}
    assert ("neurons", "keep_key", None) in kinds and ("logits", "remove", keys[0]) in kinds
    assert "logit_fourier_spectrum.png" in summary["figures"]
    from grokscope.orchestrate.report import write_report

    assert "discrete log base 5" in write_report(tmp_path / "mul").read_text()


def test_mlp_on_x_squared_plus_y_squared_keeps_gini_and_neurons_but_no_key_frequencies(tmp_path):
    cfg = tiny_config("task.op=x^2+y^2", "model.kind=mlp", "model.d_embed=0", "train.epochs=20")
    train_run(resolve(cfg), tmp_path / "sq")
    summary = analyze_run(tmp_path / "sq", figures=False)
    assert summary["key_frequencies"] is None and summary["fourier_basis"] == "residues"
    assert any("x^2+y^2" in n for n in summary["notes"])
    assert 0.0 <= summary["neuron_single_freq_share"] <= 1.0
    table = pd.read_parquet(tmp_path / "sq" / "analysis.parquet")
    assert table["gini_embed"].between(0, 1).all()
    assert table["excluded_loss"].isna().all()


def test_missing_run_and_no_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        analyze_run(tmp_path / "nowhere")
    run = tmp_path / "empty"
    run.mkdir()
    rundir.write_config(run, resolve(tiny_config()))
    with pytest.raises(RunDirError, match="no checkpoints") as e:
        analyze_run(run)
    assert "\n" not in str(e.value)


def test_cli_analyze(trained_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["grokscope", "analyze", str(trained_run), "--no-figures"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr().out
    assert e.value.code in (0, None)
    assert "key frequencies" in out and "summary.json" in out
    monkeypatch.setattr(sys, "argv", ["grokscope", "analyze", str(trained_run / "missing")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "does not exist" in err and "Traceback" not in err


def test_checkpoint_that_does_not_fit_the_config(tmp_path):
    run, _ = planted_run(tmp_path / "bad", epochs=(0,))
    torch_weights = rundir.load_weights(run, 0)
    torch_weights["embed.W_E"] = torch.zeros(3, 3)
    rundir.save_checkpoint(run, 10, torch_weights, {}, {"epoch": 10})
    with pytest.raises(RunDirError, match="does not fit the config"):
        analyze_run(run, figures=False)


def test_an_interrupt_checkpoint_is_not_an_analysis_row(tiny):
    """Ctrl-C saves a checkpoint off the schedule (epoch 25 here); the analysis keeps the
    schedule and the last checkpoint, so an interrupted run gives the straight run's rows."""
    from grokscope.config import resolve
    from grokscope.orchestrate.analyze import scheduled_epochs

    cfg = resolve(tiny())  # 60 epochs, checkpoints every 20
    assert scheduled_epochs([0, 1, 2, 5, 10, 20, 25, 40, 60], cfg) == [0, 1, 2, 5, 10, 20, 40, 60]
    # an early-stopped run ends off the schedule: its last checkpoint stays
    assert scheduled_epochs([0, 1, 2, 5, 10, 20, 33], cfg) == [0, 1, 2, 5, 10, 20, 33]


def test_curvature_columns_at_every_kth_checkpoint(trained_run):
    from grokscope.kinds.algorithmic.analysis import CURVATURE_COLUMNS

    analyze_run(trained_run, figures=False, curvature_every=4)
    table = pd.read_parquet(trained_run / "analysis.parquet")
    measured = table["hessian_top1"].notna().to_numpy()
    n = len(table)
    assert measured.tolist() == [i % 4 == 0 or i == n - 1 for i in range(n)]
    rows = table[measured]
    assert (rows["hessian_top1"] >= rows["hessian_top2"]).all()
    assert (rows["hessian_top2"] >= rows["hessian_top3"]).all()
    for col in CURVATURE_COLUMNS:
        assert np.isfinite(rows[col]).all(), col
    with pytest.raises(GrokscopeError, match="curvature-every must be >= 0"):
        analyze_run(trained_run, figures=False, curvature_every=-1)
