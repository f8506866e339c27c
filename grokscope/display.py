"""How values are written in tables and lines (the CLI and every kind): a missing value, a
number, a share; NaN as None for JSON."""

from __future__ import annotations

import math


def isnull(v) -> bool:
    """None or NaN (what a table cell or a summary field holds when a value is missing)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v) -> str:
    """A table value: integers without a decimal point, other floats to 4 significant digits."""
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() or abs(v) < 1 else str(int(v))
    return str(v)


def f3(v) -> str:
    """A share or a score to 3 decimals, '-' when missing."""
    return "-" if isnull(v) else f"{v:.3f}"


def share(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def none_if_nan(x):
    """None for a NaN float (JSON has no NaN), anything else as it is."""
    return None if isinstance(x, float) and math.isnan(x) else x


def none_if_not_finite(x):
    """None for a NaN or infinite float, anything else as it is."""
    return None if isinstance(x, float) and not math.isfinite(x) else x
