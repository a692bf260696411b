"""``SqliteHistory``: the finished wants and runs of the compact fold, in a local file.

The fold (``core.history``) keeps only active work in memory and hands finished records
to a ``History``. This one is a SQLite file beside the snapshots (``<state_dir>/snapshots/
history.sqlite``): like a snapshot it is a cache of the Build Event Log that this service
writes for itself, rebuilt from the log when it is missing or damaged, so it is local to
each service (a PostgreSQL standby keeps its own, consistent with its own fold) and needs
no schema in the log's database.

One row per version of a record: key, version (the sequence of the event that last
changed it), order (the fold's counter: lists go by it), the columns a list filters on
(status, partition ref, root want, source or job, reported-missing flag) and the record
pickled (the positional form of ``core.pickling``; pickle because only this service
writes the file, as with snapshots). ``current`` marks the newest version of each key.
A restart from a snapshot at sequence S reads only the versions up to S while the tail is
folded again (which writes the later versions again, the same: ``INSERT OR REPLACE``); only
versions past the log's end (a log cut back by hand) are deleted.

Writes are batched by the fold (``FLUSH_AT`` records, and before every snapshot), each a
transaction with ``synchronous=FULL``: what a snapshot relies on is on disk before it.
Errors become ``StorageError`` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import sqlite3
import threading
from pathlib import Path
from typing import Any

from databuild.core.errors import StorageError
from databuild.core.history import RecordFilter, Row
from databuild.core.model import GraphSpec
from databuild.core.state import BuildState
from databuild.runtime.snapshots import SnapshotStore

log = logging.getLogger("databuild.history")

FILE_NAME = "history.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    current INTEGER NOT NULL,
    ord INTEGER NOT NULL,
    status TEXT NOT NULL,
    ref TEXT NOT NULL,
    root TEXT NOT NULL,
    tag TEXT NOT NULL,
    flag INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, key, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_order ON history (kind, ord) WHERE current = 1;
CREATE INDEX IF NOT EXISTS history_ref ON history (kind, ref) WHERE current = 1;
CREATE INDEX IF NOT EXISTS history_root ON history (kind, root, ord) WHERE current = 1;
CREATE INDEX IF NOT EXISTS history_version ON history (version);
CREATE TABLE IF NOT EXISTS history_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history_edges (
    dep TEXT NOT NULL,
    out TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (dep, out, kind, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_edges_version ON history_edges (version);
"""
_THROUGH = "complete_through"

_INSERT = (
    "INSERT OR REPLACE INTO history "
    "(kind, key, version, current, ord, status, ref, root, tag, flag, body) "
    "VALUES (?,?,?,1,?,?,?,?,?,?,?)"
)
_SUPERSEDE = "UPDATE history SET current = 0 WHERE kind = ? AND key = ? AND current = 1"


class HistoryBusy(StorageError):
    """Another process holds this history store (two services on one state directory)."""


