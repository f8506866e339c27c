"""`grokscope export-data`: every split of a task as Parquet and JSON Lines that read back to the
dataset grokscope trains on, with a datasheet; bad input is one line, exit 2, nothing written."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from grokscope import config as config_mod
from grokscope.kinds import build_dataset
from tests.conftest import run_cli

SMALL = ["--set", "task.n_train=40", "--set", "task.n_test=10", "--set", "task.n_gen=10"]


def _dataset(preset: str, overrides: list[str]):
    cfg = config_mod.apply_overrides(config_mod.preset(preset), overrides)
    return build_dataset(config_mod.resolve(cfg).task)


def test_algorithmic_splits_round_trip(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "export-data", "quick", str(tmp_path / "q"))
    assert code in (0, None), err
    ds = _dataset("quick", [])
    for split, idx in (("train", ds.train_idx), ("test", ds.test_idx)):
        table = pd.read_parquet(tmp_path / "q" / f"{split}.parquet")
        np.testing.assert_array_equal(np.stack(table["tokens"]), ds.tokens[idx])
        np.testing.assert_array_equal(table["label"], ds.labels[idx])
        np.testing.assert_array_equal(table["a"], ds.operands[idx, 0])
        lines = (tmp_path / "q" / f"{split}.jsonl").read_text().splitlines()
        assert [json.loads(x)["label"] for x in lines] == table["label"].tolist()
    sheet = json.loads((tmp_path / "q" / "datasheet.json").read_text())
    assert sheet["splits"] == {"train": len(ds.train_idx), "test": len(ds.test_idx)}
    assert sheet["task"]["p"] == 59 and "split_rule" in sheet


def test_documents_round_trip_with_their_latents(monkeypatch, capsys, tmp_path):
    args = ["export-data", "documents_cpu", str(tmp_path / "d"), *SMALL]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code in (0, None), err
    ds = _dataset("documents_cpu", ["task.n_train=40", "task.n_test=10", "task.n_gen=10"])
    for split in ("train", "test", "gen"):
        table = pd.read_parquet(tmp_path / "d" / f"{split}.parquet")
        sp, lat = ds.splits[split], ds.info["latents"][split]
        np.testing.assert_array_equal(np.concatenate(table["tokens"].to_list()), sp.tokens)
        np.testing.assert_array_equal(np.concatenate(table["topic"].to_list()), lat["topic"])
        assert table["text"][0].split()[0] == "<bos>" and table["text"][0].split()[-1] == "<eos>"
        records = [json.loads(x) for x in (tmp_path / "d" / f"{split}.jsonl").open()]
        assert [r["role"] for r in records] == [list(r) for r in table["role"]]
    sheet = json.loads((tmp_path / "d" / "datasheet.json").read_text())
    assert sheet["vocab"][:5] == ["<pad>", "<bos>", "<eos>", ".", "<par>"]
    assert len(sheet["topic_vocabularies"]) == 6


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is None, reason="Hugging Face datasets is not installed"
)
def test_structural_data_loads_in_hugging_face_datasets(monkeypatch, capsys, tmp_path):
    """Question formation through ``datasets.load_dataset("parquet", ...)``: every split's
    tokens, answer spans and gold parses come back as generated."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    args = ["export-data", "structural_cpu", str(tmp_path / "s"), *SMALL, "--set", "task.n_dev=10"]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code in (0, None), err
    ds = _dataset("structural_cpu", ["task.n_train=40", "task.n_test=10", "task.n_gen=10",
                                     "task.n_dev=10"])  # fmt: skip
    files = {split: str(tmp_path / "s" / f"{split}.parquet") for split in ds.splits}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert set(loaded) == set(ds.splits)
    for split, sp in ds.splits.items():
        rows = loaded[split]
        assert rows["tokens"] == [sp.sequence(i).tolist() for i in range(len(sp))]
        assert rows["answer_start"] == sp.answer_start.tolist()
        gold = [json.loads(json.dumps(t)) for t in sp.trees]  # tuples as JSON lists
        assert [json.loads(t) for t in rows["tree"]] == gold
        assert rows["text"][0].split() == ds.decode(sp.sequence(0))


def test_tree_language_latents_and_a_run_directory_as_source(monkeypatch, capsys, tmp_path):
    args = ["export-data", "levels_cpu", str(tmp_path / "t"), *SMALL]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code in (0, None), err
    ds = _dataset("levels_cpu", ["task.n_train=40", "task.n_test=10", "task.n_gen=10"])
    table = pd.read_parquet(tmp_path / "t" / "test.parquet")
    got = np.array([np.stack(row) for row in table["latent_l2"]])
    np.testing.assert_array_equal(got, ds.info["latents"]["test"][2])
    # a config file is a source too
    cfg = config_mod.apply_overrides(config_mod.preset("quick"), ["task.p=13"])
    (tmp_path / "c.json").write_text(json.dumps(config_mod.to_dict(cfg)))
    code, out, err = run_cli(monkeypatch, capsys, "export-data", str(tmp_path / "c.json"),
                             str(tmp_path / "c"))  # fmt: skip
    assert code in (0, None), err
    assert len(pd.read_parquet(tmp_path / "c" / "train.parquet")) == int(0.4 * 13 * 13)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["nosuch", "OUT"], "unknown preset"),
        (["quick", "/nonexistent/folder/out"], "does not exist"),
        (["quick", "OUT", "--set", "task.p=1"], "task.p must be >= 2"),
        (["missing.json", "OUT"], "does not exist"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(monkeypatch, capsys, tmp_path, args, needle):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in args]
    code, out, err = run_cli(monkeypatch, capsys, "export-data", *args)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_with_files_is_not_overwritten(monkeypatch, capsys, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    code, out, err = run_cli(monkeypatch, capsys, "export-data", "quick", str(tmp_path / "out"))
    assert code == 2 and "not empty" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
