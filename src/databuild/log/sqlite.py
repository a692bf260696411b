"""``SqliteEventLog``: the Build Event Log in one SQLite file (the embedded default).

Durability and concurrency, following datasette's pattern:
- WAL journal with ``synchronous=FULL``: a returned ``append`` survives power loss.
- One writer connection; each append is ``BEGIN IMMEDIATE`` (takes SQLite's write lock at
  once, so the next sequence is computed and written under it), ``executemany``, COMMIT.
  Appends from other threads of this object wait on a Python lock; appends from other log
  objects or processes wait on SQLite's lock (busy timeout), so sequences never collide and
  commit in order: a tailing reader cannot skip one.
- Readers get their own connection per thread (the service reads from other threads than
  the writer), in autocommit so each read sees the latest commit.
- The writer lock is ``flock`` on ``<file>.lock``, holding the owner string for the
  ``LogLocked`` message; the kernel drops it if the process dies.

Called through ``open_log("sqlite:///...")``. Must not let ``sqlite3.Error`` or
``OSError`` escape (they become ``StorageError``) and must not decide anything about events.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from databuild.codec import PAYLOAD_VERSION, decode_payload, encode_payload
from databuild.core.errors import LogLocked, StorageError, StorageUnavailable
from databuild.core.events import Event, EventPayload
from databuild.core.pickling import constructor
from databuild.log.port import DEFAULT_READ_LIMIT, BuildEventLog, checked_read_args
from databuild.log.schema import Migration, load_migrations, pending_migrations

BUSY_TIMEOUT_SECONDS = 30.0

_INSERT = (
    "INSERT INTO build_events (sequence, timestamp, type, version, payload) VALUES (?,?,?,?,?)"
)
_ROWS_PER_INSERT = 100  # 500 bound values, well within SQLite's limit (32766 since 3.32)
_SELECT = "SELECT sequence, timestamp, type, version, payload FROM build_events WHERE sequence > ?"
# A restart reads the whole tail after its snapshot: build each Event without the frozen
# dataclass's slower __init__ (core.pickling.constructor); it is the same Event.
_event = constructor(Event)


class SqliteEventLog(BuildEventLog):
    local_append = True  # a local file's transaction: see the port

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT_SECONDS
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock_path = Path(f"{self.path}.lock")
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock_fd: int | None = None
        self._closed = False
        with self._storage_errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
        try:
            with self._storage_errors("open"):
                mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(
                        f"SQLite Build Event Log {self.path}: could not switch to WAL "
                        f"(journal_mode is {mode})"
                    )
            with self._storage_errors("migrate the schema of"):
                self._migrate(load_migrations("sqlite"))
        except BaseException:
            self._writer.close()
            raise

    @contextlib.contextmanager
    def _storage_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            kind = StorageUnavailable if _transient(exc) else StorageError
            raise kind(
                f"could not {action} the SQLite Build Event Log {self.path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # close() may run on another thread than the user
        )
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _migrate(self, migrations: tuple[Migration, ...]) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in pending_migrations(migrations, applied, str(self.path)):
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (?, ?, (julianday('now') - 2440587.5) * 86400.0)",
                    (migration.version, migration.name),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the SQLite Build Event Log {self.path} is closed")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self._check_open()
        if not payloads:
            return []
        # Encode first: a payload the schema cannot hold fails the batch before any write.
        encoded = [encode_payload(p) for p in payloads]
        with self._write_lock, self._storage_errors("append to"):
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM build_events")
                first = int(last.fetchone()[0]) + 1
                for at in range(0, len(encoded), _ROWS_PER_INSERT):
                    # One statement per many rows: each statement executed hands the
                    # interpreter's lock back and forth once (executemany: once per row).
                    rows = encoded[at : at + _ROWS_PER_INSERT]
                    conn.execute(
                        _INSERT + ",(?,?,?,?,?)" * (len(rows) - 1),
                        [
                            value
                            for i, (type_name, data) in enumerate(rows, start=first + at)
                            for value in (i, timestamp, type_name, PAYLOAD_VERSION, data)
                        ],
                    )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
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
        sql = _SELECT
        params: list[object] = [after]
        if wanted is not None:
            sql += f" AND type IN ({', '.join('?' * len(wanted))})"
            params.extend(sorted(wanted))
        sql += " ORDER BY sequence LIMIT ?"
        params.append(limit)
        with self._storage_errors("read"):
            # Decoded as the rows arrive, not after fetchall: each row tuple is freed once
            # decoded instead of a whole chunk of them staying alive (less for the cyclic
            # collector to walk during a restart's long read). Closed even if a payload
            # cannot be decoded, so no read stays open on this thread's connection.
            cursor = self._reader().execute(sql, params)
            try:
                return [
                    _event(sequence, ts, decode_payload(type_name, data, version))
                    for sequence, ts, type_name, version, data in cursor
                ]
            finally:
                cursor.close()

    def last_sequence(self) -> int:
        self._check_open()
        with self._storage_errors("read"):
            row = self._reader().execute("SELECT COALESCE(MAX(sequence), 0) FROM build_events")
            return int(row.fetchone()[0])

    def acquire_writer(self, owner: str) -> None:
        self._check_open()
        with self._write_lock, self._storage_errors("take the writer lock of"):
            fd = self._lock_fd
            if fd is None:
                # O_RDWR without O_TRUNC: the holder's owner string must survive our open.
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    os.close(fd)
                    raise LogLocked(
                        f"the SQLite Build Event Log {self.path} is already in use by "
                        f"{holder or 'another process'!r} (lock file {self._lock_path}); "
                        "an SQLite log serves one service: to run replicas of a service, "
                        "share a PostgreSQL log (docs/operations.md, Running on a cluster)"
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode("utf-8", "replace"), 0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._storage_errors("close"):
            try:
                if self._lock_fd is not None:
                    os.ftruncate(self._lock_fd, 0)
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                with self._readers_lock:
                    readers, self._readers = self._readers, []
                for conn in [*readers, self._writer]:
                    conn.close()


# SQLite primary result codes that can clear by themselves: another process holds the
# lock past our busy timeout, the disk is full or failed an I/O. A missing table, a
# read-only or unopenable file, a corrupt one are a person's job (persistent).
_TRANSIENT_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}
)
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EDQUOT})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    return bool(code & 0xFF in _TRANSIENT_CODES)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back after a failure; a failing rollback must not hide the first error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration file, one at a time (``executescript`` would
    commit our open transaction first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in pending.splitlines()
    ):
        raise sqlite3.ProgrammingError(f"incomplete SQL statement in migration: {pending!r}")
