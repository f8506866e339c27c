"""Record what a short run of each kind of study writes, to guard refactors of the kind seam.

``python tests/kind_fixtures/record.py`` trains and analyses one short run per kind (the
``quick``, ``structural_cpu`` and ``levels_cpu`` presets, shortened by :data:`RUNS`), then writes

* ``expected/<kind>.json``: metrics, status, analysis and summary with the wall-clock fields
  left out, and the machine they were computed on (:func:`machine`);
* ``old_runs/<kind>/``: the run directory itself, trimmed to its config, status, metrics and
  two checkpoints, as a run directory written by this version of grokscope, and
  ``expected/<kind>_old_run.json``, the analysis row of its last checkpoint (with
  ``--old-runs`` only).

``tests/test_kind_fixtures.py`` recomputes the same runs and compares them with ``expected/``
bit for bit on the machine that recorded them, and analyses ``old_runs/``. Re-record
``expected/`` only when a change is meant to change the numbers, and say so in the commit
(``python tests/kind_fixtures/record.py algorithmic``); ``old_runs/`` stay as the version before
the kind protocol wrote them (``--old-runs`` rewrites them too).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# short versions of the three presets: a few seconds of training each on one thread
RUNS = {
    "algorithmic": (
        "quick",
        ["train.epochs=300", "train.early_stop_after=-1", "train.checkpoint_every=100"],
    ),
    "structural": (
        "structural_cpu",
        [
            "task.n_train=2000",
            "task.n_test=100",
            "task.n_gen=100",
            "model.n_layers=2",
            "model.d_model=64",
            "model.d_head=16",
            "model.d_mlp=128",
            "train.epochs=60",
            "train.eval_every=20",
            "train.checkpoint_every=30",
        ],
    ),
    "tree_language": (
        "levels_cpu",
        [
            "task.n_train=2000",
            "task.n_test=200",
            "task.n_gen=200",
            "model.d_model=32",
            "model.d_head=8",
            "model.d_mlp=64",
            "model.n_layers=2",
            "train.epochs=100",
            "train.eval_every=20",
            "train.checkpoint_every=50",
        ],
    ),
    "documents": (
        "documents_cpu",
        [
            "task.n_train=600",
            "task.n_test=80",
            "task.n_gen=80",
            "model.d_model=32",
            "model.d_head=8",
            "model.d_mlp=64",
            "model.n_layers=1",
            "train.epochs=60",
            "train.eval_every=20",
            "train.checkpoint_every=30",
        ],
    ),
}
# fields that measure wall time or name the machine's paths: left out of the comparison
WALL = {"wall_s", "analysis_wall_s", "updated", "run", "device", "traceback"}


def machine() -> dict:
    """What decides the bits: the CPU, torch, and the kernel / BLAS paths chosen."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "torch": torch.__version__,
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "python": platform.python_version(),
    }


def _clean(value):
    """JSON-comparable: NaN as the string 'nan', wall-clock keys dropped, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if k not in WALL}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _table(path: Path) -> list[dict]:
    import pandas as pd

    df = pd.read_parquet(path)
    return _clean(df.drop(columns=[c for c in df.columns if c in WALL]).to_dict("records"))


def _core_status(run: Path) -> dict:
    """status.json with the core's keys (a language model's file names them t_id_step, ...,
    since the kind protocol; the recording before it used the core's names throughout)."""
    from grokscope.store import rundir

    return rundir.read_status(run)


def outputs(run: Path) -> dict:
    """The comparable content of a trained and analysed run directory."""
    return {
        "metrics": _table(run / "metrics.parquet"),
        "analysis": _table(run / "analysis.parquet"),
        "status": _clean(_core_status(run)),
        "summary": _clean(json.loads((run / "summary.json").read_text())),
    }


def train_and_analyse(kind: str, folder: Path) -> Path:
    """Train and analyse the short run of ``kind`` under ``folder``; returns its directory."""
    import torch

    from grokscope.config import apply_overrides, preset
    from grokscope.orchestrate.analyze import analyze_run
    from grokscope.orchestrate.train import train_run

    torch.set_num_threads(1)
    name, overrides = RUNS[kind]
    cfg = apply_overrides(preset(name), [*overrides, "train.device=cpu"])
    run = folder / kind
    train_run(cfg, run)
    analyze_run(run, figures=False)
    return run


def trim(run: Path, out: Path) -> None:
    """Keep config, status, metrics and two checkpoints (the first after 0 and the last)."""
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "status.json", "metrics.parquet"):
        shutil.copy(run / name, out / name)
    ckpts = sorted((run / "checkpoints").glob("epoch_*.safetensors"))
    for path in (ckpts[1], ckpts[-1]):
        shutil.copy(path, out / "checkpoints" / path.name)


def main() -> None:
    import tempfile

    old = "--old-runs" in sys.argv
    kinds = [a for a in sys.argv[1:] if a != "--old-runs"] or list(RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            run = train_and_analyse(kind, Path(tmp))
            (HERE / "expected").mkdir(exist_ok=True)
            record = {"machine": machine(), "preset": RUNS[kind][0], "overrides": RUNS[kind][1]}
            record.update(outputs(run))
            path = HERE / "expected" / f"{kind}.json"
            path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            if old:
                trim(run, HERE / "old_runs" / kind)
                last = max(int(r["epoch"]) for r in record["analysis"])
                row = [r for r in record["analysis"] if r["epoch"] == last][0]
                (HERE / "expected" / f"{kind}_old_run.json").write_text(
                    json.dumps({"machine": machine(), "analysis_last": row}, indent=1,
                               sort_keys=True) + "\n"
                )  # fmt: skip
            print(f"recorded {path}")


if __name__ == "__main__":
    main()
