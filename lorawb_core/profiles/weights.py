"""One block weight: its bounds, its check and its text form (shared by profiles and their schedules)."""

from __future__ import annotations

import math

from ..errors import ProfileError

WEIGHT_MIN = -10.0
WEIGHT_MAX = 10.0


def fmt_weight(value: float) -> str:
    """A weight as text that reads back to the same float (``1``, ``0.5``, ``-0.25``)."""
    if value == int(value):
        return str(int(value))
    return repr(float(value))


def check_weight(block_id: str, value: object) -> float:
    """One weight as a float, or a :class:`ProfileError` naming the block and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"block {block_id}: weight {value!r} is not a number; give a number between "
                           f"{fmt_weight(WEIGHT_MIN)} and {fmt_weight(WEIGHT_MAX)}.")
    v = float(value)
    if not math.isfinite(v):
        raise ProfileError(f"block {block_id}: weight {v} is not a finite number; give a number between "
                           f"{fmt_weight(WEIGHT_MIN)} and {fmt_weight(WEIGHT_MAX)}.")
    if not WEIGHT_MIN <= v <= WEIGHT_MAX:
        raise ProfileError(f"block {block_id}: weight {fmt_weight(v)} is outside the range {fmt_weight(WEIGHT_MIN)} "
                           f"… {fmt_weight(WEIGHT_MAX)}; bring it into that range.")
    return v
