"""The cost of portable mode: training epochs per second, native against portable, side by side
in one run (``quick`` for 300 epochs and ``nanda2023`` for 30, one thread each).

    OMP_NUM_THREADS=1 python benchmarks/bench_portable.py

Native runs use this CPU's own kernels (AVX-512 where it has them, MKL's branch for its vendor),
portable runs the fixed ones of :data:`grokscope.portable.PORTABLE_ENV`. Each pair runs one
after the other on the same machine; the training wall time comes from the runs' status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from grokscope.portable import PORTABLE_ENV

CASES = (("quick", 300), ("nanda2023", 30))


def wall(preset: str, epochs: int, portable: bool, folder: Path) -> float:
    name = f"{preset}-{'portable' if portable else 'native'}"
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV}
    cmd = [sys.executable, "-m", "grokscope.cli", "train", "--preset", preset, "--name", name,
           "--out", str(folder), "-q", "--set", f"train.epochs={epochs}",
           "--set", "train.early_stop_after=-1"]  # fmt: skip
    if portable:
        cmd.append("--portable")
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.loads((folder / name / "status.json").read_text())["wall_s"]


def main() -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset, epochs in CASES:
            native = wall(preset, epochs, False, Path(tmp))
            portable = wall(preset, epochs, True, Path(tmp))
            print(
                f"{preset:10s} {epochs:4d} epochs  native {native:6.2f} s  portable "
                f"{portable:6.2f} s  portable / native {portable / native:.2f}x"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
