"""Tree-language runs from the command line: bad input refused in one line before anything is
written; a trained run's per-level columns agree with a re-scoring of its checkpoint, and
`analyze` writes the level events and figures."""

import json

import numpy as np
import pandas as pd
import pytest

from grokscope.store import rundir
from tests.conftest import run_cli

TINY = [
    "--set", "task.tree_vocab=6",
    "--set", "task.tree_rules=2",
    "--set", "task.n_train=400",
    "--set", "task.n_test=80",
    "--set", "task.n_gen=80",
    "--set", "model.n_layers=2",
    "--set", "model.d_model=32",
    "--set", "model.d_head=8",
    "--set", "model.d_mlp=64",
    "--set", "train.epochs=40",
    "--set", "train.eval_every=10",
    "--set", "train.checkpoint_every=20",
]  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "task.tree_rules=40"], "more synonymous rules than distinct tuples"),
        (["--set", "task.tree_filter=4"], "task.tree_filter must be -1 (no filtering) or a level"),
        (["--set", "task.tree_filter=-2"], "task.tree_filter must be -1"),
        (["--set", "task.tree_levels=0"], "task.tree_levels must be in 1..6"),
        (["--set", "task.tree_branching=1"], "task.tree_branching must be >= 2"),
        (["--set", "model.n_ctx=10"], "shorter than the task's longest sequence (18)"),
        (["--set", "task.tree_levels=6", "--set", "task.tree_branching=4"], "above the limit"),
        (
            ["--set", "task.tree_levels=5", "--set", "task.tree_branching=3"],
            "exact per-level references",
        ),
        (["--set", "task.p=97"], "does not apply to the sequence task"),
    ],
)
def test_bad_tree_input_one_line_exit_2_nothing_written(
    monkeypatch, capsys, tmp_path, args, needle
):
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "levels_cpu", *args, "--out", str(tmp_path / "r")
    )
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_tree_fields_are_refused_on_other_tasks(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "murty_qf", "--set", "task.tree_levels=2",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 2 and "applies only to the tree_language task" in err


def test_train_then_analyze_levels(monkeypatch, capsys, tmp_path):
    run = tmp_path / "runs" / "tree"
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "levels_cpu", *TINY,
        "--out", str(tmp_path / "runs"), "--name", "tree", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    metrics = rundir.read_metrics(run)
    for k in range(4):
        assert {f"kl_l{k}_test", f"h_l{k}_test", f"loss_l{k}_train"} <= set(metrics.columns)
    # the plateaus are exact and fall with the level
    h = [float(metrics[f"h_l{k}_test"].iloc[0]) for k in range(4)]
    assert all(a > b for a, b in zip(h[:-1], h[1:], strict=True))
    code, out, err = run_cli(monkeypatch, capsys, "analyze", str(run))
    assert code in (0, None), err
    assert "levels learned in order" in out
    table = pd.read_parquet(run / "analysis.parquet")
    # the analysis re-scores each checkpoint: the same numbers as the evaluation at that step
    both = table.merge(metrics, left_on="epoch", right_on="step", suffixes=("", "_m"))
    assert len(both) >= 2
    for col in ("kl_l1_test", "loss_l2_test", "h_l3_test", "kl_l0_train"):
        np.testing.assert_allclose(both[col], both[f"{col}_m"], rtol=1e-9, atol=1e-12)
    assert any(c.startswith("cascade_k3_j") for c in table.columns)
    assert any(c.startswith("pos_loss_t") for c in table.columns)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "tree_language" and set(summary["levels"]) == {"1", "2", "3"}
    for name in ("levels_loss", "levels_kl", "levels_positions", "levels_cascade"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 5000
    code, out, err = run_cli(monkeypatch, capsys, "show", str(run))
    assert code in (0, None) and "t* " in out
    assert "level 1 transition" in (run / "report.html").read_text()


SWEEP = """
name = "lv"
preset = "levels_cpu"
seeds = [0]

[set]
"task.tree_vocab" = 6
"task.tree_rules" = 2
"task.n_test" = 60
"task.n_gen" = 60
"model.n_layers" = 1
"model.d_model" = 32
"model.d_head" = 8
"model.d_mlp" = 64
"train.epochs" = 30
"train.eval_every" = 10
"train.checkpoint_every" = 30

[grid]
"task.n_train" = [200, 400]
"""


def test_sweep_summary_of_tree_runs(monkeypatch, capsys, tmp_path):
    spec = tmp_path / "lv.toml"
    spec.write_text(SWEEP)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(spec), "--out", str(tmp_path))
    assert code in (0, None), err
    code, out, err = run_cli(monkeypatch, capsys, "sweep-summary", str(tmp_path / "lv"))
    assert code in (0, None), err
    assert "training-set size needed" in out
    cells = pd.read_parquet(tmp_path / "lv" / "summary.parquet")
    assert list(cells["task.n_train"]) == [200, 400] and (cells["n_done"] == 1).all()
    assert (tmp_path / "lv" / "figures" / "levels_by_size.png").is_file()
