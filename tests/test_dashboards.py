"""Live dashboards: a run with train.log_to=tensorboard writes event files whose scalars equal
its metrics table, a resumed run's events hold each evaluation once, and a missing package or an
unknown dashboard is one line, exit 2, no directory."""

import importlib.util

import numpy as np
import pytest

from grokscope.store import rundir
from tests.conftest import run_cli

HAVE_TB = importlib.util.find_spec("tensorboard") is not None
SHORT = ["--preset", "quick", "--set", "train.epochs=60", "--set", "train.eval_every=10",
         "--set", "train.checkpoint_every=30", "--quiet"]  # fmt: skip


def _scalars(run, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: an evaluation logged twice"
    return {e.step: e.value for e in events}


@pytest.mark.skipif(not HAVE_TB, reason="tensorboard is not installed (extra: dashboards)")
def test_tensorboard_events_equal_the_metrics_and_survive_a_resume(monkeypatch, capsys, tmp_path):
    args = ["train", *SHORT, "--set", "train.log_to=tensorboard", "--out", str(tmp_path)]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--name", "r")
    assert code in (0, None), err
    run = tmp_path / "r"
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--resume", str(run), "--set", "train.epochs=90", "--quiet"
    )
    assert code in (0, None), err
    metrics = rundir.read_metrics(run)
    for tag in ("test_acc", "train_loss", "weight_norm_sq"):
        got = _scalars(run, tag)
        assert sorted(got) == metrics["epoch"].tolist()
        # float32 in the event file
        np.testing.assert_allclose(
            [got[e] for e in metrics["epoch"]], metrics[tag], rtol=1e-6, atol=1e-7
        )


def test_unknown_dashboard_is_one_line(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(
        monkeypatch, capsys, "train", *SHORT, "--set", "train.log_to=tensorbored",
        "--out", str(tmp_path), "--name", "r",
    )  # fmt: skip
    assert code == 2 and "unknown train.log_to 'tensorbored'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_missing_package_is_one_line_before_any_directory(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "train", *SHORT, "--set", "train.log_to=wandb",
        "--out", str(tmp_path), "--name", "r",
    )  # fmt: skip
    assert code == 2 and "needs the wandb package" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
