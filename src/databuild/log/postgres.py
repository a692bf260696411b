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
- The writer role is a lease on a live session (``SharedEventLog``): a transaction-level
  advisory lock held in a transaction kept open on a dedicated connection, with
  ``idle_in_transaction_session_timeout`` set to the lease. A heartbeat thread runs
  ``SELECT 1`` on it every third of the lease. Why not a session lock alone: a paused
  (SIGSTOP) or partitioned holder keeps its TCP session open, and the server would keep its
  lock for ever; an idle transaction it does end, and with it the lock. A killed holder's
  socket closes and the lock is free at once.
- Fencing: each new writer bumps ``bel_writer.generation`` (and records its owner string
  and advertised URL) under the ``build_events`` table lock; every append of a writer
  checks, under that lock, that the stored generation is still its own, else it fails
  with ``LeadershipLost`` and writes nothing. Rows carry the generation that wrote them.
  A bump waits for an append in flight, and an append after a bump sees it: a stale
  writer can neither fork the log nor slip an event in behind the new writer's fold. An
  append still holding the table a lease later (its process paused inside the COPY,
  which the server does not count as idle) has its session terminated by the new writer.
- Each append ``NOTIFY``s a channel of the schema inside its transaction (delivered on
  commit); standbys ``LISTEN`` on their own connection (``listen``) to follow the log.
- ``schema`` (constructor argument or ``?schema=name`` in the URL) isolates a log in its
  own PostgreSQL schema, created on first open; tests use a fresh one each.

Called through ``open_log("postgresql://...")``. Must not let ``psycopg.Error`` or
``OSError`` escape (they become ``StorageError``) and must never show a password.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from databuild.codec import PAYLOAD_VERSION, decode_payload, encode_payload
from databuild.core.errors import (
    InvalidInput,
    LeadershipLost,
    LogLocked,
    StorageError,
    StorageUnavailable,
)
from databuild.core.events import Event, EventPayload
from databuild.log.port import (
    DEFAULT_READ_LIMIT,
    CommitListener,
    SharedEventLog,
    WriterRecord,
    checked_read_args,
)
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
LEASE_ENV = "DATABUILD_LEADER_LEASE"
DEFAULT_LEASE_SECONDS = 3.0

