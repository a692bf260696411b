"""Which storage faults the adapters call transient (``StorageUnavailable``: the runtime
retries) and which persistent (plain ``StorageError``: the service exits), on real faults:
a PostgreSQL session terminated by the server, a SQLite file locked by another process, a
table or schema that is gone. After a transient fault the same log object works again."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from databuild.core.errors import LogLocked, StorageError, StorageUnavailable
from databuild.core.events import WantExpired
from databuild.core.model import WantId
from databuild.log import PostgresEventLog, SqliteEventLog

from .conftest import POSTGRES_URL, needs_postgres, postgres_schema_url

BATCH = [WantExpired(WantId("w"))]


def terminate(application_name: str) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
@needs_postgres
def test_a_terminated_postgres_session_is_transient_and_the_log_reconnects(
    postgres_schema: str,
) -> None:
    name = f"dbt_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_schema_url(postgres_schema)}&application_name={name}"
    with PostgresEventLog(url) as log:
        log.acquire_writer("first owner")
        log.append(BATCH, 1.0)
        assert log.last_sequence() == 1  # opens this thread's reader session
        assert terminate(name) >= 3  # the writer's, the reader's and the lock's sessions
        assert [e.sequence for e in log.read(0)] == [1], "a read reconnects by itself"
        with pytest.raises(StorageUnavailable, match="terminating connection"):
            log.append(BATCH, 2.0)
        assert [e.sequence for e in log.append(BATCH, 3.0)] == [2]
        log.acquire_writer("first owner")  # the lock went with its session: taken again
        with PostgresEventLog(url) as other, pytest.raises(LogLocked, match="first owner"):
            other.acquire_writer("second owner")
        assert [e.timestamp for e in log.read(0)] == [1.0, 3.0]


@pytest.mark.postgres
@needs_postgres
def test_a_dropped_postgres_schema_is_persistent(postgres_schema: str) -> None:
    with PostgresEventLog(postgres_schema_url(postgres_schema)) as log:
        log.append(BATCH, 1.0)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(postgres_schema)))
        with pytest.raises(StorageError, match="does not exist") as caught:
            log.append(BATCH, 2.0)
        assert not isinstance(caught.value, StorageUnavailable)


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_sqlite_locked_by_another_process_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    with SqliteEventLog(path, busy_timeout=0.1) as log:
        log.append(BATCH, 1.0)
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdin is not None
            assert locker.stdout.readline().strip() == "locked"
            with pytest.raises(StorageUnavailable, match=r"bel\.sqlite.*database is locked"):
                log.append(BATCH, 2.0)
            locker.stdin.write("release\n")
            locker.stdin.flush()
            assert locker.wait(timeout=30) == 0
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait()
        assert [e.sequence for e in log.append(BATCH, 3.0)] == [2]


def test_a_dropped_sqlite_table_is_persistent(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    with SqliteEventLog(path) as log:
        log.append(BATCH, 1.0)
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE build_events")
        with pytest.raises(StorageError, match="no such table") as caught:
            log.append(BATCH, 2.0)
        assert not isinstance(caught.value, StorageUnavailable)
