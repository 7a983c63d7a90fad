"""Range checks for model parameters, with errors that name the field and its valid range."""

from __future__ import annotations

import math


def check_range(name: str, value: object, lo: float, hi: float, lo_open: bool = False) -> None:
    """Raise ValueError unless value is a finite real number in [lo, hi] (or (lo, hi] if lo_open)."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > lo if lo_open else value >= lo) and value <= hi)
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{lo:g}, {hi:g}], got {value!r}")
