"""Log lines that a caller cannot forge: control characters in logged values are escaped.

A value Phoenix logs may come from outside — a ``notify`` step's message, a service name
in an alert, a path — and one with a newline in it would print what looks like a second,
separate log line (or, with ``ESC``, rewrite the operator's terminal). :class:`Escaping`
shows every control character of the message and of its arguments escaped (``\\n``,
``\\x1b``), so one record is always one line. Tracebacks (``exc_info``) are Phoenix's own
and keep their lines.

Install it on the handler, not a logger: a logger's filters do not see records that
propagate from its children.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
"""Every C0 and C1 control character but tab, and Unicode's line and paragraph separators."""
_NAMED = {"\n": "\\n", "\r": "\\r"}


def escape(text: str) -> str:
    """``text`` with each control character shown as an escape sequence."""
    return _CONTROL.sub(lambda found: _NAMED.get(found.group()) or _code(found.group()), text)


def _code(char: str) -> str:
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


class _Escaped:
    """An argument that prints escaped with ``%s`` and ``%r`` alike."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __str__(self) -> str:
        return escape(str(self._value))

    def __repr__(self) -> str:
        return escape(repr(self._value))


def _safe(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value  # numbers carry no characters, and %d/%f still need them
    return _Escaped(value)


class Escaping(logging.Filter):
    """Escapes control characters in every record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_phoenix_escaped", False):
            return True  # a record passing through two handlers is escaped once
        record.msg = escape(record.msg) if isinstance(record.msg, str) else _Escaped(record.msg)
        args: Any = record.args
        if isinstance(args, Mapping):
            record.args = {key: _safe(value) for key, value in args.items()}
        elif isinstance(args, tuple):
            record.args = tuple(_safe(value) for value in args)
        record._phoenix_escaped = True
        return True
