"""``sweep.html``: one self-contained page per sweep (grokscope.report.sweep_page), checked as
text and, where a Chromium is installed, rendered in a real headless browser with its script
run (the test skips, saying why, where none is installed; CI installs Debian's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from grokscope.store import rundir
from grokscope.sweep.executor import run_sweep
from grokscope.sweep.spec import load_sweep
from tests.conftest import run_cli
from tests.test_sweep import BASE

SPEC = BASE.format(name="page", epochs=40)  # 4 cells x 2 seeds of a tiny transformer
FIRST_CELL = "c000-train_fraction=0.3-weight_decay=0.5"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "s.toml").write_text(SPEC)
    run_sweep(load_sweep(tmp / "s.toml"), tmp / "sweeps", workers=1, threads=1)
    root = tmp / "sweeps" / "page"
    # one run has a report: its panel and its row link to it, the others do not
    (root / "runs" / f"{FIRST_CELL}-s1" / "report.html").write_text("<html></html>")
    return root


def _summary(monkeypatch, capsys, root: Path) -> str:
    code, out, err = run_cli(monkeypatch, capsys, "sweep-summary", str(root), "--no-figures")
    assert code in (0, None), err
    assert f"wrote {root / 'sweep.html'}" in out.replace("\n", "")
    return (root / "sweep.html").read_text()


def test_the_page_holds_every_run_and_needs_no_network(monkeypatch, capsys, sweep_root):
    page = _summary(monkeypatch, capsys, sweep_root)
    runs = [r["run"] for r in rundir.read_json(sweep_root / "sweep.json")["runs"]]
    assert len(runs) == 8
    for run in runs:  # a panel (with its curves) and a table row per run
        assert page.count(f'data-run="{run}"') == 2
    assert page.count("<polyline") == 2 * len(runs)  # train and test curve of each run
    links = re.findall(r'href="([^"]+)"', page)
    assert links == [f"runs/{FIRST_CELL}-s1/report.html"] * 2  # only the report there
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched
    status = rundir.read_status(sweep_root / "runs" / runs[0])
    event = "not reached" if status["t_grok_epoch"] is None else str(status["t_grok_epoch"])
    assert f"t_grok {event}" in page  # the hover text carries each run's events


def test_a_sweep_with_unstarted_runs_still_gets_its_page(monkeypatch, capsys, tmp_path):
    """A page while a sweep is under way: runs not yet started are listed as such."""
    (tmp_path / "s.toml").write_text(BASE.format(name="page", epochs=10))
    spec = load_sweep(tmp_path / "s.toml")
    run_sweep(spec, tmp_path / "sweeps", workers=1, threads=1)
    root = tmp_path / "sweeps" / "page"
    shutil.rmtree(root / "runs" / "c003-train_fraction=0.6-weight_decay=1-s1")
    page = _summary(monkeypatch, capsys, root)
    assert "<td>not started</td>" in page and page.count("<polyline") == 14


def _browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def test_the_page_renders_and_its_hover_works_in_a_real_browser(monkeypatch, capsys, sweep_root):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    _summary(monkeypatch, capsys, sweep_root)
    url = (sweep_root / "sweep.html").as_uri() + "#selftest"
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body))
    assert attrs["panels"] == "8"  # the script ran over every run's panel
    first = f"{FIRST_CELL}-s0"
    assert attrs["tip"].startswith(first) and "t_mem" in attrs["tip"]  # hover shows id, events
    assert attrs["highlighted"] == "1"  # and marks the run's row in the table
