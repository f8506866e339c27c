"""The command line: one clear line and exit status 2 for every user mistake, no traceback."""

import json

import pytest

from grokscope import cli
from grokscope.store import rundir
from tests.conftest import TINY, run_cli


def sets(*items):
    return [x for item in items for x in ("--set", item)]


@pytest.fixture
def trained(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--out",
        str(tmp_path),
        "--name",
        "r",
        "--quiet",
        *sets(*TINY, "train.epochs=20"),
    )
    assert code in (0, None)
    return tmp_path / "r"


BAD = [
    (["train", *sets("task.name=cube")], "unknown task"),
    (["train", *sets("task.op=x%y")], "unknown modular op"),
    (["train", *sets("task.op=x/y", "task.p=91")], "not prime"),
    (["train", *sets("task.train_fraction=1.5")], "train_fraction"),
    (["train", *sets("model.d_model=100", "model.n_heads=3")], "divisible"),
    (["train", *sets("model.colour=red")], "unknown config field"),
    (
        ["train", "--preset", "huge"],
        "choose one of default, documents_cpu, levels_cpu, mlp_quad, murty_qf, murty_tense, "
        "nanda2023, quick, structural_cpu",
    ),
    (["train", *sets("model.colr=red")], "model has act, bias"),
    (["show", "/nonexistent/run"], "does not exist"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
    (["runs", "/nonexistent/dir"], "does not exist"),
    (["analyze", "/tmp", "--cleanup-rule", "eyeball"], "level_off, test_loss_fall"),
]


@pytest.mark.parametrize("args, needle", BAD)
def test_bad_input_one_line_exit_2(monkeypatch, capsys, args, needle):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert needle in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_train_show_runs(trained, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "show", str(trained))
    assert code in (0, None)
    assert "done: 20 of 20 epochs" in out and "not analysed yet" in out
    code, out, err = run_cli(monkeypatch, capsys, "show", str(trained), "--json")
    shown = json.loads(out)
    assert shown["config"]["task"]["p"] == 23 and shown["status"]["state"] == "done"
    assert shown["checkpoints"] == rundir.list_epochs(trained)
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained.parent))
    assert code in (0, None) and "done" in out and "x+y" in out


def test_existing_run_is_not_overwritten(trained, monkeypatch, capsys):
    again = ["train", "--out", str(trained.parent), "--name", "r", "--quiet", *sets(*TINY)]
    code, _, err = run_cli(monkeypatch, capsys, *again)
    assert code == 2 and "already holds a run" in err and "another --name" in err
    rundir.write_status(trained, state="interrupted")  # an unfinished run points to --resume
    code, _, err = run_cli(monkeypatch, capsys, *again)
    assert code == 2 and f"--resume {trained}" in err


def _snapshot(run):
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_resume_of_a_finished_run_changes_nothing(trained, monkeypatch, capsys):
    before = _snapshot(trained)
    for _ in range(2):
        code, out, _ = run_cli(monkeypatch, capsys, "train", "--resume", str(trained))
        assert code in (0, None) and "nothing to do" in out and "train.epochs=N" in out
    assert _snapshot(trained) == before


def test_resume_of_an_early_stopped_run_trains_no_extra_epoch(tmp_path):
    """A run that stopped early (t_grok + early_stop_after), killed before its status said done,
    resumes to done at the same epoch: no extra epoch, checkpoint or metrics row."""
    from grokscope.orchestrate.train import train_run
    from tests.conftest import tiny_config

    cfg = tiny_config(
        "train.epochs=600",
        "train.early_stop_after=10",
        "task.train_fraction=0.8",
        "train.grok_threshold=0.9",
        "train.seed=1",
    )
    first = train_run(cfg, tmp_path / "r")
    assert first["epochs_done"] == first["t_grok_epoch"] + 10 < 600
    rows, epochs = len(rundir.read_metrics(tmp_path / "r")), rundir.list_epochs(tmp_path / "r")
    rundir.write_status(tmp_path / "r", state="running")
    again = train_run(None, tmp_path / "r", resume=True)
    assert again["state"] == "done" and again["epochs_done"] == first["epochs_done"]
    assert len(rundir.read_metrics(tmp_path / "r")) == rows
    assert rundir.list_epochs(tmp_path / "r") == epochs


def test_an_early_stopped_run_is_extended_only_when_it_would_train(tmp_path, monkeypatch, capsys):
    """--set train.epochs=N alone cannot move a run that stopped early after t_grok: refused,
    nothing written; with train.early_stop_after=-1 it trains on to N. A device that is not
    here is refused before config.json changes; the library leaves finished runs untouched."""
    from grokscope.orchestrate.train import train_run
    from tests.conftest import tiny_config

    run = tmp_path / "es"
    train_run(
        tiny_config(
            "train.epochs=600",
            "train.early_stop_after=10",
            "task.train_fraction=0.8",
            "train.grok_threshold=0.9",
            "train.seed=1",
        ),
        run,
    )
    before = _snapshot(run)
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--resume", str(run))
    assert code in (0, None) and "early stop" in out and "early_stop_after=-1" in out
    assert train_run(None, run, resume=True) == rundir.read_status(run)

    def resume(*items):
        return run_cli(monkeypatch, capsys, "train", "--resume", str(run), "--quiet", *sets(*items))

    code, _, err = resume("train.epochs=700")
    assert code == 2 and "would train nothing" in err and "early_stop_after=-1" in err
    code, _, err = resume("train.epochs=700", "train.device=cuda:7")
    assert code == 2 and "not available" in err
    assert _snapshot(run) == before  # nothing written by any of the refused commands
    code, out, _ = resume("train.epochs=700", "train.early_stop_after=-1", "train.device=cpu")
    assert code in (0, None) and "done: 700 epochs" in out


