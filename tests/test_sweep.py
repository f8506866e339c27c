"""Sweeps: the file format and its validation, running, re-running, a killed sweep finishing
without duplicated or lost runs, failures recorded, and the Ray executor agreeing with local."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from grokscope.config import ConfigError
from grokscope.kinds.algorithmic.sweep_summary import summarize
from grokscope.store import rundir
from grokscope.sweep.executor import run_sweep
from grokscope.sweep.spec import load_sweep, parse_sweep

BASE = """
name = "{name}"
preset = "default"
seeds = [0, 1]

[set]
"task.p" = 23
model.d_model = 32
model.n_heads = 4
model.d_head = 8
model.d_mlp = 64
"optim.lr" = 3e-3
"train.epochs" = {epochs}
"train.eval_every" = 5
"train.checkpoint_every" = 20

[grid]
"task.train_fraction" = [0.3, 0.6]
"optim.weight_decay" = [0.5, 1.0]
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _spec(tmp_path, name="t", epochs=40):
    return load_sweep(_write(tmp_path, BASE.format(name=name, epochs=epochs)))


def test_cells_and_configs(tmp_path):
    spec = _spec(tmp_path)
    cells = spec.cells()
    assert [c.values for c in cells] == [
        {"task.train_fraction": 0.3, "optim.weight_decay": 0.5},
        {"task.train_fraction": 0.3, "optim.weight_decay": 1.0},
        {"task.train_fraction": 0.6, "optim.weight_decay": 0.5},
        {"task.train_fraction": 0.6, "optim.weight_decay": 1.0},
    ]
    assert cells[1].name == "c001-train_fraction=0.3-weight_decay=1"
    cfg = spec.config(cells[3], 1)
    assert (cfg.task.p, cfg.task.train_fraction, cfg.optim.weight_decay, cfg.train.seed) == (
        23,
        0.6,
        1.0,
        1,
    )
    assert cfg.model.d_model == 32 and cfg.train.epochs == 40  # nested and quoted keys
    assert [rid for _, _, rid in spec.runs()][:2] == [
        "c000-train_fraction=0.3-weight_decay=0.5-s0",
        "c000-train_fraction=0.3-weight_decay=0.5-s1",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"optim.nope": [1]}}, "unknown config field 'optim.nope'"),
        ({"grid": {}}, "grid table is empty"),
        ({"grid": {"optim.weight_decay": []}}, "empty list"),
        ({"grid": {"task.train_fraction": [0.3, 1.5]}}, "train_fraction must lie in"),
        ({"grid": {"task.p": [23, 4.5]}}, "task.p must be a int"),
        ({"grid": {"optim.weight_decay": 0.5}}, "must be a list"),
        ({"grid": {"optim.weight_decay": [1, 1.0]}}, "repeats a value"),
        ({"grid": {"train.seed": [1, 2]}}, "seeds list"),
        ({"set": {"optim.weight_decay": 1.0}}, "both fixed"),
        ({"seeds": []}, "seeds must be"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"preset": "nope"}, "unknown preset"),
        ({"gird": {}}, "unknown sweep key"),
        ({"grid": {"task.op": ["x+y", "x/y"]}}, "needs a prime modulus"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(change, message):
    data = {
        "name": "bad",
        "preset": "default",
        "seeds": [0],
        "set": {"task.p": 24},
        "grid": {"optim.weight_decay": [0.5]},
    }
    data.update(change)
    with pytest.raises(ConfigError, match=message) as info:
        parse_sweep(data)
    assert "\n" not in str(info.value)


def _cli(*args: str, cwd: Path, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "grokscope.cli", *args]
    if kw.pop("background", False):
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_rejects_a_bad_file_before_starting_anything(tmp_path):
    bad = _write(tmp_path, BASE.format(name="bad", epochs=40).replace("0.6]", "1.6]"))
    result = _cli("sweep", str(bad), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train_fraction must lie in (0, 1)" in lines[0]
    assert not (tmp_path / "out").exists()
    broken = _write(tmp_path, "seeds = [0\n", "broken.toml")
    result = _cli("sweep", str(broken), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def _expected_dirs(spec) -> set[str]:
    return {rid for _, _, rid in spec.runs()}


def _metrics_by_run(root: Path) -> dict[str, pd.DataFrame]:
    return {
        run.name: rundir.read_metrics(run).drop(columns=["wall_s"])
        for run in sorted((root / "runs").iterdir())
        if run.is_dir()
    }


@pytest.mark.equality
def test_sweep_runs_then_rerun_skips(tmp_path):
    spec = _spec(tmp_path)
    records = run_sweep(spec, tmp_path / "out", workers=1, threads=1)
    root = tmp_path / "out" / "t"
    assert {r["run"] for r in records} == _expected_dirs(spec)
    assert all(r["state"] == "done" and r["action"] == "trained" for r in records)
    assert {p.name for p in (root / "runs").iterdir() if p.is_dir()} == _expected_dirs(spec)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("metrics.parquet")}
    again = run_sweep(spec, tmp_path / "out", workers=1, threads=1)
    assert all(r["action"] == "skipped" for r in again)
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("metrics.parquet")}
    # each run equals the same seed trained alone, up to the rounding noise floor (a batch
    # may sum in another order than one run; see tests/test_batched.py)
    from grokscope.orchestrate.train import train_run
    from tests.test_batched import _perturbed_twin, assert_within_noise

    cell = spec.cells()[2]
    train_run(spec.config(cell, 1), tmp_path / "alone")
    assert_within_noise(
        rundir.read_metrics(tmp_path / "alone"),
        rundir.read_metrics(root / "runs" / f"{cell.name}-s1"),
        _perturbed_twin(spec.config(cell, 1)),
    )
    # the same directory with another spec is refused
    other = load_sweep(_write(tmp_path, BASE.format(name="t", epochs=50), "other.toml"))
    with pytest.raises(Exception, match="different sweep"):
        run_sweep(other, tmp_path / "out", workers=1)


def test_killed_sweep_then_rerun_finishes_without_duplicates(tmp_path):
    """SIGKILL the whole sweep (parent and pool workers) once some runs are done, then run the
    same command again: exactly the expected runs, all done, each equal to an untroubled run."""
    path = _write(tmp_path, BASE.format(name="k", epochs=200))
    spec = load_sweep(path)
    out = tmp_path / "out"
    proc = _cli(
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        "2",
        "--threads",
        "1",
        "--quiet",
        cwd=tmp_path,
        background=True,
    )
    root = out / "k"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            states = [p.read_text() for p in root.glob("runs/*/status.json")]
            if any('"done"' in s for s in states):
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = [p for p in root.glob("runs/*/status.json") if '"done"' in p.read_text()]
    assert 0 < len(finished) < len(_expected_dirs(spec))  # killed mid-way
    time.sleep(1.0)  # any orphan would be writing now; the pool workers died with the group
    result = _cli(
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        "2",
        "--threads",
        "1",
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    dirs = {p.name for p in (root / "runs").iterdir() if p.is_dir()}
    assert dirs == _expected_dirs(spec)
    assert all(rundir.read_status(root / "runs" / d)["state"] == "done" for d in dirs)
    # compare with the same sweep run without trouble (in this process)
    run_sweep(spec, tmp_path / "clean", workers=1, threads=1)
    killed, clean = _metrics_by_run(root), _metrics_by_run(tmp_path / "clean" / "k")
    assert killed.keys() == clean.keys()
    for name in clean:
        assert killed[name]["epoch"].is_unique
        pd.testing.assert_frame_equal(killed[name], clean[name], rtol=1e-4)


def test_failures_and_divergence_are_recorded_and_the_rest_go_on(tmp_path, monkeypatch):
    text = (
        BASE.format(name="f", epochs=40)
        .replace('"optim.weight_decay" = [0.5, 1.0]', '"optim.lr" = [3e-3, 1e30]')
        .replace('"optim.lr" = 3e-3\n', '"optim.warmup_steps" = 0\n')
    )
    spec = load_sweep(_write(tmp_path, text))
    import grokscope.orchestrate.cell as cell_mod

    real = cell_mod.train_runs

    def flaky(cfgs, runs, resume=False, progress=None, threads=None):
        if "c002" in str(runs[0]):
            raise RuntimeError("simulated crash")
        return real(cfgs, runs, resume, progress, threads)

    monkeypatch.setattr(cell_mod, "train_runs", flaky)
    records = {r["run"]: r for r in run_sweep(spec, tmp_path / "out", workers=1, threads=1)}
    assert len(records) == 8
    for run, r in records.items():
        lr_big = "lr=1e+30" in run
        if run.startswith("c002"):
            assert r["state"] == "failed" and "simulated crash" in r["error"]
        else:
            assert r["state"] == ("diverged" if lr_big else "done"), run
    monkeypatch.setattr(cell_mod, "train_runs", real)
    again = {r["run"]: r for r in run_sweep(spec, tmp_path / "out", workers=1, threads=1)}
    assert {r["state"] for k, r in again.items() if k.startswith("c002")} == {"done"}
    assert all(r["action"] == "skipped" for k, r in again.items() if not k.startswith("c002"))
    runs, cells, figures = summarize(tmp_path / "out" / "f")
    assert len(runs) == 8 and len(cells) == 4 and all(p.is_file() for p in figures)
    assert set(runs.loc[runs["state"] == "diverged", "cell"]) == {
        c.name for c in spec.cells() if c.values["optim.lr"] > 1
    }


@pytest.mark.equality
def test_ray_executor_gives_the_same_numbers(tmp_path):
    pytest.importorskip("ray")
    spec = _spec(tmp_path, name="r", epochs=20)
    run_sweep(spec, tmp_path / "local", workers=1, threads=1)
    run_sweep(spec, tmp_path / "ray", executor="ray", workers=2, threads=1)
    a, b = _metrics_by_run(tmp_path / "local" / "r"), _metrics_by_run(tmp_path / "ray" / "r")
    assert a.keys() == b.keys() and len(a) == 8
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


def test_ctrl_c_checkpoints_and_the_same_command_continues(tmp_path):
    """SIGINT to the sweep's process group (what Ctrl-C sends): running batches save a checkpoint
    and are marked interrupted, the command exits with 130, and running it again finishes."""
    # 1,200 epochs a cell: long enough that no cell can finish (and let a third one start)
    # before the interrupt at epoch 40 lands, even on a loaded machine (at 400 a CI run saw
    # every cell started)
    path = _write(tmp_path, BASE.format(name="i", epochs=1200))
    spec = load_sweep(path)
    out = tmp_path / "out"
    proc = _cli(
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        "2",
        "--threads",
        "1",
        "--quiet",
        cwd=tmp_path,
        background=True,
    )
    root = out / "i"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait for a checkpoint beyond epoch 20
            if any(
                rundir.list_epochs(p.parent) and max(rundir.list_epochs(p.parent)) >= 40
                for p in root.glob("runs/*/config.json")
            ):
                break
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    states = {
        p.parent.name: rundir.read_status(p.parent)["state"]
        for p in root.glob("runs/*/status.json")
    }
    assert "interrupted" in states.values() and "failed" not in states.values()
    assert set(states) < _expected_dirs(spec)  # the cells not yet started were not started
    result = _cli(
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        "2",
        "--threads",
        "1",
        "--quiet",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert all(
        rundir.read_status(root / "runs" / d)["state"] == "done" for d in _expected_dirs(spec)
    )


def test_epochs_progress_counts_checkpointed_epochs(tmp_path):
    from grokscope.sweep.executor import epochs_progress, prepare

    spec = _spec(tmp_path)
    root = tmp_path / "out" / "t"
    tasks = prepare(spec, root)
    budget = [int(r["config"]["train"]["epochs"]) for t in tasks for r in t["runs"]]
    assert epochs_progress(tasks) == (0, sum(budget))
    runs = [root / "runs" / r["run"] for t in tasks for r in t["runs"]]
    first, second, third = runs[:3]
    rundir.write_status(first, state="running", epochs_done=20)
    rundir.write_status(second, state="done", epochs_done=15)  # stopped early: counts in full
    third.mkdir(parents=True)
    (third / "status.json").write_text("{ half written")  # unreadable: counts nothing
    assert epochs_progress(tasks) == (20 + budget[1], sum(budget))


def test_a_worker_that_saw_ctrl_c_starts_no_further_cell(monkeypatch, tmp_path):
    """The pool hands a worker its next queued cell as soon as the worker returns an
    interrupted one; that cell must not start (a fresh-clone CI run saw every cell of a sweep
    started after Ctrl-C)."""
    from grokscope.sweep import executor

    calls = []

    def fake_cell(task, threads):
        calls.append(task["cell"])
        return [{"run": r["run"], "cell": task["cell"], "state": "interrupted", "action": "trained",
                 "error": None} for r in task["runs"]]  # fmt: skip

    monkeypatch.setattr(executor, "run_cell", fake_cell)
    monkeypatch.setitem(executor._STOPPING, "yes", False)
    task = {"root": str(tmp_path), "cell": "c000", "runs": [{"run": "c000-s0"}]}
    first = executor._worker_cell(task, 1)
    assert first[0]["state"] == "interrupted"
    second = executor._worker_cell({**task, "cell": "c001", "runs": [{"run": "c001-s0"}]}, 1)
    assert calls == ["c000"]
    assert second[0]["action"] == "not started (interrupted)" and second[0]["state"] == "new"
    # and Ctrl-C reaching an idle worker marks it stopping too
    monkeypatch.setitem(executor._STOPPING, "yes", False)
    executor._note_stop(2, None)
    assert executor._worker_cell(task, 1)[0]["action"] == "not started (interrupted)"
