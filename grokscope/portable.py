"""Portable mode: the same seed gives the same bits on any x86-64 CPU with AVX2, Intel or AMD.

The numbers of a run depend on which kernels compute them: torch's ATen picks its vectorised
kernels by CPU capability (``ATEN_CPU_CAPABILITY``), oneDNN by the instruction set it finds
(``ONEDNN_MAX_CPU_ISA``), MKL its BLAS code path by CPU vendor and generation (``MKL_CBWR``, its
Conditional Numerical Reproducibility setting), and the thread count the order of reductions.
Portable mode fixes all of them (:data:`PORTABLE_ENV`: AVX2 kernels in ATen and oneDNN, MKL's
vendor-neutral COMPATIBLE branch, one thread) with deterministic algorithms on; they must be in
place before torch and MKL start, so the command line re-executes itself with them
(:func:`reexec_portable`). MKL's AVX2 branch would be faster, but its documentation says that on
non-Intel CPUs it falls back to the automatic branch, so results may differ there: only the
COMPATIBLE branch is the same on Intel and AMD.

Not covered: other architectures (ARM), GPUs, another torch or MKL version; a CPU without AVX2
is refused (:func:`check_portable_machine`). This module imports nothing heavy: the command line
reads it before torch is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from grokscope.errors import GrokscopeError

PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GROKSCOPE_PORTABLE": "1",
}


def in_portable_env(env: dict | None = None) -> bool:
    """Whether this process runs with every setting of :data:`PORTABLE_ENV`."""
    env = os.environ if env is None else env
    return all(env.get(k) == v for k, v in PORTABLE_ENV.items())


def check_portable_machine(cpuinfo: str | None = None, machine: str | None = None) -> None:
    """GrokscopeError (one line) unless this is an x86-64 CPU with AVX2, where portable mode
    holds."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        raise GrokscopeError(
            f"portable mode holds on x86-64 CPUs with AVX2; this machine is {machine}"
        )
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    if cpuinfo and "avx2" not in flags:
        raise GrokscopeError("portable mode needs a CPU with AVX2; this one has none")


def check_portable_process(portable: bool) -> None:
    """GrokscopeError (one line) when a run's mode and this process's disagree: a portable run
    outside the portable environment, or a native run inside it (resuming in the other mode
    would mix two sets of kernels in one run)."""
    here = in_portable_env()
    if portable and not here:
        raise GrokscopeError(
            "this run is portable (train.portable=true): run the command with --portable, which "
            "sets " + ", ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        )
    if here and not portable:
        raise GrokscopeError(
            "this run was trained natively: run the command without --portable (a run keeps "
            "the mode it was started in)"
        )


def reexec_portable(argv: list[str]) -> None:
    """Re-execute this command with :data:`PORTABLE_ENV` set, once (the environment marks the
    second pass); the machine is checked first. Does not return."""
    check_portable_machine()
    env = {**os.environ, **PORTABLE_ENV}
    print(
        "portable mode: fixed kernels, MKL's vendor-neutral branch, one thread "
        "(training about 2.4x slower than native, benchmarks/bench_portable.py)",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "grokscope.cli", *argv], env)


def portable_record() -> dict:
    """What a portable run records in its status: the settings and the machine it ran on."""
    return {**{k: os.environ.get(k) for k in PORTABLE_ENV}, "machine": platform.machine()}
