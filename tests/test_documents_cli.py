"""Document-language runs from the command line: bad settings refused in one line before
anything is written; a trained run's per-level columns agree with a re-scoring of its
checkpoints, and `analyze` writes the measures, summary and figures."""

import json

import numpy as np
import pandas as pd
import pytest

from grokscope.store import rundir
from tests.conftest import run_cli

TINY = [
    "--set", "task.n_train=300",
    "--set", "task.n_test=60",
    "--set", "task.n_gen=60",
    "--set", "model.n_layers=1",
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
        (["--set", "task.doc_topic_words=0"], "task.doc_topic_words must be >= 1"),
        (["--set", "task.doc_topic_overlap=6"], "task.doc_topic_overlap must lie in 0..5"),
        (["--set", "task.doc_topics=2"], "task.doc_topics must be >= 3"),
        (["--set", "task.doc_genres=9"], "task.doc_genres must lie in 1..6"),
        (["--set", "task.doc_boundary=sometimes"], "unknown task.doc_boundary"),
        (["--set", "task.doc_paragraphs=20"], "at most 12"),
        (["--set", "task.n_test=400000"], "exact per-level references"),
        (["--set", "task.tree_levels=2"], "applies only to the tree_language task"),
    ],
)
def test_bad_document_input_one_line_exit_2_nothing_written(
    monkeypatch, capsys, tmp_path, args, needle
):
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "documents_cpu", *args,
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 2, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_document_fields_are_refused_on_other_tasks(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "levels_cpu", "--set", "task.doc_topics=5",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 2 and "applies only to the documents task" in err


def test_train_then_analyze_documents(monkeypatch, capsys, tmp_path):
    run = tmp_path / "runs" / "docs"
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--preset", "documents_cpu", *TINY,
        "--out", str(tmp_path / "runs"), "--name", "docs", "--quiet",
    )  # fmt: skip
    assert code in (0, None), err
    metrics = rundir.read_metrics(run)
    for k in range(5):
        assert {f"kl_l{k}_test", f"h_l{k}_test", f"kl_l{k}_train"} <= set(metrics.columns)
    assert {"coef_l4_test", "surprise_model_test", "surprise_l3_test"} <= set(metrics.columns)
    # the plateaus are exact and fall with the level
    h = [float(metrics[f"h_l{k}_test"].iloc[0]) for k in range(5)]
    assert all(a > b for a, b in zip(h[:-1], h[1:], strict=True)), h
    code, out, err = run_cli(monkeypatch, capsys, "analyze", str(run))
    assert code in (0, None), err
    assert "levels learned in order" in out and "responses to edits" in out
    assert "s.e. over test documents" in out
    table = pd.read_parquet(run / "analysis.parquet")
    # the analysis re-scores each checkpoint: the same numbers as the evaluation at that step
    both = table.merge(metrics, left_on="epoch", right_on="step", suffixes=("", "_m"))
    assert len(both) >= 2
    for col in ("kl_l1_test", "coef_l2_test", "h_l3_test", "surprise_model_test"):
        np.testing.assert_allclose(both[col], both[f"{col}_m"], rtol=1e-9, atol=1e-12)
    for col in ("adapt_d0", "genre_gain_p1_model", "response_swap_topic", "boundary_corr"):
        assert col in table and np.isfinite(table[col]).any(), col
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "documents" and set(summary["levels"]) == {"1", "2", "3", "4"}
    for name in ("loss", "levels", "adaptation", "interventions"):
        assert (run / "figures" / f"documents_{name}.png").stat().st_size > 5000
    code, out, err = run_cli(monkeypatch, capsys, "show", str(run))
    assert code in (0, None) and "level 4 (genre)" in out
    page = (run / "report.html").read_text()
    assert "level 1 (sentence) transition" in page
    # a short run reaches neither event: the report says where the agreement stood
    peak = metrics["gen_acc"].max()
    assert (
        "<th>t_gen (generalization agreement with the exact predictor &gt;= 0.95)</th>"
        f"<td>not reached: the generalization agreement with the exact predictor peaked at "
        f"{peak:.3f}</td>"
    ) in page


SWEEP = """
name = "dv"
preset = "documents_cpu"
seeds = [0, 1]

[set]
"task.n_test" = 40
"task.n_gen" = 40
"model.n_layers" = 1
"model.d_model" = 32
"model.d_head" = 8
"model.d_mlp" = 64
"train.epochs" = 30
"train.eval_every" = 10
"train.checkpoint_every" = 10

[grid]
"task.doc_boundary" = ["marked", "unreliable"]
"task.n_train" = [200]
"""


def test_sweep_summary_of_document_runs(monkeypatch, capsys, tmp_path):
    spec = tmp_path / "dv.toml"
    spec.write_text(SWEEP)
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(spec), "--out", str(tmp_path))
    assert code in (0, None), err
    # one run analysed, the others not: the summary counts them and guesses nothing
    runs = sorted(p for p in (tmp_path / "dv" / "runs").iterdir() if p.is_dir())
    code, out, err = run_cli(monkeypatch, capsys, "analyze", str(runs[0]), "--no-figures")
    assert code in (0, None), err
    code, out, err = run_cli(monkeypatch, capsys, "sweep-summary", str(tmp_path / "dv"))
    assert code in (0, None), err
    assert "doc_boundary=marked, n_train=200 (1/2 analysed)" in out
    assert "doc_boundary=unreliable, n_train=200: no run analysed yet" in out
    table = pd.read_parquet(tmp_path / "dv" / "documents_runs.parquet")
    assert list(table["analysed"]) == [True, False, False, False]
    assert "final_response_swap_topic" in table
    assert (tmp_path / "dv" / "figures" / "documents_responses.png").is_file()
