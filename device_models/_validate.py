"""Validation helpers shared by every device family: errors name the field and the allowed range."""
from __future__ import annotations

import math


def check_range(owner: str, name: str, value, lo=-math.inf, hi=math.inf, *, lo_open=False, hi_open=False):
    """Raise ValueError naming ``owner.name`` unless ``lo <= value <= hi`` (open ends if asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) and not (math.isinf(v) and (math.isinf(lo) or math.isinf(hi))):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")
    bad_lo = v <= lo if lo_open else v < lo
    bad_hi = v >= hi if hi_open else v > hi
    if bad_lo or bad_hi or math.isnan(v):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{owner}.{name} = {value!r} is out of range {lb}{lo}, {hi}{rb}")
    return v