class SqliteHistory:
    persistent = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._as_of: int | None = None  # while a replay runs: reads see versions up to it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise HistoryBusy(
                    f"the history store {path} is held by another process (two services "
                    "on one state directory?)"
                ) from None
            self._lock_fd = fd
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the history store {path}: {exc}") from exc

    def _fail(self, doing: str, exc: Exception) -> StorageError:
        return StorageError(f"history store {self.path}: {doing} failed: {exc}")

    def get(self, kind: str, key: str) -> Any | None:
        try:
            with self._lock:
                if self._as_of is None:
                    row = self._db.execute(
                        "SELECT body FROM history WHERE kind = ? AND key = ? AND current = 1",
                        (kind, key),
                    ).fetchone()
                else:  # replaying: what the store held at the snapshot
                    row = self._db.execute(
                        "SELECT body FROM history WHERE kind = ? AND key = ? AND version <= ? "
                        "ORDER BY version DESC LIMIT 1",
                        (kind, key, self._as_of),
                    ).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("a read", exc) from exc
        return None if row is None else pickle.loads(row[0])

    def put(self, rows: list[Row]) -> None:
        values = []
        for row in rows:
            d = row.described
            body = pickle.dumps(row.record, protocol=pickle.HIGHEST_PROTOCOL)
            values.append(
                (row.kind, row.key, row.version, row.order, d.status, d.ref, d.root, d.tag,
                 int(d.flag), body)
            )  # fmt: skip
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(_SUPERSEDE, [(r.kind, r.key) for r in rows])
                    self._db.executemany(_INSERT, values)
                    self._db.executemany(
                        "INSERT OR IGNORE INTO history_edges (dep, out, kind, key, version) "
                        "VALUES (?,?,?,?,?)",
                        [
                            (dep, out, r.kind, r.key, r.version)
                            for r in rows
                            for dep, out in r.described.edges
                        ],
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail("a write", exc) from exc

    def dependents_of(self, refs: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        try:
            with self._lock:
                for start in range(0, len(refs), 500):
                    part = refs[start : start + 500]
                    rows = self._db.execute(
                        "SELECT dep, out FROM history_edges WHERE dep IN "
                        f"({','.join('?' * len(part))})",
                        part,
                    ).fetchall()
                    for dep, out in rows:
                        found.setdefault(dep, set()).add(out)
        except sqlite3.Error as exc:
            raise self._fail("a read", exc) from exc
        return found

    def scan(
        self, kind: str, where: RecordFilter, after: int | None, descending: bool, limit: int
    ) -> list[tuple[int, Any]]:
        clauses = ["kind = ?", "current = 1"]
        args: list[Any] = [kind]
        if where.statuses is not None:
            clauses.append(f"status IN ({','.join('?' * len(where.statuses))})")
            args.extend(sorted(where.statuses))
        if where.prefix is not None:
            clauses.append("substr(ref, 1, ?) = ?")
            args.extend((len(where.prefix), where.prefix))
        if where.root is not None:
            clauses.append("root = ?")
            args.append(where.root)
        if where.tag is not None:
            clauses.append("tag = ?")
            args.append(where.tag)
        if where.flag is not None:
            clauses.append("flag = ?")
            args.append(int(where.flag))
        if where.refs is not None:
            clauses.append(f"ref IN ({','.join('?' * len(where.refs))})")
            args.extend(sorted(where.refs))
        if after is not None:
            clauses.append("ord < ?" if descending else "ord > ?")
            args.append(after)
        sql = (
            f"SELECT ord, body FROM history WHERE {' AND '.join(clauses)} "
            f"ORDER BY ord {'DESC' if descending else 'ASC'} LIMIT ?"
        )
        args.append(limit)
        try:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("a scan", exc) from exc
        return [(order, pickle.loads(body)) for order, body in rows]

    def replay_from(self, sequence: int, log_end: int) -> None:
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if sequence <= 0:  # a full replay writes everything: start empty
                        self._db.execute("DROP TABLE history")
                        self._db.execute("DROP TABLE history_meta")
                        self._db.execute("DROP TABLE history_edges")
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                    # versions past the log's end (a log cut back by hand): dropped, and the
                    # newest one left of each such key made current again
                    beyond = self._db.execute(  # the version index: no scan when none
                        "SELECT 1 FROM history WHERE version > ? LIMIT 1", (log_end,)
                    ).fetchone()
                    touched = (
                        self._db.execute(
                            "SELECT DISTINCT kind, key FROM history INDEXED BY history_version "
                            "WHERE version > ?",
                            (log_end,),
                        ).fetchall()
                        if beyond
                        else []
                    )
                    if touched:
                        self._db.execute("DELETE FROM history WHERE version > ?", (log_end,))
                        self._db.execute("DELETE FROM history_edges WHERE version > ?", (log_end,))
                        self._db.executemany(
                            "UPDATE history SET current = 1 WHERE kind = ? AND key = ? AND "
                            "version = (SELECT MAX(version) FROM history WHERE kind = ? "
                            "AND key = ?)",
                            [(k, key, k, key) for k, key in touched],
                        )
                    self._db.execute(
                        "UPDATE history_meta SET value = MIN(value, ?) WHERE name = ?",
                        (max(sequence, 0), _THROUGH),
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                self._as_of = sequence
        except sqlite3.Error as exc:
            raise self._fail("dropping versions past the log's end", exc) from exc

    def replay_done(self) -> None:
        self._as_of = None

    def mark(self, sequence: int) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO history_meta (name, value) VALUES (?, ?)",
                    (_THROUGH, sequence),
                )
        except sqlite3.Error as exc:
            raise self._fail("a write", exc) from exc

    def complete_through(self) -> int:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT value FROM history_meta WHERE name = ?", (_THROUGH,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("a read", exc) from exc
        return 0 if row is None else int(row[0])

    def count(self, kind: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM history WHERE kind = ? AND current = 1", (kind,)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def starting_state(
    snapshots: SnapshotStore, graph: GraphSpec, log_last_sequence: int
) -> tuple[BuildState, int]:
    """Where a service's fold starts: the newest usable snapshot with the history store
    beside it, read as of the snapshot until ``replay_done`` (the tail's replay writes the
    later versions again), or an empty state. A snapshot whose finished records the
    store does not hold (it was deleted, or is older) is not used. Returns (state, the
    sequence it holds)."""
    try:
        history = SqliteHistory(snapshots.directory / FILE_NAME)
    except HistoryBusy as exc:
        # its snapshots leave finished records to that store: fold the log from the start,
        # keeping history in memory (as a service without a state directory does)
        log.warning("%s: keeping finished records in memory, replaying the whole log", exc)
        return BuildState(graph), 0
    snapshot = snapshots.load(log_last_sequence)
    if snapshot is not None and not snapshot.state.history.persistent:
        history.close()  # a snapshot of a state that kept its history in memory: whole
        return snapshot.state, snapshot.sequence
    if snapshot is not None and snapshot.sequence > history.complete_through():
        log.warning(
            "not starting from the snapshot at %d: the history store %s holds the finished "
            "records only up to %d (replaying the whole log instead)",
            snapshot.sequence,
            history.path,
            history.complete_through(),
        )
        snapshot = None
    if snapshot is None:
        history.replay_from(0, log_last_sequence)
        return BuildState(graph, history), 0
    snapshot.state.attach_history(history)
    history.replay_from(snapshot.sequence, log_last_sequence)
    return snapshot.state, snapshot.sequence
