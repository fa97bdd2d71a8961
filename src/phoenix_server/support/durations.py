"""Durations as operators write them: a number of seconds or ``500ms``/``2s``/``5m``/``1h``.

API.md fixes this syntax for YAML files and environment variables; JSON bodies use
plain numbers of seconds. Everything inside Phoenix is float seconds.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")

MAX_SECONDS = 366 * 24 * 3600.0
"""No duration Phoenix deals in is longer than a year; anything longer is a typo."""
DURATION_HINT = "a duration: a number of seconds or a string like 500ms, 2s, 5m, 1h"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds; raise ValueError naming the expected syntax."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {_shown(value)}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(
                f"expected at most {MAX_SECONDS:g} seconds, got {_shown(value)}"
            ) from None
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"expected {DURATION_HINT}, got {_shown(value)}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected {DURATION_HINT}, got {_shown(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative finite duration, got {_shown(value)}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"expected at most {MAX_SECONDS:g} seconds (a year), got {_shown(value)}")
    return seconds
