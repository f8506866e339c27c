"""The run directory: every file written atomically (temporary name, then rename).

```
<run>/config.json        resolved config        <run>/status.json     state, epochs, events
<run>/metrics.parquet    one row per evaluation  <run>/checkpoints/    epoch_<8 digits>.safetensors
<run>/checkpoints/resume_<8 digits>.safetensors  optimizer / filter state of the newest checkpoint
```
A killed process leaves each file either old or new. The newest epoch that has both a weights file
and a resume file is the point ``--resume`` continues from.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from grokscope import config as config_mod
from grokscope.errors import GrokscopeError, RunDirError

if TYPE_CHECKING:  # torch and safetensors load with the first checkpoint read or written
    import torch

CKPT_RE = re.compile(r"^epoch_(\d{8})\.safetensors$")
RESUME_RE = re.compile(r"^resume_(\d{8})\.safetensors$")
STATES = ("running", "interrupted", "done", "diverged", "failed")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; run files are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write(Path(path), (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or corrupt one is a RunDirError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is corrupt ({e.__class__.__name__})") from None


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as parquet."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    atomic_write(Path(path), sink.getvalue().to_pybytes())


def read_table(path: Path) -> pd.DataFrame:
    """Read a parquet table; a missing or corrupt one is a RunDirError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path} is missing")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise RunDirError(f"{path} is corrupt ({e.__class__.__name__})") from None


# -- config, status, metrics -------------------------------------------------------------------


def write_config(run: Path, cfg: config_mod.Config) -> None:
    write_json(run / "config.json", config_mod.to_dict(cfg))


def read_config(run: Path) -> config_mod.Config:
    """The run's resolved config; a missing directory or bad file is a RunDirError."""
    run = Path(run)
    if not run.is_dir():
        raise RunDirError(f"run directory {run} does not exist")
    if not (run / "config.json").is_file():
        inside = sorted(p.parent for p in run.rglob("config.json"))
        if inside:
            names = ", ".join(str(p.relative_to(run)) for p in inside[:4])
            more = f" and {len(inside) - 4} more" if len(inside) > 4 else ""
            raise RunDirError(
                f"{run} is not a run directory (no config.json); it holds these runs: {names}{more}"
            )
        raise RunDirError(f"{run} is not a run directory: {run / 'config.json'} is missing")
    data = read_json(run / "config.json")
    try:
        return config_mod.resolve(config_mod.from_dict(data))
    except (GrokscopeError, TypeError, AttributeError) as e:
        raise RunDirError(f"{run / 'config.json'} is not a valid config: {e}") from None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_status(run: Path, names: dict[str, str] | None = None, **fields: Any) -> dict:
    """Merge ``fields`` (the core's keys: ``t_mem_epoch``, ``epochs_done``, ...) into
    status.json (created if absent), stamp ``updated`` and return the status with the core's
    keys. ``names`` renames keys in the file to what they hold for the run's kind (a language
    model's ``t_mem_epoch`` is its ``t_id_step``); the file records the renaming under
    ``names`` so that :func:`read_status` maps it back, and a later write keeps it."""
    path = Path(run) / "status.json"
    raw = read_json(path) if path.is_file() else {}
    names = names if names is not None else raw.get("names") or {}
    status = _core_keys(raw)
    status.update(fields)
    status["updated"] = now()
    on_disk = {names.get(k, k): v for k, v in status.items()}
    write_json(path, {**on_disk, "names": names} if names else on_disk)
    return status


def read_status(run: Path) -> dict:
    """status.json with the core's keys (a run directory written before keys were named for
    their kind has them already)."""
    return _core_keys(read_json(Path(run) / "status.json"))


def _core_keys(raw: dict) -> dict:
    back = {v: k for k, v in (raw.get("names") or {}).items()}
    return {back.get(k, k): v for k, v in raw.items() if k != "names"}


def write_metrics(run: Path, rows: list[dict]) -> None:
    write_table(Path(run) / "metrics.parquet", pd.DataFrame(rows))


def read_metrics(run: Path) -> pd.DataFrame:
    return read_table(Path(run) / "metrics.parquet")


# -- checkpoints ---------------------------------------------------------------------------------


def checkpoint_path(run: Path, epoch: int) -> Path:
    return Path(run) / "checkpoints" / f"epoch_{epoch:08d}.safetensors"


def resume_path(run: Path, epoch: int) -> Path:
    return Path(run) / "checkpoints" / f"resume_{epoch:08d}.safetensors"


def _contiguous_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(
    run: Path,
    epoch: int,
    weights: dict[str, torch.Tensor],
    resume: dict[str, torch.Tensor],
    meta: dict,
) -> None:
    """Write the weights, then the resume state, then drop older resume files.

    The resume file carries ``meta`` (epoch, step, ...) as safetensors metadata, so it is written
    in one atomic rename together with the tensors.
    """
    from safetensors.torch import save

    atomic_write(checkpoint_path(run, epoch), save(_contiguous_cpu(weights)))
    blob = save(_contiguous_cpu(resume), metadata={"meta": json.dumps(meta)})
    atomic_write(resume_path(run, epoch), blob)
    for old in list_epochs(run, RESUME_RE):
        if old != epoch:
            resume_path(run, old).unlink(missing_ok=True)


def list_epochs(run: Path, pattern: re.Pattern = CKPT_RE) -> list[int]:
    """Epochs of the checkpoint files (weights by default) present, ascending."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name)))


def load_weights(run: Path, epoch: int) -> dict[str, torch.Tensor]:
    """The model weights saved at ``epoch``; missing or corrupt -> RunDirError."""
    path = checkpoint_path(run, epoch)
    if not path.is_file():
        raise RunDirError(f"checkpoint {path} is missing")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"checkpoint {path} is corrupt ({e})") from None


def load_into(model: torch.nn.Module, run: Path, epoch: int, unit: str = "epoch") -> dict:
    """Load the weights of checkpoint ``epoch`` of ``run`` into ``model``; returns them. A
    checkpoint that does not fit the model is a one-line RunDirError (``unit`` names the time:
    epoch or step)."""
    weights = load_weights(run, epoch)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RunDirError(
            f"checkpoint of {unit} {epoch} does not fit the config: {first}"
        ) from None
    return weights


def load_resume(run: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(epoch, weights, resume tensors, meta) of the newest complete, readable checkpoint."""
    from safetensors import SafetensorError, safe_open

    for epoch in reversed(list_epochs(run, RESUME_RE)):
        if epoch not in list_epochs(run):
            continue
        try:
            weights = load_weights(run, epoch)
            path = str(resume_path(run, epoch))
            with safe_open(path, framework="pt") as f:
                meta = json.loads(f.metadata()["meta"])
                resume = {k: f.get_tensor(k) for k in f.keys()}
            return epoch, weights, resume, meta
        except (RunDirError, SafetensorError, OSError, ValueError, KeyError):
            continue
    raise RunDirError(f"{run} has no complete checkpoint to resume from")
