"""Range checks for numeric config keys: one line naming the key, the allowed range and the value.

NaN and infinities are never in range (``nan < 0`` is False, so a plain comparison would let
them through)."""
from __future__ import annotations

import math
from typing import Optional

from .errors import ConfigError


def check_range(
    key: str,
    value: Optional[float],
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (``<`` where open); None values pass (unset keys)."""
    if value is None:
        return
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    fits = finite and (low is None or (value > low if low_open else value >= low)) and (high is None or (value < high if high_open else value <= high))
    if not fits:
        raise ConfigError(f"{key}: must be {describe(low, high, low_open, high_open)}, got {value}{'; ' + hint if hint else ''}")


def describe(low: Optional[float], high: Optional[float], low_open: bool = False, high_open: bool = False) -> str:
    """'above 0', '1 or more', 'in [0, 1)', 'at most 5', 'a finite number'."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"above {_number(low)}" if low_open else f"{_number(low)} or more"
    if high is not None:
        return f"below {_number(high)}" if high_open else f"at most {_number(high)}"
    return "a finite number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)
