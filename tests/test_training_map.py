"""The map command end to end on real (tiny) runs: weight statistics cached, map written."""

import json
from itertools import groupby

import pandas as pd
import pytest

from grokscope.errors import GrokscopeError, RunDirError
from grokscope.measures.weights import WEIGHT_STAT_COLUMNS, WEIGHT_STATS_DEFINITION
from grokscope.orchestrate.train import train_run
from grokscope.orchestrate.training_map import (
    DEFINITION,
    WEIGHT_STATS_FILE,
    build_map,
    weight_table,
)
from grokscope.store import rundir
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("runs")
    for seed in range(4):
        cfg = tiny_config(
            f"train.seed={seed}",
            "train.epochs=40",
            "train.checkpoint_every=5",
            "train.grok_threshold=0.2",
        )
        train_run(cfg, root / f"s{seed}")
    return root


def test_weight_table_uses_the_regular_grid_and_its_own_cache(runs, monkeypatch):
    run = runs / "s0"
    analysis = pd.DataFrame({"epoch": [0, 5], "restricted_loss": [1.0, 2.0]})
    rundir.write_table(run / "analysis.parquet", analysis)
    before = (run / "analysis.parquet").read_bytes()
    table = weight_table(run)
    assert list(table["epoch"]) == list(range(0, 41, 5))
    assert list(table.columns) == ["epoch", *WEIGHT_STAT_COLUMNS]
    # weight statistics of epoch 0 come from the initial weights: L2 of W_E etc. are > 0
    assert (table["w_l2"] > 0).all()
    assert (run / "analysis.parquet").read_bytes() == before  # never written by the map
    cached = rundir.read_table(run / WEIGHT_STATS_FILE)
    # one row per checkpoint, the same values, tagged with the definition they follow
    assert set(cached[DEFINITION]) == {WEIGHT_STATS_DEFINITION}
    pd.testing.assert_frame_equal(cached.drop(columns=DEFINITION), table)

    # a second call reads the cache and loads no checkpoint; a row missing from the cache is
    # computed alone and added back
    loaded = []
    real = rundir.load_weights
    monkeypatch.setattr(rundir, "load_weights", lambda r, e: loaded.append(e) or real(r, e))
    pd.testing.assert_frame_equal(weight_table(run), table)
    assert loaded == []
    rundir.write_table(run / WEIGHT_STATS_FILE, cached[cached["epoch"] != 20])
    pd.testing.assert_frame_equal(weight_table(run), table)
    assert loaded == [20]
    pd.testing.assert_frame_equal(rundir.read_table(run / WEIGHT_STATS_FILE), cached)
    # values cached under another definition of the statistics are recomputed, not read
    stale = cached.assign(**{DEFINITION: "older"}, w_l2=-1.0)
    rundir.write_table(run / WEIGHT_STATS_FILE, stale)
    loaded.clear()
    pd.testing.assert_frame_equal(weight_table(run), table)
    assert loaded == list(range(0, 41, 5))
    (run / "analysis.parquet").unlink()


def test_weight_table_reads_analysis_statistics(runs):
    run = runs / "s3"
    computed = weight_table(run)
    (run / WEIGHT_STATS_FILE).unlink()
    analysed = computed.copy()
    analysed[list(WEIGHT_STAT_COLUMNS)] += 1.0  # distinguishable from recomputed values
    analysed["restricted_loss"] = 0.5
    analysed[DEFINITION] = WEIGHT_STATS_DEFINITION
    rundir.write_table(run / "analysis.parquet", analysed)
    try:
        expected = analysed[["epoch", *WEIGHT_STAT_COLUMNS]]
        pd.testing.assert_frame_equal(weight_table(run), expected)
        assert not (run / WEIGHT_STATS_FILE).exists()
        # an analysis written before the definition tag existed is not trusted
        rundir.write_table(run / "analysis.parquet", analysed.drop(columns=DEFINITION))
        pd.testing.assert_frame_equal(weight_table(run), computed)
    finally:
        (run / "analysis.parquet").unlink()


def test_map_over_runs_writes_files(runs, tmp_path):
    result = build_map([runs], tmp_path / "m", max_states=3, restarts=2)
    saved = json.loads((tmp_path / "m" / "map.json").read_text())
    assert saved["n_states"] == result["n_states"] and 1 <= result["n_states"] <= 3
    assert set(saved["bic"]) == {"1", "2", "3"}
    assert len(saved["runs"]) == 4
    for entry in saved["runs"]:
        assert len(entry["states"]) == len(entry["epochs"]) == 9
        conv = rundir.read_metrics(entry["run"])
        hit = conv[conv["test_acc"] >= 0.2]["epoch"]
        assert entry["convergence_epoch"] == (int(hit.min()) if len(hit) else None)
    for name in ("training_map.png", "state_sequences.png", "bic.png"):
        assert (tmp_path / "m" / "figures" / name).stat().st_size > 1000
    for st in saved["states"]:
        assert st["p_value"] is None or 0.0 <= st["p_value"] <= st["p_value_holm"] <= 1.0
        assert st["time_p_value"] is None or st["time_p_value"] <= st["time_p_value_holm"] <= 1
    assert saved["min_dwell"] == 2
    for run in runs.iterdir():
        assert (run / WEIGHT_STATS_FILE).is_file()


