"""Transient storage faults are retried (issue 14.1); persistent ones stop the controller.

A log that fails like a lost connection or a busy database (``StorageUnavailable``) until
the test heals it: the step's events go in exactly once, the API refuses writes with 503
and the reason while it is down, ``/healthz`` says ``degraded`` and ``/metrics`` shows it;
an append whose commit went through before the error (outcome unknown) is not repeated;
a persistent fault, or one longer than the grace, stops the controller (``failed``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from databuild.config import load_config
from databuild.core.errors import InvalidInput, StorageError, StorageUnavailable
from databuild.core.events import Event, EventPayload, WantCreated
from databuild.executors.fake import FakeExecutor
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.runtime.controller import retry_delay, storage_grace_from
from databuild.service.app import create_app
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.up]
outputs = ["up/{n}"]
command = ["true"]
"""
TIMEOUT = 30.0


class FlakyLog(InMemoryEventLog):
    """Appends fail with ``error`` until ``heal`` is set; ``commit_first`` makes each
    failing append commit before it raises (the connection died at COMMIT)."""

    def __init__(self, store: InMemoryStore, error: StorageError, commit_first: bool) -> None:
        super().__init__(store)
        self.error = error
        self.commit_first = commit_first
        self.broken = False
        self.heal = threading.Event()
        self.failed_once = threading.Event()
        self.appends = 0

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self.appends += 1
        if self.broken and not self.heal.is_set():
            if self.commit_first:
                super().append(payloads, timestamp)
                self.heal.set()  # the one unknown outcome; the retry must find it
            self.failed_once.set()
            raise self.error
        return super().append(payloads, timestamp)


@asynccontextmanager
async def served(
    tmp_path: Path, log: InMemoryEventLog, grace: float = 60.0
) -> AsyncIterator[tuple[GraphHost, httpx.AsyncClient]]:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    host = GraphHost(config, event_log=log, executor=FakeExecutor(slots=0))
    await host.start()
    assert host.controller is not None
    host.controller.storage_grace = grace
    transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        try:
            yield host, client
        finally:
            await host.stop()


async def wait_until_failed_once(log: FlakyLog) -> None:
    await asyncio.wait_for(asyncio.to_thread(log.failed_once.wait, TIMEOUT), TIMEOUT)


def want_events(store: InMemoryStore) -> list[str]:
    events = InMemoryEventLog(store).read(0)
    return [e.payload.want.partition_ref for e in events if isinstance(e.payload, WantCreated)]


def sequences_are_gap_free(store: InMemoryStore) -> bool:
    events = InMemoryEventLog(store).read(0)
    return [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_a_lost_connection_is_retried_the_api_says_so_and_nothing_is_doubled(
    tmp_path: Path,
) -> None:
    store = InMemoryStore()
    log = FlakyLog(store, StorageUnavailable("connection lost: terminating connection"), False)

    async def scenario() -> None:
        async with served(tmp_path, log) as (host, client):
            assert (
                await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
            ).is_success
            log.broken = True
            pending = asyncio.create_task(
                client.post("/api/v1/wants", json={"partition_refs": ["up/2"]})
            )
            await wait_until_failed_once(log)
            await asyncio.sleep(0)  # let the controller mark the outage
            while host.controller is not None and not host.controller.storage_down:
                await asyncio.sleep(0.01)

            refused = await client.post("/api/v1/wants", json={"partition_refs": ["up/3"]})
            assert refused.status_code == 503
            assert "terminating connection" in refused.json()["error"]
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert "terminating connection" in health.json()["message"]
            ready = await client.get("/readyz")  # alive, but send no traffic here now
            assert ready.status_code == 503
            assert not ready.json()["ready"]
            assert "terminating connection" in ready.json()["storage"]
            metrics = (await client.get("/metrics")).text
            assert "databuild_storage_up 0" in metrics
            wants = await client.get("/api/v1/wants")  # reads: from memory
            assert wants.status_code == 200

            log.heal.set()
            accepted = await asyncio.wait_for(pending, TIMEOUT)
            assert accepted.status_code == 200, accepted.text
            assert (await client.get("/healthz")).json()["status"] == "ok"
            assert (await client.get("/readyz")).json()["ready"] is True
            metrics = (await client.get("/metrics")).text
            assert "databuild_storage_up 1" in metrics
            assert "databuild_storage_retries_total 0" not in metrics
            again = await client.post("/api/v1/wants", json={"partition_refs": ["up/4"]})
            assert again.status_code == 200

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert want_events(store) == ["up/1", "up/2", "up/4"]
    assert sequences_are_gap_free(store)


def test_an_append_that_committed_before_its_error_is_not_appended_again(tmp_path: Path) -> None:
    store = InMemoryStore()
    log = FlakyLog(store, StorageUnavailable("server closed the connection unexpectedly"), True)

    async def scenario() -> None:
        async with served(tmp_path, log) as (_, client):
            log.broken = True
            reply = await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
            assert reply.status_code == 200, reply.text
            assert log.failed_once.is_set()
            follow = await client.post("/api/v1/wants", json={"partition_refs": ["up/2"]})
            assert follow.status_code == 200

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert want_events(store) == ["up/1", "up/2"]
    assert sequences_are_gap_free(store)


def test_a_persistent_fault_stops_the_controller_at_once(tmp_path: Path) -> None:
    store = InMemoryStore()
    log = FlakyLog(store, StorageError('relation "build_events" does not exist'), False)

    async def scenario() -> None:
        async with served(tmp_path, log) as (host, client):
            log.broken = True
            reply = await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
            assert reply.status_code == 503
            assert host.controller is not None
            await asyncio.wait_for(host.controller.failed.wait(), TIMEOUT)
            assert log.appends == 1, "a persistent fault is not retried"
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "failed"
            assert "does not exist" in health.json()["message"]

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_a_transient_fault_longer_than_the_grace_stops_the_controller(tmp_path: Path) -> None:
    store = InMemoryStore()
    log = FlakyLog(store, StorageUnavailable("No space left on device"), False)

    async def scenario() -> None:
        async with served(tmp_path, log, grace=0.3) as (host, client):
            log.broken = True
            reply = await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
            assert reply.status_code == 503
            assert "storage grace of 0.3 s" in reply.json()["error"]
            assert host.controller is not None
            assert host.controller.failed.is_set()
            assert log.appends > 1, "it was retried within the grace"

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    assert want_events(store) == []


def test_the_back_off_is_capped_and_jittered() -> None:
    import random

    rng = random.Random(7)
    delays = [retry_delay(attempt, rng) for attempt in range(40)]
    assert all(0.025 <= d <= 5.0 for d in delays)
    assert delays[0] < 0.05 < max(delays[:10]) and max(delays) <= 5.0
    assert len({round(d, 6) for d in delays[-10:]}) > 1, "jittered, not in lock-step"


def test_the_grace_comes_from_the_environment_and_bad_values_are_named() -> None:
    assert storage_grace_from({}) == 300.0
    assert storage_grace_from({"DATABUILD_STORAGE_GRACE": "12.5"}) == 12.5
    with pytest.raises(InvalidInput, match=r"\$DATABUILD_STORAGE_GRACE must be .* got '-1'"):
        storage_grace_from({"DATABUILD_STORAGE_GRACE": "-1"})
    with pytest.raises(InvalidInput, match="got 'soon'"):
        storage_grace_from({"DATABUILD_STORAGE_GRACE": "soon"})
