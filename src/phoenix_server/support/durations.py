"""Durations as operators write them: a number of seconds or ``500ms``/``2s``/``5m``/``1h``.

API.md fixes this syntax for YAML files and environment variables; JSON bodies use
plain numbers of seconds. Everything inside Phoenix is float seconds.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")

DURATION_HINT = "a duration: a number of seconds or a string like 500ms, 2s, 5m, 1h"


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds; raise ValueError naming the expected syntax."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative finite duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way an operator would write them (for messages and logs)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds / 3600:g}h"
