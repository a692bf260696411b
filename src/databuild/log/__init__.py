"""The Build Event Log: the port, its adapters, and ``open_log`` to pick one by URL.

``open_log`` is how everything above this layer gets a log: ``memory:`` (the fake),
``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite`` (the embedded
default), ``postgresql://...`` / ``postgres://...`` (optionally ``?schema=name``). Opening
creates the storage if needed and applies pending migrations.

Called by the runtime, service, CLI and streaming layers. Must not decide anything about
events (that is the core's job) nor import generated protobuf code (the codec's).
"""

from __future__ import annotations

from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.log.port import DEFAULT_READ_LIMIT, BuildEventLog
from databuild.log.postgres import PostgresEventLog
from databuild.log.sqlite import SqliteEventLog
from databuild.log.url import mask_url, scheme_of, sqlite_path, unsupported


def open_log(url: str) -> BuildEventLog:
    """The Build Event Log at ``url``; ``StorageError`` for an unsupported or broken one."""
    if not isinstance(url, str):
        raise unsupported(repr(url))
    if url == "memory:":
        return InMemoryEventLog()
    if url.startswith("sqlite:///"):
        return SqliteEventLog(sqlite_path(url))
    if scheme_of(url) in ("postgresql", "postgres") and url.partition(":")[2].startswith("//"):
        return PostgresEventLog(url)
    raise unsupported(url)


__all__ = [
    "DEFAULT_READ_LIMIT",
    "BuildEventLog",
    "InMemoryEventLog",
    "InMemoryStore",
    "PostgresEventLog",
    "SqliteEventLog",
    "mask_url",
    "open_log",
]
