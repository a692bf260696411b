"""The service's defences against floods (issue 14.5): its connection limit from the
file-descriptor limit, and flood warnings collapsed into one line per interval."""

from __future__ import annotations

import logging
import sys

from databuild.service.server import (
    FDS_PER_JOB_SLOT,
    FDS_RESERVED,
    MIN_CONNECTIONS,
    FloodLogFilter,
    connection_limit,
)


def test_the_connection_limit_leaves_descriptors_for_the_log_and_the_jobs() -> None:
    assert connection_limit(1024, 4) == 1024 - FDS_RESERVED - 4 * FDS_PER_JOB_SLOT
    assert connection_limit(20_000, 2) > 10_000
    assert connection_limit(50, 16) == MIN_CONNECTIONS  # never none at all


def record(msg: str, *, exc: bool = False) -> logging.LogRecord:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), exc_info)


def test_a_flood_of_warnings_is_one_line_per_interval_with_a_count_and_no_traceback() -> None:
    flood = FloodLogFilter("socket.accept() out", lambda n: f"{n} not accepted", 3600)
    first = record("socket.accept() out of system resource\nsocket: <x>", exc=True)
    assert flood.filter(first)
    assert (first.getMessage(), first.exc_info, first.levelname) == (
        "1 not accepted",
        None,
        "WARNING",
    )
    assert not any(
        flood.filter(record("socket.accept() out of system resource")) for _ in range(99)
    )
    other = record("something else")
    assert flood.filter(other) and other.getMessage() == "something else"


def test_with_no_interval_every_warning_is_its_own_line() -> None:
    flood = FloodLogFilter("Exceeded", lambda n: f"{n} refused", 0.0)
    lines = []
    for _ in range(3):
        rec = record("Exceeded concurrency limit.")
        if flood.filter(rec):
            lines.append(rec.getMessage())
    assert lines == ["1 refused", "1 refused", "1 refused"]
