"""Sizes as operators write them: a number of bytes or ``512MB``, ``1GiB``, ``64k``..."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
SIZE_HINT = "a size: a number of bytes or a string like 512MB, 1GiB, 64k"


def parse_size(value: object) -> int:
    """Return ``value`` as bytes; raise ValueError naming the expected syntax."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HINT}, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, float):
        number, unit = value, ""
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _UNITS:
            raise ValueError(f"unknown size unit {match.group(2)!r}; expected {SIZE_HINT}")
    else:
        raise ValueError(f"expected {SIZE_HINT}, got {str(value)[:40]!r}")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return size