def test_a_finished_run_is_extended_explicitly(trained, monkeypatch, capsys):
    def resume(*items):
        return run_cli(
            monkeypatch, capsys, "train", "--resume", str(trained), "--quiet", *sets(*items)
        )

    code, _, err = resume("model.d_model=64")
    assert code == 2 and "may only change" in err
    code, _, err = resume("train.epochs=10")
    assert code == 2 and "below the 20 epochs" in err
    code, out, _ = resume("train.epochs=30")
    assert code in (0, None) and "done: 30 epochs" in out
    assert rundir.read_config(trained).train.epochs == 30
    assert rundir.read_metrics(trained)["epoch"].max() == 30


def test_unavailable_device_is_refused_before_any_directory(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is available")
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--out",
        str(tmp_path / "o"),
        *sets(*TINY, "train.device=cuda"),
    )
    assert code == 2 and "not available" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err and not (tmp_path / "o").exists()


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "PLAIN_EVERY_S", 0.0)
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--out",
        str(tmp_path),
        "--name",
        "r",
        *sets(*TINY, "train.epochs=20"),
    )
    assert code in (0, None)
    lines = [x for x in out.splitlines() if x.startswith("epoch ")]
    assert lines[-1].startswith("epoch 20/20  acc ") and len(lines) >= 4  # one per evaluation
    assert "\x1b" not in out  # no terminal control codes in a log


def test_runs_formats_and_nothing_cut_at_80_columns(trained, monkeypatch, capsys):
    monkeypatch.setattr(cli, "console", cli.Console(width=80))
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained.parent))
    assert code in (0, None) and "…" not in out
    assert max(len(x) for x in out.splitlines()) <= 80
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained.parent), "--format", "csv")
    header, row = out.strip().splitlines()
    assert header.split(",")[:6] == ["run", "task", "op", "p", "seed", "state"]
    assert row.startswith("r,modular,x+y,23,0,done,20,")
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained.parent), "--format", "json")
    (rec,) = json.loads(out)
    assert rec["run"] == "r" and rec["epochs"] == 20 and rec["state"] == "done"
    code, _, err = run_cli(monkeypatch, capsys, "runs", str(trained.parent), "--format", "xml")
    assert code == 2 and "table, csv, json" in err


def test_runs_never_splits_a_value_in_a_narrow_terminal(trained, monkeypatch, capsys, tmp_path):
    """A run id too long for one line per run at 80 columns: every value still appears whole
    (one block per run), nothing is cut, no line is longer than the terminal; accuracies have
    three decimals and a missing value is '-'."""
    import shutil

    folder = tmp_path / "many"
    long_id = "c000-train_fraction=0.35-weight_decay=1.0-s0"
    shutil.copytree(trained, folder / "r")
    shutil.copytree(trained, folder / long_id)
    for width in (80, 200):
        monkeypatch.setattr(cli, "console", cli.Console(width=width))
        code, out, _ = run_cli(monkeypatch, capsys, "runs", str(folder))
        assert code in (0, None) and "…" not in out and "<NA>" not in out
        assert max(len(x) for x in out.splitlines()) <= width
        assert long_id in out and "modular" in out and "done" in out
        accs = [w for w in out.replace(",", " ").split() if w.startswith(("0.", "1."))]
        assert accs and all(len(a) == 5 for a in accs)


def test_version(monkeypatch, capsys):
    from importlib.metadata import version

    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code in (0, None) and out.strip() == f"grokscope {version('grokscope')}"


def test_corrupt_files_are_named(trained, monkeypatch, capsys):
    (trained / "config.json").write_text("{not json")
    code, _, err = run_cli(monkeypatch, capsys, "show", str(trained))
    assert code == 2 and "config.json is corrupt" in err


def test_corrupt_checkpoint_falls_back_or_fails_clearly(trained, monkeypatch, capsys):
    newest = rundir.list_epochs(trained, rundir.RESUME_RE)[-1]
    rundir.resume_path(trained, newest).write_bytes(b"garbage")
    rundir.write_status(trained, state="interrupted")
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", str(trained))
    assert code == 2 and "no complete checkpoint" in err
    rundir.checkpoint_path(trained, 10).write_bytes(b"\x00" * 10)
    with pytest.raises(rundir.RunDirError, match="corrupt"):
        rundir.load_weights(trained, 10)


def test_every_command_help_has_an_example():
    from typer.testing import CliRunner

    runner = CliRunner()
    names = [c.name or c.callback.__name__ for c in cli.app.registered_commands]
    assert {"train", "runs", "show", "config", "report"} <= set(names)
    for name in names:
        result = runner.invoke(cli.app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output, f"{name} --help has no example"


def test_map_refuses_an_unknown_scaling(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "map", str(tmp_path), "--scaling", "global")
    assert code == 2
    assert "--scaling must be per-run or pooled" in err and "Traceback" not in err


def test_a_folder_of_runs_given_as_a_run_says_what_it_holds(trained, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "analyze", str(trained.parent))
    assert code == 2 and "is not a run directory (no config.json); it holds these runs: r" in err
    empty = trained.parent / "empty"
    empty.mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "show", str(empty))
    assert code == 2 and "is not a run directory" in err and "config.json is missing" in err
