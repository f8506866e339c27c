"""Live dashboards: a run with train.log_to=tensorboard writes event files whose scalars equal
its metrics table, a resumed run's events hold each evaluation once, and a missing package or an
unknown dashboard is one line, exit 2, no directory."""

import importlib.util

import numpy as np
import pytest

from grokscope.config import to_dict
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


def _wandb_records(path):
    """The records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header (``:W&B``,
    magic, version), then LevelDB-log records in 32 KiB blocks (crc32, length, type: 1 whole,
    2 first, 3 middle, 4 last), each a ``wandb_internal_pb2.Record``. wandb 0.31 no longer ships
    a Python reader of its own files."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


@pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None, reason="wandb is not installed (extra: dashboards)"
)
def test_wandb_runs_offline_and_its_history_equals_the_metrics(monkeypatch, capsys, tmp_path):
    import json

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ["train", *SHORT, "--set", "train.log_to=wandb", "--out", str(tmp_path)]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--name", "r")
    assert code in (0, None), err
    run = tmp_path / "r"
    (run_file,) = (run / "wandb").glob("offline-run-*/run-r.wandb")  # offline: nothing sent
    history, config = {}, None
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                   for i in record.history.item}  # fmt: skip
            history[row["_step"]] = row
        elif kind == "run":
            config = {i.key: json.loads(i.value_json) for i in record.run.config.update}
    metrics = rundir.read_metrics(run)
    assert sorted(history) == metrics["epoch"].tolist()
    for tag in ("test_acc", "train_loss", "weight_norm_sq"):  # float64 through JSON: exact
        assert [history[e][tag] for e in metrics["epoch"]] == pytest.approx(
            metrics[tag].tolist(), rel=1e-12
        )
    recorded = to_dict(rundir.read_config(run))
    assert {k: config[k] for k in ("task", "model", "optim", "train")} == {
        k: recorded[k] for k in ("task", "model", "optim", "train")
    }
