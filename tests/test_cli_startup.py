"""A user mistake is one line and exit 2 before torch is imported (torch alone takes 1-3 s to
load on a laptop, and the error waited for it): checked by what the process imported, not by a
clock, so the test holds on a busy machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from grokscope.cli import main
sys.argv = ["grokscope", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as e:
    code = e.code
heavy = [m for m in ("torch", "matplotlib") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""

MISTAKES = [
    ["train", "--preset", "nosuch"],
    ["train", "--set", "task.p=abc"],
    ["train", "--set", "task.nosuch=1"],
    ["train", "--resume", "nosuch"],
    ["analyze", "nosuch"],
    ["analyze", "."],
    ["show", "nosuch"],
    ["report", "nosuch"],
    ["runs", "nosuch"],
    ["map", "nosuch"],
    ["export-data", "nosuch", "out"],
    ["sweep-summary", "nosuch"],
    ["config", "--preset", "nosuch"],
]


@pytest.mark.parametrize("args", MISTAKES, ids=[" ".join(a) for a in MISTAKES])
def test_a_mistake_is_one_line_before_torch_loads(args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert result["heavy"] == [], f"imported {result['heavy']} before saying: {lines[0]}"
