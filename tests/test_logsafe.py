"""A caller's value in a log message cannot forge a second line or rewrite the terminal."""

from __future__ import annotations

import io
import logging

from phoenix_server.support.logsafe import Escaping, escape


def _logged(message: object, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(Escaping())
    logger = logging.getLogger("phoenix.test.logsafe")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.handlers[:] = []
    return stream.getvalue()


def test_a_newline_in_an_argument_stays_on_one_line() -> None:
    line = _logged("notify step: %s", "drill\nERROR forged: all services down")
    assert line.count("\n") == 1, line
    assert "drill\\nERROR forged" in line


def test_escape_and_c1_characters_are_shown_not_sent() -> None:
    line = _logged("service %r from %s", "web\x1b[31m", "alert\x85\u2028x")
    assert "\x1b" not in line and "\x85" not in line and "\u2028" not in line
    assert "\\x1b[31m" in line and "\\x85" in line and "\\u2028" in line


def test_numbers_keep_their_format_and_tabs_are_kept() -> None:
    assert (
        _logged("took %.1fs over %d tries\tok", 2.345, 3) == "WARNING took 2.3s over 3 tries\tok\n"
    )


def test_a_record_seen_by_two_handlers_is_escaped_once() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b\nc",), None)
    Escaping().filter(record)
    Escaping().filter(record)
    assert record.getMessage() == "a b\\nc"
    assert escape("\r") == "\\r"
