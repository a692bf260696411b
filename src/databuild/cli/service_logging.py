"""The service's logs on stderr: ``databuild serve --log-level`` and ``--log-format``.

``configure`` routes every record of DataBuild's loggers (``databuild.*``) and uvicorn's to
one stderr handler at the chosen level (other libraries: warnings and up). ``text`` is one
line per record for people; ``json`` is one JSON object per line for log shippers (Vector,
Fluent Bit, Loki's promtail, a Kubernetes node agent): ``time`` (ISO 8601, UTC), ``level``,
``logger``, ``event`` (the message), then whatever the record carries as ``extra`` (a
``want_id``, ``job_run_id``, ``partition_ref``, ``url``...) and ``exception`` for a
traceback, so nothing a caller attached is lost.

Called by the ``serve`` command only, after uvicorn has configured its own loggers (it does
so when its ``Config`` is made), which this replaces. It must not decide anything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from databuild.cli.output import err_console

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
# uvicorn.access stays as the service set it (off: ``access_log=False``; uvicorn logs access
# lines whenever that logger has a handler, so it must not propagate to ours).
OUR_LOGGERS = ("databuild", "uvicorn", "uvicorn.error", "uvicorn.asgi")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (but
# uvicorn's ``color_message``, the same message with terminal colours, is not for shippers).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

log = logging.getLogger("databuild.service")


def _iso(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class UtcTextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso(record.created)


def configure(level: str, fmt: str) -> None:
    """Send our loggers' records at ``level`` and up to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else UtcTextFormatter(TEXT_FORMAT))
    number = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(number, logging.WARNING))  # other libraries: warnings and up
    access = logging.getLogger("uvicorn.access")
    access.propagate = False
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []  # uvicorn's own handlers would print a second, unformatted line
        logger.propagate = True
        logger.setLevel(number)


def fatal(message: str) -> None:
    """A fatal error of ``serve`` in the configured format (the JSON form of ``error:``)."""
    log.error(message)


class Announcer:
    """What ``serve`` says once it is up: Rich lines for people, log records for ``json``."""

    def __init__(self, fmt: str) -> None:
        self.as_json = fmt == "json"
        self._lines: list[tuple[int, str, str, dict[str, Any]]] = []

    def add(self, level: int, rich_text: str, plain: str, **fields: Any) -> None:
        """``rich_text`` for a terminal; ``plain`` and ``fields`` for the JSON record."""
        self._lines.append((level, rich_text, plain, fields))

    def say(self) -> None:
        for level, rich_text, plain, fields in self._lines:
            if self.as_json:
                log.log(level, plain, extra=fields)
            else:
                err_console.print(rich_text)

    async def serve(self, service: Any) -> None:
        """Run ``service`` (``databuild.service.server.Service``) and announce it once it
        is ready, not before: a start-up error (a Build Event Log that cannot be opened) is
        then the only line. ``ready`` is set by ``run`` on this same loop, which polls
        uvicorn's ``started`` the same way."""
        running = asyncio.create_task(service.run())
        while not service.ready.is_set() and not running.done():
            await asyncio.sleep(0.01)
        if service.error is None and not running.done():
            self.say()
        await running
