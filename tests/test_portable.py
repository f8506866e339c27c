"""Portable mode: the golden fingerprint, bit-for-bit resume, refusing mixed modes and machines
where it does not hold. The command line re-executes itself for ``--portable``, so it is run in
a subprocess here (in-process it would replace the test runner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from grokscope.errors import GrokscopeError
from grokscope.portable import PORTABLE_ENV, check_portable_machine, in_portable_env

HERE = Path(__file__).resolve().parent


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    base = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "grokscope.cli", *args], capture_output=True, text=True,
        env={**base, **(env or {})}, cwd=cwd, timeout=300,
    )  # fmt: skip


def test_the_golden_fingerprint_holds():
    """Three short portable runs give the recorded bits. If a torch upgrade changes them, this
    fails: check the change is meant, then re-record with the command in the message."""
    base = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    done = subprocess.run(
        [sys.executable, str(HERE / "portable_fingerprint.py")], capture_output=True, text=True,
        env={**base, **PORTABLE_ENV}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = json.loads((HERE / "portable_fingerprints.json").read_text())
    assert got == want, (
        "portable fingerprints differ from tests/portable_fingerprints.json; if a torch or MKL "
        "upgrade changed the bits on purpose, re-record with: env "
        + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        + " python tests/portable_fingerprint.py --record"
    )


def test_portable_resume_is_bit_for_bit_and_modes_do_not_mix(tmp_path):
    common = ["--preset", "quick", "--out", str(tmp_path), "-q", "--portable"]
    one = _cli("train", *common, "--name", "whole", "--set", "train.epochs=100")
    assert one.returncode == 0, one.stderr
    half = _cli("train", *common, "--name", "half", "--set", "train.epochs=50")
    assert half.returncode == 0, half.stderr
    config = (tmp_path / "half" / "config.json").read_text()
    # resuming a portable run natively is refused in one line, and writes nothing
    mixed = _cli("train", "--resume", str(tmp_path / "half"), "--set", "train.epochs=100", "-q")
    assert mixed.returncode == 2 and "this run is portable" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    assert (tmp_path / "half" / "config.json").read_text() == config
    more = _cli("train", "--resume", str(tmp_path / "half"), "--set", "train.epochs=100", "-q",
                "--portable")  # fmt: skip
    assert more.returncode == 0, more.stderr
    a = pd.read_parquet(tmp_path / "whole" / "metrics.parquet").drop(columns="wall_s")
    b = pd.read_parquet(tmp_path / "half" / "metrics.parquet").drop(columns="wall_s")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    status = json.loads((tmp_path / "half" / "status.json").read_text())
    assert status["portable"]["MKL_CBWR"] == PORTABLE_ENV["MKL_CBWR"]
    # and a native run is not resumed portably
    native = _cli("train", "--preset", "quick", "--out", str(tmp_path), "-q", "--name", "nat",
                  "--set", "train.epochs=20")  # fmt: skip
    assert native.returncode == 0, native.stderr
    back = _cli("train", "--resume", str(tmp_path / "nat"), "--set", "train.epochs=30", "-q",
                "--portable")  # fmt: skip
    assert back.returncode == 2 and "trained natively" in back.stderr


def test_portable_mode_refuses_where_it_does_not_hold(tmp_path):
    with pytest.raises(GrokscopeError, match="x86-64"):
        check_portable_machine("flags : fpu sse2", machine="aarch64")
    with pytest.raises(GrokscopeError, match="AVX2"):
        check_portable_machine("flags\t\t: fpu sse sse2 avx", machine="x86_64")
    check_portable_machine("flags\t\t: fpu sse2 avx avx2 fma", machine="x86_64")
    assert not in_portable_env({}) and in_portable_env(dict(PORTABLE_ENV))
    gpu = _cli("train", "--preset", "quick", "--portable", "--out", str(tmp_path), "-q",
               "--set", "train.device=cuda")  # fmt: skip
    assert gpu.returncode == 2 and "one thread" in gpu.stderr and "GPU" in gpu.stderr
    assert not any(tmp_path.iterdir())
