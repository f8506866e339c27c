"""Threads per process: 1 against 2 for train, analyze and map, idle, beside a busy process and
with two grokscope processes side by side. Prints one table of wall times (seconds).

    python benchmarks/bench_threads.py                 # quick preset, 400 epochs
    python benchmarks/bench_threads.py --epochs 200    # shorter

Scenarios, each at --threads 1 and --threads 2 (every grokscope process in a scenario gets the
same setting):
- alone: one command on an otherwise quiet machine;
- busy: one command beside a pure-Python busy loop (``python -c "while True: pass"``);
- two runs: two trainings started together (times of each);
- run + analysis: a training and an analysis of another run started together.
OpenMP threads spin-wait between parallel regions, so more threads than free cores cost far
more than they save; these figures choose the default (one thread) and back the README.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GS = [sys.executable, "-m", "grokscope.cli"]


def train_cmd(out: Path, name: str, epochs: int, threads: int) -> list[str]:
    return GS + [
        "train", "--preset", "quick", "--out", str(out), "--name", name, "--quiet",
        "--threads", str(threads), "--set", f"train.epochs={epochs}",
        "--set", "train.early_stop_after=-1",
    ]  # fmt: skip


def analyze_cmd(run: Path, threads: int) -> list[str]:
    return GS + ["analyze", str(run), "--no-figures", "--threads", str(threads)]


def map_cmd(runs: list[Path], out: Path, threads: int) -> list[str]:
    return GS + ["map", *map(str, runs), "--out", str(out), "--max-states", "4",
                 "--restarts", "2", "--threads", str(threads)]  # fmt: skip


def timed(cmds: list[list[str]]) -> list[float]:
    """Start every command at once; the wall time of each."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    times = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - t0
                pending.discard(i)
                if procs[i].returncode != 0:
                    raise SystemExit(f"{' '.join(cmds[i])} failed: {procs[i].stderr.read()}")
        time.sleep(0.05)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=400)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # runs to analyse and map (trained once, at one thread)
        bases = [root / "base" / f"b{i}" for i in range(3)]
        timed([train_cmd(root / "base", b.name, args.epochs, 1) for b in bases])
        for threads in (1, 2):
            out = root / f"t{threads}"
            n = iter(range(1000))

            def fresh(threads=threads, out=out, n=n) -> list[str]:
                return train_cmd(out, f"r{next(n)}", args.epochs, threads)

            rows.append(("train alone", threads, timed([fresh()])))
            rows.append(("analyze alone", threads, timed([analyze_cmd(bases[0], threads)])))
            rows.append(
                (
                    "map (3 runs) alone",
                    threads,
                    timed([map_cmd(bases, out / f"map{next(n)}", threads)]),
                )
            )
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                rows.append(("train beside a busy loop", threads, timed([fresh()])))
                rows.append(
                    ("analyze beside a busy loop", threads, timed([analyze_cmd(bases[1], threads)]))
                )
            finally:
                busy.kill()
            rows.append(("two trains together", threads, timed([fresh(), fresh()])))
            rows.append(
                (
                    "train + analyze together",
                    threads,
                    timed([fresh(), analyze_cmd(bases[2], threads)]),
                )
            )
    print(f"quick preset, {args.epochs} epochs; wall seconds per process")
    print(f"{'scenario':30s} {'1 thread':>16s} {'2 threads':>16s}")
    names = list(dict.fromkeys(r[0] for r in rows))
    for name in names:
        cells = []
        for threads in (1, 2):
            (times,) = [t for s, th, t in rows if s == name and th == threads]
            cells.append(" + ".join(f"{t:.1f}" for t in times))
        print(f"{name:30s} {cells[0]:>16s} {cells[1]:>16s}")


if __name__ == "__main__":
    main()
