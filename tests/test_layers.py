"""The package's layers: every import, module-level or inside a function, points down.

cli -> sweep -> orchestrate -> kinds -> (report, dynamics, measures, train, store)
-> (models, tasks) -> (config, events) -> errors. Within the middle row only report may read
the others (it draws what measures and dynamics compute, and reads run directories through
store); nothing there imports train, and train, store, measures and dynamics import none of
their row. The kinds sit between that row and the orchestration: the core, the analysis loop,
the report's frame and the sweep summary are handed a kind, they never import one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "grokscope"
RANK = {
    "errors": -1, "config": 0, "events": 0, "display": 0, "portable": 0,
    "tasks": 1, "models": 1,
    "train": 2, "store": 2, "measures": 2, "dynamics": 2, "report": 2,
    "kinds": 2.5,
    "orchestrate": 3,
    "sweep": 4,
    "cli": 5, "__init__": 5, "__main__": 6,
}  # fmt: skip
SAME_ROW_ALLOWED = {("report", "measures"), ("report", "dynamics"), ("report", "store")}


def _unit(module: str) -> str:
    """``grokscope.train.core`` -> ``train``; ``grokscope`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = ["grokscope", *path.relative_to(PKG).parent.parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:  # from ..x import y
            base = package[: len(package) - node.level + 1]
            out.append(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "grokscope":
                out += [f"grokscope.{a.name}" for a in node.names]
            elif node.module.startswith("grokscope."):
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("grokscope.")]
    return out


def test_every_module_belongs_to_a_layer():
    units = {
        _unit("grokscope." + ".".join(p.relative_to(PKG).with_suffix("").parts))
        for p in PKG.rglob("*.py")
    }
    assert units <= set(RANK), f"modules outside the layer map: {sorted(units - set(RANK))}"


def test_no_import_points_up_or_sideways():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        src = _unit("grokscope." + ".".join(path.relative_to(PKG).with_suffix("").parts))
        for target in _imports(path):
            dst = _unit(target)
            if dst == src:
                continue
            ok = RANK[dst] < RANK[src] or (src, dst) in SAME_ROW_ALLOWED
            if not ok:
                bad.append(f"{path.relative_to(PKG.parent)} imports {target}")
    assert not bad, "\n".join(bad)
