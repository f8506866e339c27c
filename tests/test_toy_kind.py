"""The kind protocol proved by a fourth kind that lives in the tests (tests/toy_kind): it
trains, analyses, shows, lists, reports, summarises a sweep and enters a training map with no
edit to the package."""

from __future__ import annotations

import json

import pytest

from grokscope.config import apply_overrides, preset
from tests.conftest import run_cli
from tests.toy_kind import KIND

SETTINGS = [
    "task.name=toy_copy",
    "model.kind=lm",
    "model.n_layers=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.d_head=16",
    "model.d_mlp=64",
    "optim.lr=3e-3",
    "optim.weight_decay=0.0",
    "optim.batch_size=32",
    "task.n_train=300",
    "task.n_dev=0",
    "task.n_test=50",
    "task.n_gen=50",
    "train.epochs=120",
    "train.eval_every=20",
    "train.checkpoint_every=40",
    "train.device=cpu",
]


def toy_config(*extra: str):
    return apply_overrides(preset("default"), [*SETTINGS, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from grokscope.orchestrate.train import train_run

    root = tmp_path_factory.mktemp("toy")
    for seed in (0, 1, 2):
        train_run(toy_config(f"train.seed={seed}"), root / f"copy-s{seed}")
    return root


def test_the_core_trains_the_toy_kind_and_writes_its_columns(trained):
    from grokscope import load_run

    run = load_run(trained / "copy-s0")
    assert run.kind is KIND and run.status["state"] == "done"
    m = run.metrics
    # every evaluation (each 20 steps) and every checkpoint (log-spaced, then each 40)
    assert list(m["epoch"]) == [0, 1, 2, 5, 10, 20, 40, 60, 80, 100, 120]
    # the copy is learned: in-distribution accuracy climbs well above chance (1/6)
    assert m["id_acc"].iloc[-1] > 0.5 > m["id_acc"].iloc[0]
    assert m["train_loss"].iloc[-1] < m["train_loss"].iloc[0]


def test_analyze_show_runs_and_report_go_through_the_kind(trained, monkeypatch, capsys):
    run = trained / "copy-s0"
    code, out, err = run_cli(monkeypatch, capsys, "analyze", str(run))
    assert code in (0, None), err
    assert "copy: final generalization accuracy" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "toy_copy" and summary["figures"] == ["copy_norm.png"]
    assert summary["analysed_epochs"] == [0, 1, 2, 5, 10, 20, 40, 80, 120]
    code, out, _ = run_cli(monkeypatch, capsys, "show", str(run))
    assert "copy strings of 4 symbols" in out and "copy: final generalization" in out
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained), "--format", "csv")
    assert out.count("toy_copy") == 3
    page = (run / "report.html").read_text()
    assert "final copy accuracy on longer strings" in page and "Weight norm." in page


def test_a_sweep_of_the_toy_kind_is_summarised_by_it(tmp_path, monkeypatch, capsys):
    # the sweep's workers are fresh processes: they find the kind where every process does
    monkeypatch.setenv("GROKSCOPE_KINDS", "tests.toy_kind")
    fixed = {k: _typed(v) for k, v in (s.split("=") for s in SETTINGS)}
    fixed.update({"train.epochs": 40, "train.checkpoint_every": 20})
    del fixed["train.device"], fixed["model.n_layers"]
    table = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in fixed.items())
    spec = tmp_path / "copy.toml"
    spec.write_text(
        f'name = "copy"\npreset = "default"\nseeds = [0, 1]\n[set]\n{table}\n'
        '[grid]\n"model.n_layers" = [1]\n'
    )
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(spec), "--out", str(tmp_path), "-q")
    assert code in (0, None), err
    code, out, err = run_cli(monkeypatch, capsys, "sweep-summary", str(tmp_path / "copy"))
    assert code in (0, None), err
    assert "2 copy runs" in out and "final gen acc" in out


def test_the_training_map_reads_the_kinds_convergence(trained):
    from grokscope.orchestrate.training_map import convergence_epoch

    # the toy kind keeps the language kinds' rule: generalization accuracy at the threshold
    assert convergence_epoch(trained / "copy-s0", 0.0) == 0
    assert convergence_epoch(trained / "copy-s0", 1.01) is None


def _typed(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
