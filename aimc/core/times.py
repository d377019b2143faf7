"""Times after programming: the one parser of every entry point (API, CLI, configs, chip images).

``parse_time`` takes seconds (a number, or a numeric string such as ``"10"``) or a number with a unit
(``"1h"``, ``"30min"``, ``"2.5d"``, ``"10y"``) and returns seconds as a float in [0, ``MAX_TIME_S``].
The upper bound is 1000 years: drift models are fitted on seconds to years (Joshi et al., Nat. Commun. 11,
2473, 2020: up to ~1e6 s), and beyond ~1e300 s float arithmetic in the drift formulas yields NaN
conductances; 1000 years is far past any meaningful extrapolation yet far from overflow.
"""
from __future__ import annotations

import math
import re

__all__ = ["MAX_TIME_S", "UNITS", "format_time", "parse_time"]

UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0,
         "y": 365.25 * 86400.0}
MAX_TIME_S = 1000 * UNITS["y"]
_TIME_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_time(t, what: str = "t") -> float:
    """Seconds after programming from a number or a string with an optional unit; a clear error naming
    ``what`` and the value otherwise (not a number, unknown unit, NaN, negative, beyond 1000 years)."""
    if isinstance(t, bool) or (hasattr(t, "ndim") and getattr(t, "ndim") != 0):
        raise TypeError(f"{what} must be a scalar time (seconds, or a string such as '1h'), got {t!r}")
    if isinstance(t, str):
        if len(t) > 64:
            raise ValueError(f"bad time {t[:40]!r}...: too long")
        m = _TIME_RE.match(t)
        if not m:
            raise ValueError(f"bad time {t!r} for {what}: expected a number with an optional unit, "
                             f"e.g. 10, 1s, 1h, 1d, 1y ({', '.join(UNITS)})")
        unit = m.group(2).lower() or "s"
        if unit not in UNITS:
            raise ValueError(f"bad time {t!r} for {what}: unknown unit {m.group(2)!r}; use one of {', '.join(UNITS)}")
        v = float(m.group(1)) * UNITS[unit]
    else:
        try:
            v = float(t)
        except OverflowError:
            raise ValueError(f"bad time for {what}: {str(t)[:40]} s is beyond {MAX_TIME_S:g} s (1000 years)") from None
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be a scalar time (seconds, or a string such as '1h'), got {t!r}") from None
    if math.isnan(v):
        raise ValueError(f"{what} is NaN: pass a time in seconds >= 0")
    if v < 0:
        raise ValueError(f"{what} = {t!r} must be a time >= 0 s after programming")
    if v > MAX_TIME_S:
        raise ValueError(f"{what} = {t!r} is beyond the largest supported time, {MAX_TIME_S:g} s (1000 years)")
    return v


def format_time(seconds: float) -> str:
    """A short label: 1s, 1h, 1d, 1y, 10y, 2.5d, 90s ..."""
    for unit in ("y", "d", "h", "min", "s"):
        v = seconds / UNITS[unit]
        if v >= 1 and abs(v - round(v, 2)) < 1e-9 * max(1, v):
            return f"{round(v, 2):g}{unit}"
    return f"{seconds:g}s"
