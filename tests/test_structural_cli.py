"""Sequence runs from the command line: bad input refused in one line before anything is
written, and `analyze` drawing the curves and trees of a trained run."""

import json

import pandas as pd
import pytest

from tests.conftest import run_cli

TINY_QF = [
    "--set", "task.n_train=800",
    "--set", "task.n_test=60",
    "--set", "task.n_gen=60",
    "--set", "model.n_layers=2",
    "--set", "model.d_model=32",
    "--set", "model.d_head=8",
    "--set", "model.d_mlp=64",
    "--set", "train.epochs=30",
    "--set", "train.eval_every=10",
    "--set", "train.checkpoint_every=10",
]  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--preset", "murty_qf", "--set", "task.p=97"], "does not apply to the sequence task"),
        (["--preset", "quick", "--set", "task.n_gen=5"], "applies only to sequence tasks"),
        (["--preset", "murty_tense", "--set", "task.dyck_k=3"], "only to the dyck task"),
        (["--preset", "murty_qf", "--set", "task.n_gen=0"], "task.n_gen must be >= 1"),
        (
            ["--preset", "murty_qf", "--set", "task.name=dyck", "--set", "task.dyck_depth=0"],
            "task.dyck_depth must be >= 1",
        ),
        (["--preset", "murty_qf", "--set", "model.kind=transformer"], "needs model.kind=lm"),
        (["--preset", "quick", "--set", "model.kind=lm"], "needs model.kind=transformer"),
        (["--preset", "murty_qf", "--set", "model.ln_position=middle"], "ln_position"),
        (["--preset", "murty_qf", "--set", "optim.batch_size=0"], "mini-batches"),
        (["--preset", "murty_qf", "--set", "model.n_ctx=5"], "shorter than the task's longest"),
        (
            [
                "--preset", "murty_qf", "--set", "task.name=dyck", "--set", "task.dyck_k=1",
                "--set", "task.dyck_depth=1", "--set", "task.max_len=6",
                "--set", "task.n_train=500",
            ],
            "Dyck-1 of depth <= 1 has only",
        ),
    ],
)  # fmt: skip
def test_bad_sequence_input_one_line_exit_2_nothing_written(
    monkeypatch, capsys, tmp_path, args, needle
):
    code, _, err = run_cli(monkeypatch, capsys, "train", *args, "--out", str(tmp_path / "runs"))
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_then_analyze_draws_curves_and_trees(monkeypatch, capsys, tmp_path):
    run = tmp_path / "runs" / "qf"
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "structural_cpu", *TINY_QF,
        "--out", str(tmp_path / "runs"), "--name", "qf", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    code, out, err = run_cli(monkeypatch, capsys, "analyze", str(run))
    assert code in (0, None), err
    assert "structural grokking" in out and "tree score" in out
    table = pd.read_parquet(run / "analysis.parquet")
    assert list(table["epoch"]) == [0, 1, 2, 5, 10, 20, 30]
    for col in ("tree_score", "bracket_f1", "weight_norm", "attn_entropy", "attn_entropy_l1"):
        assert table[col].notna().all(), col
    assert ((table["bracket_f1"] >= 0) & (table["bracket_f1"] <= 1)).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "sequence" and len(summary["example_trees"]) == 3
    for name in ("accuracy.png", "tree_measures.png", "trees.png"):
        assert (run / "figures" / name).stat().st_size > 10_000
    assert not (run / "figures" / "training_curves.png").exists()  # no algorithmic figures
    page = (run / "report.html").read_text()
    assert "t_gen" in page and "structural grokking" in page and "tree score" in page
    code, out, _ = run_cli(monkeypatch, capsys, "show", str(run))
    assert "t_id" in out and "generalization acc" in out and "MLP" not in out
