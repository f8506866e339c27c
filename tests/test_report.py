"""The HTML report of a run carries its headline numbers and embeds its figures."""

import base64

from grokscope.orchestrate.report import write_report
from grokscope.orchestrate.train import train_run
from grokscope.store import rundir


def test_report_of_a_plain_training_run(tmp_path, tiny):
    run = tmp_path / "r"
    status = train_run(tiny("train.epochs=20", "train.mem_threshold=0.05"), run)
    out = write_report(run)
    page = out.read_text()
    assert out == run / "report.html"
    assert (run / "figures" / "training_curves.png").is_file()
    png = (run / "figures" / "training_curves.png").read_bytes()
    assert base64.b64encode(png).decode() in page  # embedded, self-contained
    assert f"<td>epoch {status['t_mem_epoch']}</td>" in page
    assert "not reached" in page  # t_grok is censored in 20 epochs
    assert "(x+y) mod 23" in page
    assert rundir.read_status(run) == status  # the report writes nothing back into the run
    assert "Phases" not in page and "Notes" not in page  # no analysis: no empty sections


def test_report_reads_as_prose():
    """Labels instead of raw keys, the phases and the ablations as tables."""
    from grokscope.config import Config
    from grokscope.kinds.algorithmic.report import ablations_table, headline_rows, phases_table

    cfg = Config()
    status = {
        "state": "done",
        "epochs_done": 900,
        "wall_s": 12.0,
        "t_mem_epoch": 60,
        "t_grok_epoch": None,
    }
    last = {"train_loss": 1e-6, "test_loss": 0.5, "train_acc": 1.0, "test_acc": 0.9}
    rows = headline_rows(
        cfg, status, last, {"key_frequencies": [3, 7], "neuron_single_freq_share": 0.8125}
    )
    assert rows["key frequencies"] == "3, 7"
    assert rows["single-frequency MLP neurons (≥ 85 % of energy in one)"] == "81.2%"
    assert rows["grokked (test accuracy ≥ 0.99)"] == "not reached"
    assert not any("_" in key for key in rows)  # no raw snake_case keys
    ph = phases_table({"memorization_end": 100, "circuit_formation_end": 650, "cleanup_end": None})
    assert "<td>circuit formation</td><td>100</td><td>650</td>" in ph
    assert "<td>cleanup</td><td>650</td><td>not found</td>" in ph
    ab = ablations_table(
        [{"target": "logits", "ablation": "remove", "freq": 12, "loss": 0.47, "test_loss": 0.56}]
    )
    assert "<td>frequency 12 removed</td><td>0.47</td><td>0.56</td>" in ab


def test_an_analysed_run_report_and_analyze_lines_speak_in_words(tmp_path, tiny):
    """A short run's analysis leaves notes (no key frequencies, no phases): the report's notes
    and what ``analyze`` prints name things in words, not as column or summary keys."""
    import re

    from grokscope.kinds import kind_of
    from grokscope.orchestrate.analyze import analyze_run

    run = tmp_path / "r"
    train_run(tiny("train.epochs=40"), run)
    summary = analyze_run(run, every=2, figures=False)
    assert len(summary["notes"]) >= 2  # the case this test is about: there are notes
    page = write_report(run).read_text()
    notes = re.search(r"<h2>Notes</h2><ul>(.*?)</ul>", page).group(1)
    lines = "\n".join(kind_of(rundir.read_config(run)).analysis_lines(summary))
    for text in (notes, lines):
        # snake_case keys; t_mem / t_grok are the literature's names
        assert not re.findall(r"\b(?!t_)[a-z]+_[a-z0-9_]+\b", text), text
        assert "None" not in text and "null" not in text
