"""The HTML report of a run carries its headline numbers and embeds its figures."""

import base64

from grokscope.report.html import write_report
from grokscope.store import rundir
from grokscope.store.runner import train_run


def test_report_of_a_plain_training_run(tmp_path, tiny):
    run = tmp_path / "r"
    status = train_run(tiny("train.epochs=20", "train.mem_threshold=0.05"), run)
    out = write_report(run)
    page = out.read_text()
    assert out == run / "report.html"
    assert (run / "figures" / "training_curves.png").is_file()
    png = (run / "figures" / "training_curves.png").read_bytes()
    assert base64.b64encode(png).decode() in page  # embedded, self-contained
    assert f"<td>{status['t_mem_epoch']}</td>" in page
    assert "not reached" in page  # t_grok is censored in 20 epochs
    assert "(x+y) mod 23" in page
    assert rundir.read_status(run) == status  # the report writes nothing back into the run
