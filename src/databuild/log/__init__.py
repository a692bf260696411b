"""The Build Event Log: the port, its adapters, and ``open_log`` to pick one by URL.

``open_log`` is how everything above this layer gets a log: ``memory:`` (the fake),
``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite`` (the embedded
default), ``postgresql://...`` / ``postgres://...`` (optionally ``?schema=name``). Opening
creates the storage if needed and applies pending migrations.

Called by the runtime, service, CLI and streaming layers. Must not decide anything about
events (that is the core's job) nor import generated protobuf code (the codec's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.log.port import DEFAULT_READ_LIMIT, BuildEventLog
from databuild.log.sqlite import SqliteEventLog
from databuild.log.url import mask_url, scheme_of, sqlite_path, unsupported

if TYPE_CHECKING:
    from databuild.log.postgres import PostgresEventLog


def __getattr__(name: str) -> Any:
    # The PostgreSQL adapter (and psycopg, ~0.2 s to import) loads only when a PostgreSQL
    # log is asked for: every CLI command and SQLite-only service starts faster.
    if name == "PostgresEventLog":
        from databuild.log.postgres import PostgresEventLog

        return PostgresEventLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_log(url: str) -> BuildEventLog:
    """The Build Event Log at ``url``; ``StorageError`` for an unsupported or broken one."""
    if not isinstance(url, str):
        raise unsupported(repr(url))
    if url == "memory:":
        return InMemoryEventLog()
    if url.startswith("sqlite:///"):
        return SqliteEventLog(sqlite_path(url))
    if scheme_of(url) in ("postgresql", "postgres") and url.partition(":")[2].startswith("//"):
        from databuild.log.postgres import PostgresEventLog  # see __getattr__

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
