"""``PostgresEventLog``: the Build Event Log in PostgreSQL (psycopg 3), for scale-out.

Durability and ordering:
- Synchronous commit (set on every writer session): a returned ``append`` is on disk.
- Each append takes ``LOCK TABLE build_events IN EXCLUSIVE MODE`` before reading
  ``MAX(sequence)``. Why: if two transactions could insert at once, sequence 8 could commit
  before 7, and a reader tailing with ``read(after=7)`` would already have moved past 7
  when it appears — the event would be skipped forever (eventsourcing serialises inserts
  for this reason). EXCLUSIVE blocks other writers only; readers (ACCESS SHARE) go on.
- Rows go in with binary ``COPY`` (fastest bulk path).
- Readers use their own autocommit connection per thread; the writer uses one connection
  behind a Python lock and reconnects if it broke.
- The writer lock is a session advisory lock on a dedicated connection (dropped by the
  server if the holder dies); the holder writes its owner string into ``bel_writer``.
- ``schema`` (constructor argument or ``?schema=name`` in the URL) isolates a log in its
  own PostgreSQL schema, created on first open; tests use a fresh one each.

Called through ``open_log("postgresql://...")``. Must not let ``psycopg.Error`` or
``OSError`` escape (they become ``StorageError``) and must never show a password.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from databuild.codec import PAYLOAD_VERSION, decode_payload, encode_payload
from databuild.core.errors import LogLocked, StorageError, StorageUnavailable
from databuild.core.events import Event, EventPayload
from databuild.log.port import DEFAULT_READ_LIMIT, BuildEventLog, checked_read_args
from databuild.log.schema import load_migrations, pending_migrations
from databuild.log.url import mask_url, missing_postgres_extra, postgres_location

# psycopg is the optional ``[postgres]`` extra; this module is imported only when a
# PostgreSQL URL is opened (``databuild.log.open_log``), so the embedded default never
# needs it, and a PostgreSQL URL without it is one clear line, not a traceback.
try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by tests/cli subprocesses
    if exc.name is None or exc.name.partition(".")[0] != "psycopg":
        raise
    raise missing_postgres_extra() from None

CONNECT_TIMEOUT_SECONDS = 10

_COPY = "COPY build_events (sequence, timestamp, type, version, payload) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["int8", "float8", "text", "int4", "bytea"]
_SELECT = "SELECT sequence, timestamp, type, version, payload FROM build_events WHERE sequence > %s"


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key per purpose and schema."""
    digest = hashlib.sha256(f"databuild-bel:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresEventLog(BuildEventLog):
    def __init__(self, url: str, schema: str | None = None) -> None:
        location = postgres_location(url, schema)
        self.schema = location.schema
        self._shown = mask_url(url)
        with self._storage_errors("parse the URL of"):
            self._conninfo = location.conninfo
            if "connect_timeout" not in conninfo_to_dict(location.conninfo):
                self._conninfo = make_conninfo(
                    location.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[psycopg.Connection] = []
        self._local = threading.local()
        self._lock_conn: psycopg.Connection | None = None
        self._closed = False
        with self._storage_errors("open"):
            self._writer = self._connect()
        try:
            with self._storage_errors("migrate the schema of"):
                self._migrate()
        except BaseException:
            self._writer.close()
            raise

    @contextlib.contextmanager
    def _storage_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (psycopg.Error, OSError) as exc:
            detail = str(exc).strip() or type(exc).__name__
            kind = StorageUnavailable if _transient(exc) else StorageError
            raise kind(
                f"could not {action} the PostgreSQL Build Event Log {self._shown} "
                f"(schema {self.schema}): {detail}"
            ) from exc

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute("SET synchronous_commit TO on")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self) -> None:
        conn = self._writer
        with conn.transaction():
            # Two processes opening a new log at once: one migrates, the other then sees it.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("migrate", self.schema),))
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            where = f"{self._shown} (schema {self.schema})"
            for migration in pending_migrations(load_migrations("postgres"), applied, where):
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (%s, %s, extract(epoch FROM clock_timestamp()))",
                    (migration.version, migration.name),
                )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the PostgreSQL Build Event Log {self._shown} is closed")

    def _reader(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _query(self, query: bytes, params: list[object]) -> list[tuple[Any, ...]]:
        """A read on this thread's connection. A read is idempotent: when the server had
        dropped the session (restart, failover, idle timeout; noticed only now), it is
        run once more on a new one instead of failing the caller."""
        conn = self._reader()
        try:
            return conn.execute(query, params).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            if not (conn.closed or conn.broken):
                raise
        return self._reader().execute(query, params).fetchall()

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self._check_open()
        if not payloads:
            return []
        # Encode first: a payload the schema cannot hold fails the batch before any write.
        encoded = [encode_payload(p) for p in payloads]
        with self._write_lock, self._storage_errors("append to"):
            if self._writer.closed or self._writer.broken:
                self._writer.close()
                self._writer = self._connect()
            conn = self._writer
            with conn.transaction():
                conn.execute("LOCK TABLE build_events IN EXCLUSIVE MODE")
                row = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM build_events")
                first = int(_one(row.fetchone())) + 1
                with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for i, (type_name, data) in enumerate(encoded):
                        copy.write_row((first + i, timestamp, type_name, PAYLOAD_VERSION, data))
        return [Event(first + i, timestamp, p) for i, p in enumerate(payloads)]

    def read(
        self,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
        types: Collection[str] | None = None,
    ) -> list[Event]:
        self._check_open()
        wanted = checked_read_args(limit, types)
        if wanted is not None and not wanted:
            return []
        query = _SELECT
        params: list[object] = [after]
        if wanted is not None:
            query += " AND type = ANY(%s)"
            params.append(sorted(wanted))
        query += " ORDER BY sequence LIMIT %s"
        params.append(limit)
        with self._storage_errors("read"):
            rows = self._query(query.encode(), params)
        return [
            Event(sequence, ts, decode_payload(type_name, bytes(data), version))
            for sequence, ts, type_name, version, data in rows
        ]

    def last_sequence(self) -> int:
        self._check_open()
        with self._storage_errors("read"):
            rows = self._query(b"SELECT COALESCE(MAX(sequence), 0) FROM build_events", [])
            return int(_one(rows[0] if rows else None))

    def acquire_writer(self, owner: str) -> None:
        self._check_open()
        with self._write_lock, self._storage_errors("take the writer lock of"):
            if self._lock_conn is not None and not _alive(self._lock_conn):
                # The server dropped the session (restart, pg_terminate_backend) and with
                # it our advisory lock: take it again on a new session, or learn who has.
                self._lock_conn.close()
                self._lock_conn = None
            if self._lock_conn is None:
                conn = self._connect()
                try:
                    got = conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (_lock_key("writer", self.schema),)
                    ).fetchone()
                    if not _one(got):
                        holder = conn.execute("SELECT owner FROM bel_writer WHERE id = 1")
                        found = holder.fetchone()
                        raise LogLocked(
                            f"the PostgreSQL Build Event Log {self._shown} (schema "
                            f"{self.schema}) is already in use by "
                            f"{found[0] if found else 'another process'!r}"
                        )
                except BaseException:
                    conn.close()
                    raise
                self._lock_conn = conn
            self._lock_conn.execute(
                "INSERT INTO bel_writer (id, owner, acquired_at) "
                "VALUES (1, %s, extract(epoch FROM clock_timestamp())) "
                "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, "
                "acquired_at = EXCLUDED.acquired_at",
                (owner,),
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._storage_errors("close"):
            lock_conn, self._lock_conn = self._lock_conn, None
            with self._readers_lock:
                readers, self._readers = self._readers, []
            try:
                if lock_conn is not None and not lock_conn.broken:
                    lock_conn.execute("DELETE FROM bel_writer WHERE id = 1")
                    lock_conn.execute(
                        "SELECT pg_advisory_unlock(%s)", (_lock_key("writer", self.schema),)
                    )
            finally:
                for conn in [*readers, self._writer, *([lock_conn] if lock_conn else [])]:
                    conn.close()


# SQLSTATE classes and codes that can clear without a person: connection exceptions,
# transaction rollbacks (serialization failure, deadlock), insufficient resources (disk
# full, too many connections), operator intervention (admin shutdown, server starting up,
# query canceled by a timeout), lock not available.
_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_TRANSIENT_CODES = frozenset({"55P03", "55006"})


def _transient(exc: BaseException) -> bool:
    """Whether retrying the same statement later may succeed. Connection loss (no
    SQLSTATE at all: the socket died) is transient; a missing table or schema, or a
    permission refused, is not (``ProgrammingError`` family)."""
    if isinstance(exc, OSError | psycopg.InterfaceError):
        return True
    code = getattr(exc, "sqlstate", None)
    if code:
        return code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES
    return isinstance(exc, psycopg.OperationalError)


def _alive(conn: psycopg.Connection) -> bool:
    """Whether a session still answers (a terminated one is only noticed when used)."""
    if conn.closed or conn.broken:
        return False
    try:
        conn.execute("SELECT 1")
    except (psycopg.OperationalError, psycopg.InterfaceError):
        return False
    return True


def _one(row: tuple[Any, ...] | None) -> Any:
    if row is None:
        raise StorageError("PostgreSQL returned no row where one was expected")
    return row[0]
