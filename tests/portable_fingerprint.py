"""The golden fingerprint of portable mode: a hash and a few values of the metrics of four short
portable runs (the ``quick`` preset for 200 epochs, a short ``structural_cpu``, ``levels_cpu``
and ``documents_cpu`` run), which must be the same bits on any x86-64 CPU with AVX2 and this
torch.

``python tests/portable_fingerprint.py`` prints them (run it in the portable environment:
``tests/test_portable.py`` does); ``--record`` writes ``tests/portable_fingerprints.json``.
Re-record only when a change is meant to change the numbers (a torch upgrade, a new default),
and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORE = HERE / "portable_fingerprints.json"
sys.path.insert(0, str(HERE / "kind_fixtures"))

RUNS = {
    "quick": ("quick", ["train.epochs=200", "train.early_stop_after=-1"]),
}


def runs() -> dict:
    import record  # the short structural, tree-language and document runs of the kind fixtures

    out = dict(RUNS)
    out["structural"] = record.RUNS["structural"]
    out["tree_language"] = record.RUNS["tree_language"]
    out["documents"] = record.RUNS["documents"]
    return out


def fingerprints() -> dict:
    """{run: {sha256, rows, last train loss, last test loss}} of the portable runs' metrics."""
    import pandas as pd

    from grokscope.config import apply_overrides, preset
    from grokscope.orchestrate.train import train_run
    from grokscope.portable import in_portable_env

    if not in_portable_env():
        raise SystemExit("run this in the portable environment (grokscope.portable.PORTABLE_ENV)")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (base, overrides) in runs().items():
            cfg = apply_overrides(preset(base), [*overrides, "train.portable=true"])
            train_run(cfg, Path(tmp) / name)
            m = pd.read_parquet(Path(tmp) / name / "metrics.parquet").drop(columns="wall_s")
            blob = m.to_csv(index=False, float_format="%.17g").encode()
            out[name] = {
                "sha256": hashlib.sha256(blob).hexdigest(),
                "rows": len(m),
                "last_train_loss": float(m["train_loss"].iloc[-1]),
                "last_test_loss": float(m["test_loss"].iloc[-1]),
            }
    return out


if __name__ == "__main__":
    result = fingerprints()
    if "--record" in sys.argv:
        STORE.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, sort_keys=True))
