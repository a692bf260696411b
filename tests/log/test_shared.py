"""A PostgreSQL log shared by several services: the writer lease, fencing, commit listening.

Real sessions on the CI PostgreSQL, a fresh schema each; the paused writer is a real child
process stopped with SIGSTOP. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest

from databuild.core.errors import LeadershipLost
from databuild.core.events import WantExpired
from databuild.core.model import WantId
from databuild.log import PostgresEventLog

from .conftest import POSTGRES_URL, needs_postgres, postgres_schema_url

pytestmark = [pytest.mark.postgres, needs_postgres]

LEASE = 1.5
DEADLINE = 30.0


def batch(name: str) -> list[WantExpired]:
    return [WantExpired(WantId(name))]


def generations(schema: str) -> list[tuple[int, int]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT sequence, generation FROM "{schema}".build_events ORDER BY sequence'
        ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def wait_in_thread(log: PostgresEventLog, owner: str) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(log.wait_for_writer(owner)))
    thread.start()
    return thread, result


def test_a_standby_waits_then_takes_over_and_fences_the_old_writer(postgres_schema: str) -> None:
    name = f"dbt_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_schema_url(postgres_schema)}&application_name={name}"
    lost: list[str] = []
    with (
        PostgresEventLog(url, lease_seconds=LEASE) as old,
        PostgresEventLog(postgres_schema_url(postgres_schema), lease_seconds=LEASE) as new,
    ):
        old.advertise_url = "http://old:1"
        old.on_writer_lost = lost.append
        old.acquire_writer("old leader")
        old.append(batch("a"), 1.0)
        record = new.current_writer()
        assert record is not None and (record.owner, record.url) == ("old leader", "http://old:1")
        thread, result = wait_in_thread(new, "new leader")
        time.sleep(3 * LEASE)  # the heartbeat keeps the lease: the standby still waits
        assert thread.is_alive() and not result
        # What the server does to a paused leader's lease: end its idle transaction.
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND state = 'idle in transaction'",
                (name,),
            ).fetchall()
        assert ended == [(True,)]
        thread.join(DEADLINE)
        assert result == [True]
        with pytest.raises(LeadershipLost, match="lost leadership"):
            old.append(batch("stale"), 2.0)
        new.append(batch("b"), 3.0)
        deadline = time.monotonic() + DEADLINE
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost and "lost leadership" in lost[0]
        record = new.current_writer()
        assert record is not None and record.owner == "new leader"
        assert record.generation == (old.generation or 0) + 1
        assert [e.payload for e in new.read(0)] == [*batch("a"), *batch("b")]
    assert generations(postgres_schema) == [(1, 1), (2, 2)]


_PAUSED_WRITER = """
import sys
from databuild.core.errors import LeadershipLost
from databuild.core.events import WantExpired
from databuild.log import PostgresEventLog
log = PostgresEventLog(sys.argv[1], lease_seconds=float(sys.argv[2]))
log.acquire_writer("paused writer")
print("held", flush=True)
sys.stdin.readline()
try:
    log.append([WantExpired("late")], 9.0)
    print("appended", flush=True)
except LeadershipLost as exc:
    print("refused:", exc, flush=True)
"""


def test_a_paused_writer_loses_the_lease_and_cannot_append_when_resumed(
    postgres_schema: str,
) -> None:
    url = postgres_schema_url(postgres_schema)
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, url, str(LEASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGSTOP)
        paused = time.monotonic()
        with PostgresEventLog(url, lease_seconds=LEASE) as successor:
            thread, result = wait_in_thread(successor, "successor")
            thread.join(DEADLINE)
            took = time.monotonic() - paused
            assert result == [True]
            assert took < LEASE + 5, f"took over after {took:.1f} s"
            successor.append(batch("mine"), 5.0)
            os.kill(child.pid, signal.SIGCONT)
            child.stdin.write("\n")
            child.stdin.flush()
            answer = child.stdout.readline()
            assert answer.startswith("refused: lost leadership"), answer
            assert [e.payload for e in successor.read(0)] == batch("mine")
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait(DEADLINE)


def test_a_listener_wakes_on_each_commit_without_polling(postgres_schema: str) -> None:
    url = postgres_schema_url(postgres_schema)
    with PostgresEventLog(url) as writer, PostgresEventLog(url) as follower:
        listener = follower.listen()
        try:
            assert listener.wait(5.0), "the first wait (re)connects and says: read now"
            assert not listener.wait(0.2), "nothing committed, nothing announced"
            started = time.monotonic()
            woke: list[float] = []
            thread = threading.Thread(
                target=lambda: woke.append(time.monotonic()) if listener.wait(DEADLINE) else None
            )
            thread.start()
            time.sleep(0.2)
            writer.append(batch("x"), 1.0)
            thread.join(DEADLINE)
            assert woke and woke[0] - started < 5.0
            assert [e.sequence for e in follower.read(0)] == [1]
        finally:
            listener.close()


def test_stop_waiting_ends_a_blocked_wait(postgres_schema: str) -> None:
    url = postgres_schema_url(postgres_schema)
    with PostgresEventLog(url) as holder, PostgresEventLog(url) as standby:
        holder.acquire_writer("holder")
        thread, result = wait_in_thread(standby, "standby")
        time.sleep(0.3)
        standby.stop_waiting()
        thread.join(DEADLINE)
        assert result == [False]


def test_a_closed_writer_leaves_no_url_but_keeps_its_generation(postgres_schema: str) -> None:
    url = postgres_schema_url(postgres_schema)
    with PostgresEventLog(url) as first:
        first.advertise_url = "http://a:1"
        first.acquire_writer("first")
    with PostgresEventLog(url) as second:
        record = second.current_writer()
        assert record is not None and (record.owner, record.url, record.generation) == ("", "", 1)
        second.acquire_writer("second")
        record = second.current_writer()
        assert record is not None and record.generation == 2


def test_a_new_writer_ends_a_stale_append_that_holds_the_table(postgres_schema: str) -> None:
    """An append paused inside its COPY is not idle: the server would keep its table lock
    for ever. A session holding the lock while busy stands in for it here."""
    url = postgres_schema_url(postgres_schema)
    with PostgresEventLog(url, lease_seconds=LEASE) as log:
        log.append(batch("before"), 1.0)
        stale = psycopg.connect(POSTGRES_URL, autocommit=True)
        stale_pid = stale.info.backend_pid
        hold = threading.Thread(target=_hold_table, args=(stale, postgres_schema), daemon=True)
        hold.start()
        time.sleep(0.5)
        started = time.monotonic()
        log.acquire_writer("new writer")
        took = time.monotonic() - started
        hold.join(DEADLINE)
        assert LEASE - 0.2 < took < LEASE + 5, f"took the table after {took:.1f} s"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            alive = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (stale_pid,)
            ).fetchone()
        assert alive == (0,), "the stale session was terminated"
        assert [e.sequence for e in log.append(batch("after"), 2.0)] == [2]


def _hold_table(conn: psycopg.Connection, schema: str) -> None:
    try:
        with conn.transaction():
            conn.execute(f'LOCK TABLE "{schema}".build_events IN EXCLUSIVE MODE')
            conn.execute("SELECT pg_sleep(60)")
    except psycopg.Error:
        pass  # terminated, as intended
    finally:
        conn.close()