def test_map_errors_are_clear(runs, tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        build_map([tmp_path / "nothing"], tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no run directories"):
        build_map([tmp_path / "empty"], tmp_path / "m")


def test_fewer_than_three_runs_are_refused(runs, tmp_path):
    with pytest.raises(GrokscopeError, match="at least 3 runs.*got 2"):
        build_map([runs / "s1", runs / "s2"], tmp_path / "two", figures=False)
    assert not (tmp_path / "two").exists()


@pytest.mark.parametrize(
    "args, needle",
    [(["s1"], "at least 3 runs"), (["s1", "s2", "s3", "--min-dwell", "0"], "--min-dwell")],
)
def test_map_cli_refuses_in_one_line(runs, tmp_path, monkeypatch, capsys, args, needle):
    paths = [str(runs / a) if a.startswith("s") else a for a in args]
    code, out, err = run_cli(monkeypatch, capsys, "map", *paths, "--out", str(tmp_path / "m"))
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_map_cli_reports_raw_and_adjusted_p(runs, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "m"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "map",
        str(runs),
        "--out",
        str(out_dir),
        "--max-states",
        "2",
        "--restarts",
        "1",
        "--min-dwell",
        "3",
    )
    assert code in (0, None), err
    assert "Holm" in out and "3+ consecutive" in out
    saved = json.loads((out_dir / "map.json").read_text())
    assert saved["min_dwell"] == 3
    # visits are runs of 3+ equal consecutive states in each run's decoded path
    for st in saved["states"]:
        expected = [
            i
            for i, entry in enumerate(saved["runs"])
            if any(k == st["id"] and len(list(g)) >= 3 for k, g in groupby(entry["states"]))
        ]
        assert st["visited_runs"] == expected


def test_nan_feature_is_a_clear_error(runs, tmp_path, monkeypatch):
    import grokscope.orchestrate.training_map as lm

    real = lm.weight_table

    def poisoned(run):
        t = real(run)
        t.loc[2, "w_l1"] = float("nan")
        return t

    monkeypatch.setattr(lm, "weight_table", poisoned)
    with pytest.raises(GrokscopeError, match="cannot fit"):
        build_map([runs], tmp_path / "nan", max_states=2, restarts=1, figures=False)


def test_pooled_scaling_is_recorded(runs, tmp_path):
    result = build_map(
        [runs], tmp_path / "p", max_states=2, restarts=1, figures=False, scaling="pooled"
    )
    saved = json.loads((tmp_path / "p" / "map.json").read_text())
    assert result["scaling"] == saved["scaling"] == "pooled"
    assert len(saved["runs"]) == 4


@pytest.mark.parametrize(
    ("preset_name", "overrides"),
    [
        (
            "structural_cpu",
            ["task.n_train=300", "task.n_test=40", "task.n_gen=40", "model.n_layers=1",
             "model.d_model=32", "model.d_head=8", "model.d_mlp=64", "optim.batch_size=16"],
        ),
        (
            "levels_cpu",
            ["task.n_train=300", "task.n_test=40", "task.n_gen=40", "model.n_layers=1",
             "model.d_model=32", "model.d_head=8", "model.d_mlp=64", "optim.batch_size=16"],
        ),
    ],
)  # fmt: skip
def test_map_of_language_model_runs_reads_each_kinds_convergence(preset_name, overrides, tmp_path):
    """``map`` on short runs of the other kinds: the weight statistics of their checkpoints, and
    convergence as their kind defines it (t_gen held for structural runs, the top level's
    transition for tree languages), not the test accuracy of an algorithmic run."""
    from grokscope.config import apply_overrides, preset
    from grokscope.kinds import kind_of

    common = ["train.epochs=40", "train.eval_every=10", "train.checkpoint_every=10"]
    runs = []
    for seed in (0, 1, 2):
        cfg = apply_overrides(preset(preset_name), [*overrides, *common, f"train.seed={seed}"])
        train_run(cfg, tmp_path / f"r{seed}")
        runs.append(tmp_path / f"r{seed}")
    out = build_map(runs, tmp_path / "map", max_states=2, restarts=1, figures=False)
    assert out["n_runs"] == 3 and out["n_states"] in (1, 2)
    from grokscope.orchestrate.load import load_run

    for entry, run in zip(out["runs"], runs, strict=True):
        loaded = load_run(run)
        # 40 steps learn neither the generalization rule nor the top level: no run converges
        assert entry["convergence_epoch"] is None
        assert loaded.kind.convergence(loaded, None) is None
        kind = kind_of(loaded.config)
        if kind.name == "structural":  # held generalization accuracy: any accuracy holds >= 0
            assert kind.convergence(loaded, 0.0) == 0
        else:  # the top level's transition, whatever the accuracy threshold
            assert kind.convergence(loaded, 0.0) is None
