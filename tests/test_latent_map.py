"""The map command end to end on real (tiny) runs: weight statistics cached, map written."""

import json

import pytest

from grokscope.errors import GrokscopeError, RunDirError
from grokscope.latent_map import build_map, weight_table
from grokscope.measures.weights import WEIGHT_STAT_COLUMNS
from grokscope.store import rundir
from grokscope.store.runner import train_run


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


def test_weight_table_uses_the_regular_grid_and_caches(runs):
    table = weight_table(runs / "s0")
    assert list(table["epoch"]) == list(range(0, 41, 5))
    assert list(table.columns) == ["epoch", *WEIGHT_STAT_COLUMNS]
    cached = rundir.read_table(runs / "s0" / "analysis.parquet")
    assert set(WEIGHT_STAT_COLUMNS) <= set(cached.columns)
    # weight statistics of epoch 0 come from the initial weights: L2 of W_E etc. are > 0
    assert (table["w_l2"] > 0).all()


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
        assert st["p_value"] is None or 0.0 <= st["p_value"] <= 1.0


def test_map_errors_are_clear(runs, tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        build_map([tmp_path / "nothing"], tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no run directories"):
        build_map([tmp_path / "empty"], tmp_path / "m")


def test_single_run_is_mapped_with_a_note(runs, tmp_path):
    result = build_map([runs / "s1"], tmp_path / "one", max_states=2, restarts=1, figures=False)
    assert result["n_runs"] == 1
    assert any("run" in note for note in result["notes"])


def test_nan_feature_is_a_clear_error(runs, tmp_path, monkeypatch):
    import grokscope.latent_map as lm

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
