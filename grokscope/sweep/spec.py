"""Sweep files: a base preset, fixed overrides, a grid of any config fields, and seeds.

```toml
name = "fraction"                 # optional; default: the file name without .toml
preset = "quick"                  # the base config (grokscope config --fields lists every field)
seeds = [0, 1, 2]                 # train.seed of each run; the seeds of a cell train as one batch

[set]                             # fixed overrides, dotted or nested
"task.p" = 47
train.epochs = 3000               # TOML dotted keys work too

[grid]                            # the cartesian product of these lists is the set of cells
"task.train_fraction" = [0.2, 0.3, 0.5]
"optim.weight_decay" = [0.3, 1.0]
```

Everything is checked before anything starts: unknown keys and fields, values of the wrong type,
empty lists, a field both fixed and swept, and every cell's config (through the ordinary config
validation). Any problem is a :class:`ConfigError` with one line naming it.
"""

from __future__ import annotations

import itertools
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokscope import config as config_mod
from grokscope.config import Config, ConfigError

TOP_KEYS = ("name", "description", "preset", "seeds", "set", "grid")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Cell:
    """One grid point: its directory-safe name and the swept fields' values."""

    index: int
    name: str
    values: dict[str, Any]


@dataclass
class SweepSpec:
    """A validated sweep: ``cells()`` x ``seeds`` runs, each config = preset + set + cell."""

    name: str
    preset: str
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    description: str = ""

    def cells(self) -> list[Cell]:
        """The cartesian product of the grid, in file order (last field varies fastest)."""
        fields = list(self.grid)
        out = []
        for i, combo in enumerate(itertools.product(*(self.grid[f] for f in fields))):
            values = dict(zip(fields, combo, strict=True))
            out.append(Cell(i, cell_name(i, values), values))
        return out

    def config(self, cell: Cell, seed: int) -> Config:
        """The resolved config of one run."""
        cfg = config_mod.preset(self.preset)
        fields = {**self.set, **cell.values, "train.seed": seed}
        for key, value in fields.items():
            config_mod.set_field(cfg, key, value)
        config_mod.check_applicable(cfg, list(fields))
        return config_mod.resolve(cfg)

    def runs(self) -> list[tuple[Cell, int, str]]:
        """(cell, seed, run id) of every run, cell by cell."""
        return [(c, s, run_id(c, s)) for c in self.cells() for s in self.seeds]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what sweep.json stores and compares on a re-run)."""
        return {
            "name": self.name,
            "description": self.description,
            "preset": self.preset,
            "seeds": list(self.seeds),
            "set": dict(self.set),
            "grid": {k: list(v) for k, v in self.grid.items()},
        }


def _short(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def cell_name(index: int, values: dict[str, Any]) -> str:
    """``c003-train_fraction=0.3-weight_decay=1``: index first (unique), then the values."""
    parts = [f"c{index:03d}"] + [f"{k.split('.')[-1]}={_short(v)}" for k, v in values.items()]
    return "-".join(parts)


def run_id(cell: Cell, seed: int) -> str:
    """Directory name of one run under ``runs/``."""
    return f"{cell.name}-s{seed}"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _field_type(key: str) -> Any:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in config_mod.SECTIONS:
        raise ConfigError(
            f"unknown config field {key!r}; use section.field with section one of "
            f"{', '.join(config_mod.SECTIONS)}"
        )
    section = getattr(Config(), parts[0])
    types_ = typing.get_type_hints(type(section))
    if parts[1] not in types_:
        raise ConfigError(f"unknown config field {key!r}")
    return types_[parts[1]]


def check_value(key: str, value: Any) -> Any:
    """``value`` for field ``key`` if its TOML type fits the field (ints are fine for floats)."""
    typ = _field_type(key)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(typ, False)
    if not ok:
        raise ConfigError(f"{key} must be a {typ.__name__}, got {value!r} ({type(value).__name__})")
    return float(value) if typ is float else value


def parse_sweep(data: dict[str, Any], default_name: str = "sweep") -> SweepSpec:
    """Validate a parsed sweep file; raises ConfigError naming the first problem."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown sweep key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}"
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"sweep name {name!r} must be letters, digits, '_', '.' or '-'")
    preset_name = data.get("preset", "default")
    if not isinstance(preset_name, str):
        raise ConfigError(f"preset must be a string, got {preset_name!r}")
    config_mod.preset(preset_name)  # unknown preset -> ConfigError

    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError("seeds must be a non-empty list of distinct integers (the model seeds)")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds!r}")

    fixed_raw = data.get("set", {})
    grid_raw = data.get("grid", {})
    for label, table in (("set", fixed_raw), ("grid", grid_raw)):
        if not isinstance(table, dict):
            raise ConfigError(f"the {label} table must map config fields to values")
    fixed = {k: check_value(k, v) for k, v in _flatten(fixed_raw).items()}
    grid_flat = _flatten(grid_raw)
    if not grid_flat:
        raise ConfigError(
            "the grid table is empty; sweep at least one field, e.g. "
            '"optim.weight_decay" = (a list of values; one value is fine)'
        )
    grid: dict[str, list[Any]] = {}
    for key, values in grid_flat.items():
        if not isinstance(values, list):
            raise ConfigError(f"grid field {key} must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"grid field {key} has an empty list of values")
        checked = [check_value(key, v) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(f"grid field {key} repeats a value: {values!r}")
        grid[key] = checked
    for key in ("train.seed",):
        if key in fixed or key in grid:
            raise ConfigError(
                f"{key} comes from the seeds list; remove it from the set / grid tables"
            )
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f"{', '.join(both)} is both fixed (set table) and swept (grid table)")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description must be a string")

    spec = SweepSpec(name, preset_name, fixed, grid, list(seeds), description)
    for cell in spec.cells():
        try:
            spec.config(cell, spec.seeds[0])
        except ConfigError as e:
            raise ConfigError(f"cell {cell.name}: {e}") from None
    return spec


def load_sweep(path: Path) -> SweepSpec:
    """Read and validate a sweep TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse_sweep(data, default_name=path.stem)
