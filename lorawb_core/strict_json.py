"""Strict JSON, as browsers and the library's JSON columns need it: non-finite floats (NaN, ±Inf) become null."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts, lists, tuples) replaced by None; dict keys as str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


# one encoder for the common call (json.dumps with options builds a new one each time: most of encoding a small value)
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def finite_json(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON (UTF-8 text kept) with non-finite floats as null. The plain encoding is tried first: for
    string-keyed data it equals the cleaned one unless a float is NaN/Inf, and it costs no copy."""
    try:
        if default is None:
            return _STRICT.encode(value)
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=default, separators=(",", ":"))
    except ValueError:
        return json.dumps(finite(value), ensure_ascii=False, default=default, separators=(",", ":"))