_COPY = (
    "COPY build_events (sequence, timestamp, type, version, payload, generation) "
    "FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["int8", "float8", "text", "int4", "bytea", "int8"]
_CLAIM = (
    "INSERT INTO bel_writer (id, owner, url, acquired_at, generation) "
    "VALUES (1, %s, %s, extract(epoch FROM clock_timestamp()), 1) "
    "ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, url = EXCLUDED.url, "
    "acquired_at = EXCLUDED.acquired_at, generation = bel_writer.generation + 1 "
    "RETURNING generation"
)
_SELECT = "SELECT sequence, timestamp, type, version, payload FROM build_events WHERE sequence > %s"


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key per purpose and schema."""
    digest = hashlib.sha256(f"databuild-bel:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lease_from(environ: dict[str, str] | os._Environ[str]) -> float:
    """The writer lease in seconds: ``$DATABUILD_LEADER_LEASE`` or the default."""
    raw = environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 1.0 <= value <= 3600.0:
        raise InvalidInput(
            f"${LEASE_ENV} must be a number of seconds from 1 to 3600 (how long a silent "
            f"leader keeps the writer role); got {raw!r}"
        )
    return value


class PostgresEventLog(SharedEventLog):
    def __init__(
        self, url: str, schema: str | None = None, *, lease_seconds: float | None = None
    ) -> None:
        location = postgres_location(url, schema)
        self.schema = location.schema
        self.lease_seconds = lease_from(os.environ) if lease_seconds is None else lease_seconds
        self.advertise_url = ""
        self.on_writer_lost: Callable[[str], None] | None = None
        key = _lock_key("writer", self.schema)
        self._key = key
        self._channel = f"databuild_bel_{key & 0xFFFFFFFFFFFFFFFF:016x}"
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
        self._lock_mutex = threading.Lock()  # the lock session: heartbeat vs. (re)acquire
        self._generation: int | None = None  # ours, once we were the writer
        self._owner = ""
        self._heartbeat: threading.Thread | None = None
        self._stop_beating = threading.Event()
        self._waiting_conn: psycopg.Connection | None = None
        self._stop_waiting = threading.Event()
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

    def _connect(self, *, autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(self._conninfo, autocommit=autocommit)
        try:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            conn.execute("SET synchronous_commit TO on")
            # A paused process's open transaction (the writer lease, or an append) is
            # ended by the server after the lease, freeing its locks for a successor.
            timeout_ms = int(self.lease_seconds * 1000)
            conn.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")
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
            mine = self._generation
            with conn.transaction():
                conn.execute("LOCK TABLE build_events IN EXCLUSIVE MODE")
                row = conn.execute(
                    "SELECT COALESCE(MAX(sequence), 0), "
                    "(SELECT generation FROM bel_writer WHERE id = 1) FROM build_events"
                ).fetchone()
                if row is None:
                    raise StorageError("PostgreSQL returned no row where one was expected")
                first = int(row[0]) + 1
                if mine is not None and row[1] != mine:
                    raise self._lost(row[1])  # rolls the transaction back: nothing written
                with conn.cursor() as cursor, cursor.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for i, (type_name, data) in enumerate(encoded):
                        copy.write_row(
                            (first + i, timestamp, type_name, PAYLOAD_VERSION, data, mine or 0)
                        )
                last = first + len(encoded) - 1
                conn.execute("SELECT pg_notify(%s, %s)", (self._channel, str(last)))
        return [Event(first + i, timestamp, p) for i, p in enumerate(payloads)]

    def _lost(self, stored: object) -> LeadershipLost:
        return LeadershipLost(
            f"lost leadership of the PostgreSQL Build Event Log {self._shown} (schema "
            f"{self.schema}): this service wrote as generation {self._generation}, and "
            f"generation {stored} has taken over since; it stops writing"
        )

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

    def _lock_session(self) -> psycopg.Connection:
        """A new session for the writer lease: not autocommit, so that the first statement
        opens the transaction the lease lives in."""
        return self._connect(autocommit=False)

    def _recorded(self, conn: psycopg.Connection) -> tuple[str, int]:
        found = conn.execute("SELECT owner, generation FROM bel_writer WHERE id = 1").fetchone()
        return (str(found[0]), int(found[1])) if found else ("", 0)

    def _locked(self, owner: str) -> LogLocked:
        return LogLocked(
            f"the PostgreSQL Build Event Log {self._shown} (schema {self.schema}) is already "
            f"in use by {owner or 'another process'!r}"
        )

    def acquire_writer(self, owner: str) -> None:
        self._check_open()
        with self._write_lock, self._storage_errors("take the writer lock of"):
            self._owner = owner
            with self._lock_mutex:
                held = self._lock_conn
                if held is not None and _beat(held):
                    self._record_owner(owner)
                    return
                if held is not None:
                    # The server dropped the session (restart, pg_terminate_backend, the
                    # lease ran out) and with it our lock: take it again on a new session
                    # unless another writer has taken over meanwhile.
                    held.close()
                    self._lock_conn = None
                conn = self._lock_session()
                try:
                    got = _one(
                        conn.execute(
                            "SELECT pg_try_advisory_xact_lock(%s)", (self._key,)
                        ).fetchone()
                    )
                    holder, stored = self._recorded(conn)
                    if self._generation is not None and stored != self._generation:
                        raise self._lost(stored)
                    if not got:
                        # ours but not yet noticed as gone by the server, or another's
                        raise self._locked(holder)
                except BaseException:
                    conn.close()
                    raise
                self._lock_conn = conn
            if self._generation is None:
                self._claim(owner)
            else:
                self._record_owner(owner)
        self._start_heartbeat()

    def _claim(self, owner: str) -> None:
        """Become the next generation (caller holds the lease and ``_write_lock``). Under
        the table lock: an append in flight by a previous writer ends first."""
        if self._writer.closed or self._writer.broken:
            self._writer.close()
            self._writer = self._connect()
        conn = self._writer
        lease_ms = int(self.lease_seconds * 1000)
        while True:
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = {lease_ms}")
                    conn.execute("LOCK TABLE build_events IN EXCLUSIVE MODE")
                    row = conn.execute(_CLAIM, (owner, self.advertise_url)).fetchone()
                break
            except psycopg.errors.LockNotAvailable:
                # Still held after a lease: an append of the writer we replace, paused in
                # the middle of its COPY (a COPY is not idle, so the server never times
                # its transaction out). We hold the writer lock: end that session.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE granted "
                    "AND relation = 'build_events'::regclass AND pid <> pg_backend_pid()"
                )
        self._generation = int(_one(row))

    def _record_owner(self, owner: str) -> None:
        if self._writer.closed or self._writer.broken:
            self._writer.close()
            self._writer = self._connect()
        self._writer.execute(
            "UPDATE bel_writer SET owner = %s, url = %s WHERE id = 1 AND generation = %s",
            (owner, self.advertise_url, self._generation),
        )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop_beating.clear()
        self._heartbeat = threading.Thread(
            target=self._beat_until_stopped, name="databuild-bel-lease", daemon=True
        )
        self._heartbeat.start()

    def _beat_until_stopped(self) -> None:
        """Keep the lease's transaction from idling out; retake a lost session; report a
        takeover by another writer once (``on_writer_lost``) and stop."""
        while not self._stop_beating.wait(self.lease_seconds / 3):
            with self._lock_mutex:
                conn = self._lock_conn
                if conn is not None and _beat(conn):
                    continue
            try:
                self.acquire_writer(self._owner)
            except LeadershipLost as exc:
                callback = self.on_writer_lost
                if callback is not None:
                    callback(str(exc))
                return
            except StorageError:
                continue  # the server is away, or has not yet noticed our old session

    def wait_for_writer(self, owner: str) -> bool:
        self._check_open()
        self._owner = owner
        while not (self._stop_waiting.is_set() or self._closed):
            conn: psycopg.Connection | None = None
            try:
                conn = self._lock_session()
                with self._lock_mutex:
                    self._waiting_conn = conn
                if self._stop_waiting.is_set():
                    conn.close()
                    return False
                # Blocks in the server until the lock is free: no polling. The server
                # wakes it the moment the holder's session ends.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
            except (psycopg.Error, OSError):
                if conn is not None:
                    conn.close()
                if not self._stop_waiting.wait(1.0):
                    continue  # the server is away: wait for it, then for the lock
                return False
            finally:
                with self._lock_mutex:
                    self._waiting_conn = None
            with self._write_lock, self._storage_errors("take the writer lock of"):
                with self._lock_mutex:
                    self._lock_conn = conn
                self._claim(owner)
            self._start_heartbeat()
            return True
        return False

    def stop_waiting(self) -> None:
        self._stop_waiting.set()
        with self._lock_mutex:
            conn = self._waiting_conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.cancel_safe(timeout=2.0)

    def current_writer(self) -> WriterRecord | None:
        self._check_open()
        with self._storage_errors("read the writer of"):
            rows = self._query(b"SELECT owner, url, generation FROM bel_writer WHERE id = 1", [])
        if not rows:
            return None
        owner, url, generation = rows[0]
        return WriterRecord(str(owner), str(url), int(generation))

    def confirm_writer(self) -> None:
        mine = self._generation
        if mine is None:
            return
        record = self.current_writer()
        stored = record.generation if record is not None else 0
        if stored != mine:
            raise self._lost(stored)

    @property
    def generation(self) -> int | None:
        """Our writer generation, once this object was the writer."""
        return self._generation

    def listen(self) -> CommitListener:
        self._check_open()
        return _Listener(self._connect, self._channel)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_waiting()
        self._stop_beating.set()
        beating = self._heartbeat
        if beating is not None and beating is not threading.current_thread():
            beating.join(timeout=5)
        with self._write_lock, self._storage_errors("close"):
            with self._lock_mutex:
                lock_conn, self._lock_conn = self._lock_conn, None
            with self._readers_lock:
                readers, self._readers = self._readers, []
            try:
                if lock_conn is not None and self._generation is not None and _beat(lock_conn):
                    # still ours: say no writer now (the row, and its generation, stay)
                    self._writer.execute(
                        "UPDATE bel_writer SET owner = '', url = '' "
                        "WHERE id = 1 AND generation = %s",
                        (self._generation,),
                    )
            finally:
                for conn in [*readers, self._writer, *([lock_conn] if lock_conn else [])]:
                    conn.close()  # the lease's transaction ends with its session


class _Listener(CommitListener):
    """``LISTEN`` on a dedicated session; reconnects on the next ``wait`` after a fault."""

    def __init__(self, connect: Callable[[], psycopg.Connection], channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._conn: psycopg.Connection | None = None
        self._closed = False

    def wait(self, timeout: float) -> bool:
        if self._closed:
            return False
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            try:
                conn = self._connect()
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except (psycopg.Error, OSError):
                if conn is not None:
                    conn.close()
                time.sleep(min(timeout, 1.0))
                return False
            self._conn = conn
            return True  # announcements may have been missed while away: read now
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                return True
        except (psycopg.Error, OSError):
            conn.close()
            return True
        return False

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()


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


def _beat(conn: psycopg.Connection) -> bool:
    """Whether a session still answers (a terminated one is only noticed when used); on
    the lease's session this is also its heartbeat."""
    if conn.closed or conn.broken:
        return False
    try:
        conn.execute("SELECT 1")
    except (psycopg.Error, OSError):
        return False
    return True


def _one(row: tuple[Any, ...] | None) -> Any:
    if row is None:
        raise StorageError("PostgreSQL returned no row where one was expected")
    return row[0]
