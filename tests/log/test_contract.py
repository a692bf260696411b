"""The Build Event Log contract: what every backend (memory, SQLite, PostgreSQL) must do.

One suite, parametrised by the ``backend`` fixture (``conftest.py``): sequence numbering,
all-or-nothing batches, read filters, durability across reopen, the writer lock (between
log objects and between processes) and tailing readers under concurrent writers. Tests
use only the port's public methods.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

import pytest

from databuild.core.errors import InvalidInput, LogLocked, StorageError
from databuild.core.events import (
    Event,
    EventPayload,
    JobRunStarted,
    PartitionLive,
    WantCreated,
    WantExpired,
)
from databuild.core.model import JobRunId, Want, WantId, WantSource
from databuild.core.refs import PartitionRef
from databuild.log import BuildEventLog

from .conftest import Backend

SAFETY_TIMEOUT = 120.0  # only so that a broken implementation fails instead of hanging


def expired(name: str) -> WantExpired:
    return WantExpired(WantId(name))


def want_created(ref: str) -> WantCreated:
    want_id = WantId(f"w-{ref}")
    return WantCreated(
        Want(want_id, want_id, None, PartitionRef(ref), 1704067200, 0, 3600, WantSource.API)
    )


def names(events: list[Event]) -> list[str]:
    return [e.payload.want_id for e in events if isinstance(e.payload, WantExpired)]


def test_an_empty_log_has_nothing(backend: Backend) -> None:
    log = backend.open()
    assert log.last_sequence() == 0
    assert log.read() == []
    assert log.append([], 1.0) == []
    assert log.last_sequence() == 0


def test_sequences_are_consecutive_from_one(backend: Backend) -> None:
    log = backend.open()
    first = log.append([expired("a"), expired("b"), expired("c")], 10.0)
    second = log.append([expired("d")], 11.0)
    assert [e.sequence for e in first + second] == [1, 2, 3, 4]
    assert log.last_sequence() == 4
    stored = log.read()
    assert stored == first + second
    assert [e.timestamp for e in stored] == [10.0, 10.0, 10.0, 11.0]


def test_every_payload_kind_is_stored_as_given(backend: Backend) -> None:
    log = backend.open()
    payloads: list[EventPayload] = [
        want_created("daily/date=2024-01-01"),
        JobRunStarted(JobRunId("r00000001"), 4242),
        PartitionLive(PartitionRef("daily/date=2024-01-01"), None, "upstream-a"),
    ]
    appended = log.append(payloads, 5.5)
    assert [e.payload for e in log.read()] == payloads == [e.payload for e in appended]


def test_a_batch_with_an_unencodable_payload_writes_nothing(backend: Backend) -> None:
    log = backend.open()
    log.append([expired("before")], 1.0)
    bad = JobRunStarted(JobRunId("r1"), 2**70)  # pid does not fit the proto's int64
    with pytest.raises(InvalidInput, match="job_run_started"):
        log.append([expired("x"), bad, expired("y")], 2.0)
    assert log.last_sequence() == 1
    assert [e.sequence for e in log.append([expired("after")], 3.0)] == [2]
    assert names(log.read()) == ["before", "after"]


def test_a_closed_log_refuses_to_write_and_nothing_is_written(backend: Backend) -> None:
    log = backend.open()
    log.append([expired("kept")], 1.0)
    log.close()
    log.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        log.append([expired("lost")], 2.0)
    with pytest.raises(StorageError, match="closed"):
        log.read()
    assert names(backend.open().read()) == ["kept"]


def test_read_after_limit_and_types(backend: Backend) -> None:
    log = backend.open()
    log.append([expired("1"), want_created("a/b"), expired("3"), want_created("c/d")], 1.0)
    log.append([JobRunStarted(JobRunId("r1"), 7)], 2.0)
    assert [e.sequence for e in log.read(after=2)] == [3, 4, 5]
    assert [e.sequence for e in log.read(after=1, limit=2)] == [2, 3]
    assert log.read(after=5) == []
    assert [e.sequence for e in log.read(types={"want_created"})] == [2, 4]
    assert [e.sequence for e in log.read(after=2, types=["want_created", "job_run_started"])] == [
        4,
        5,
    ]
    assert [e.sequence for e in log.read(types=["want_expired"], limit=1)] == [1]
    assert log.read(types=[]) == []


def test_read_rejects_bad_arguments_with_a_clear_message(backend: Backend) -> None:
    log = backend.open()
    with pytest.raises(InvalidInput, match=r"unknown event type.*'nope'"):
        log.read(types=["want_created", "nope"])
    with pytest.raises(InvalidInput, match="limit"):
        log.read(limit=0)
    with pytest.raises(InvalidInput, match="collection of names"):
        log.read(types="want_created")


def test_events_survive_close_and_reopen(backend: Backend) -> None:
    log = backend.open()
    written = log.append([expired("a"), want_created("x/y")], 1.0)
    log.close()
    reopened = backend.open()
    assert reopened.read() == written
    assert [e.sequence for e in reopened.append([expired("b")], 2.0)] == [3]


def test_context_manager_closes(backend: Backend) -> None:
    with backend.open() as log:
        log.append([expired("a")], 1.0)
    with pytest.raises(StorageError):
        log.last_sequence()


def test_writer_lock_is_exclusive_between_log_objects(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.acquire_writer("service A on host-1 pid 100")
    first.acquire_writer("service A on host-1 pid 100")  # the holder may ask again
    with pytest.raises(LogLocked, match="service A on host-1 pid 100"):
        second.acquire_writer("service B")
    first.close()
    second.acquire_writer("service B")
    with pytest.raises(LogLocked, match="service B"):
        backend.open().acquire_writer("service C")


_HOLDER = """
import sys
from databuild.log import open_log
log = open_log(sys.argv[1])
log.acquire_writer(sys.argv[2])
print("held", flush=True)
sys.stdin.readline()
log.close()
print("released", flush=True)
"""


def _hold_in_child(url: str, owner: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url, owner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def _acquire_eventually(log: BuildEventLog, owner: str) -> None:
    """The server may take a moment to notice a killed client; poll, do not sleep blindly."""
    deadline = time.monotonic() + SAFETY_TIMEOUT
    while True:
        try:
            log.acquire_writer(owner)
            return
        except LogLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_writer_lock_is_exclusive_between_processes(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    child = _hold_in_child(sql_backend.url, "child process service")
    try:
        log = sql_backend.open()
        with pytest.raises(LogLocked, match="child process service"):
            log.acquire_writer("parent")
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        _acquire_eventually(log, "parent")  # the server ends the child's session a moment later
    finally:
        child.kill()
        child.wait(SAFETY_TIMEOUT)


def test_writer_lock_dies_with_a_killed_process(sql_backend: Backend) -> None:
    assert sql_backend.url is not None
    child = _hold_in_child(sql_backend.url, "doomed service")
    log = sql_backend.open()
    with pytest.raises(LogLocked, match="doomed service"):
        log.acquire_writer("successor")
    child.kill()  # SIGKILL: no close(), no cleanup
    child.wait(SAFETY_TIMEOUT)
    _acquire_eventually(log, "successor")
    with pytest.raises(LogLocked, match="successor"):
        sql_backend.open().acquire_writer("third")


def test_tailing_reader_sees_every_event_once_in_order_with_concurrent_writers(
    backend: Backend,
) -> None:
    writers, appends_per_writer = 4, 40
    rng = random.Random(7)
    plans = [[rng.randint(1, 3) for _ in range(appends_per_writer)] for _ in range(writers)]
    total = sum(map(sum, plans))
    logs = [backend.open() for _ in range(writers)]
    reader_log = backend.open()
    seen: list[Event] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(index: int) -> None:
        try:
            for step, size in enumerate(plans[index]):
                batch = [expired(f"{index}:{step}:{k}") for k in range(size)]
                logs[index].append(batch, float(step))
        except BaseException as exc:
            errors.append(exc)

    def tail() -> None:
        last = 0
        try:
            while len(seen) < total and not stop.is_set():
                for event in reader_log.read(after=last, limit=7):
                    seen.append(event)
                    last = event.sequence
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    reader = threading.Thread(target=tail)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY_TIMEOUT)
    reader.join(SAFETY_TIMEOUT)
    stop.set()
    assert errors == []
    assert [e.sequence for e in seen] == list(range(1, total + 1))
    assert seen == reader_log.read(limit=total + 1)
    for index in range(writers):
        mine = [n for n in names(seen) if n.startswith(f"{index}:")]
        expected = [f"{index}:{s}:{k}" for s, size in enumerate(plans[index]) for k in range(size)]
        assert mine == expected
    # Each batch is contiguous: no other writer's event lands inside it.
    batches: dict[tuple[str, str], list[int]] = {}
    for event in seen:
        writer, step, _ = names([event])[0].split(":")
        batches.setdefault((writer, step), []).append(event.sequence)
    for sequences in batches.values():
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
