"""The command line: one clear line and exit status 2 for every user mistake, no traceback."""

import json
import sys

import pytest

from grokscope import cli
from grokscope.store import rundir
from tests.conftest import TINY


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["grokscope", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


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
    (["train", "--preset", "huge"], "unknown preset"),
    (["show", "/nonexistent/run"], "does not exist"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
    (["runs", "/nonexistent/dir"], "does not exist"),
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
    shown = json.loads(out)
    assert shown["config"]["task"]["p"] == 23 and shown["status"]["state"] == "done"
    assert shown["checkpoints"] == rundir.list_epochs(trained)
    code, out, _ = run_cli(monkeypatch, capsys, "runs", str(trained.parent))
    assert code in (0, None) and "done" in out and "x+y" in out


def test_existing_run_is_not_overwritten(trained, monkeypatch, capsys):
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--out",
        str(trained.parent),
        "--name",
        "r",
        "--quiet",
        *sets(*TINY),
    )
    assert code == 2 and "--resume" in err


def test_corrupt_files_are_named(trained, monkeypatch, capsys):
    (trained / "config.json").write_text("{not json")
    code, _, err = run_cli(monkeypatch, capsys, "show", str(trained))
    assert code == 2 and "config.json is corrupt" in err


def test_corrupt_checkpoint_falls_back_or_fails_clearly(trained, monkeypatch, capsys):
    newest = rundir.list_epochs(trained, rundir.RESUME_RE)[-1]
    rundir.resume_path(trained, newest).write_bytes(b"garbage")
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
