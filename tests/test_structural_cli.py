"""Sequence runs from the command line: bad input refused in one line before anything is
written, and `analyze` drawing the curves and trees of a trained run."""

import json

import numpy as np
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
            "task.dyck_depth must be in 1..1000, got 0",
        ),
        (["--preset", "murty_qf", "--set", "model.kind=transformer"], "needs model.kind=lm"),
        (["--preset", "quick", "--set", "model.kind=lm"], "needs model.kind=transformer"),
        (["--preset", "murty_qf", "--set", "model.ln_position=middle"], "ln_position"),
        (["--preset", "murty_qf", "--set", "optim.batch_size=0"], "mini-batches"),
        (["--preset", "murty_qf", "--set", "model.n_ctx=5"], "shorter than the task's longest"),
        (["--preset", "murty_qf", "--set", "task.n_gen=100000000"], "above the limit"),
        (
            ["--preset", "murty_qf", "--set", "task.name=dyck", "--set", "task.dyck_depth=5000"],
            "task.dyck_depth must be in 1..1000",
        ),
        (
            ["--preset", "murty_qf", "--set", "task.name=dyck", "--set", "task.dyck_k=40000"],
            "task.dyck_k (bracket types) must be in 1..1000",
        ),
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
    code, out, err = run_cli(monkeypatch, capsys, "train", *args, "--out", str(tmp_path / "runs"))
    assert code == 2, err
    assert "run directory" not in out  # no directory is announced that was never made
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


def test_sequence_sweep_trains_each_cell_as_one_batch_and_summarizes_per_cell(
    monkeypatch, capsys, tmp_path
):
    """A sweep over depth: a cell's seeds one batched task, `analyze` per run, then `sweep-summary`
    gives per-cell means of the final measures and the Spearman correlations of the runs."""
    from scipy import stats

    from grokscope.sweep.executor import prepare
    from grokscope.sweep.spec import load_sweep

    spec_file = tmp_path / "depth.toml"
    sets = "\n".join(
        f'"{k}" = {v}'
        for k, v in (
            ("task.n_train", 600), ("task.n_test", 40), ("task.n_gen", 40),
            ("model.d_model", 32), ("model.d_head", 8), ("model.d_mlp", 64),
            ("train.epochs", 20), ("train.eval_every", 10), ("train.checkpoint_every", 10),
        )
    )  # fmt: skip
    spec_file.write_text(
        f'name = "depth"\npreset = "structural_cpu"\nseeds = [0, 1]\n[set]\n{sets}\n'
        '[grid]\n"model.n_layers" = [1, 2]\n'
    )
    tasks = prepare(load_sweep(spec_file), tmp_path / "prep")
    assert [len(t["runs"]) for t in tasks] == [2, 2]  # a cell's seeds train as one batch
    code, _, err = run_cli(
        monkeypatch, capsys, "sweep", str(spec_file), "--out", str(tmp_path), "-w", "1", "-q"
    )
    assert code in (0, None), err
    root = tmp_path / "depth"
    for run in sorted((root / "runs").iterdir()):
        if run.is_dir():
            assert run_cli(monkeypatch, capsys, "analyze", str(run), "--no-figures")[0] in (0, None)
    code, out, err = run_cli(monkeypatch, capsys, "sweep-summary", str(root))
    assert code in (0, None), err
    assert "spearman(tree_score, final gen acc)" in out
    # two depths: the inverted-U test says why it is not made
    assert "inverted U over depth: not tested: needs 3 or more depths" in out.replace("\n", " ")
    runs = pd.read_parquet(root / "runs.parquet")
    cells = pd.read_parquet(root / "summary.parquet")
    assert len(runs) == 4 and (runs["state"] == "done").all()
    for _, cell in cells.iterrows():
        mine = runs[runs["cell"] == cell["cell"]]
        assert cell["tree_score_mean"] == pytest.approx(mine["tree_score"].mean())
        last = pd.read_parquet(root / "runs" / mine["run"].iloc[0] / "metrics.parquet")
        assert mine["gen_acc"].iloc[0] == pytest.approx(last["gen_acc"].iloc[-1])
    # four runs are too few for a rank correlation: it is left out, not printed as evidence
    assert "spearman(weight_norm, final gen acc) = - (p -, 4 finished" in out
    six = pd.DataFrame(
        {
            "state": ["done"] * 6,
            "gen_acc": [0.1, 0.5, 0.3, 0.9, 0.2, 0.7],
            "weight_norm": [3.0, 1.0, 2.0, 6.0, 4.0, 5.0],
        }
    )
    from grokscope.kinds.structural.sweep_summary import predictor_correlations

    corr = predictor_correlations(six).set_index("measure")
    rho, p = stats.spearmanr(six["weight_norm"], six["gen_acc"])
    assert corr.loc["weight_norm", "rho"] == pytest.approx(rho)
    assert corr.loc["weight_norm", "p"] == pytest.approx(p)
    assert np.isnan(
        predictor_correlations(six.iloc[:4]).set_index("measure").loc["weight_norm", "rho"]
    )
    assert (root / "figures" / "generalization_by_cell.png").is_file()


def test_branching_baselines_score_their_own_shape_perfectly():
    from grokscope.kinds.structural.analysis import _branching, f1_baselines

    right = [_branching(0, n - 1, True) for n in (3, 5, 8)]
    left = [_branching(0, n - 1, False) for n in (3, 5, 8)]
    assert f1_baselines(right) == {"right_branching": 1.0, "left_branching": 0.0}
    assert f1_baselines(left) == {"right_branching": 0.0, "left_branching": 1.0}


def test_sweep_files_refuse_fields_the_task_never_reads(tmp_path):
    from grokscope.config import ConfigError
    from grokscope.sweep.spec import parse_sweep

    bad = {"preset": "structural_cpu", "set": {"task.p": 97}, "grid": {"optim.lr": [1e-4]}}
    with pytest.raises(ConfigError, match="task.p does not apply to the sequence task"):
        parse_sweep({**bad, "seeds": [0]})
    with pytest.raises(ConfigError, match="applies only to sequence tasks"):
        parse_sweep({"preset": "quick", "grid": {"task.n_train": [5, 6]}, "seeds": [0]})


def test_a_decaying_schedule_refuses_a_new_budget(monkeypatch, capsys, tmp_path):
    """The learning rate falls to 0 at the budget: a longer budget on resume would bend the
    schedule mid-run (a saw-tooth no uninterrupted run has), so it is refused in one line."""
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "structural_cpu", *TINY_QF,
        "--set", "train.epochs=10", "--out", str(tmp_path), "--name", "r", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--resume", str(tmp_path / "r"), "--set", "train.epochs=20"
    )
    assert code == 2 and "decays its learning rate" in err and len(err.strip().splitlines()) == 1
