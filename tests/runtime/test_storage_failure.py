"""A log that stops taking writes (a full disk, a lost database): the service says so and
acknowledges nothing it did not record; a restart on the log converges with nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx

from databuild.config import load_config
from databuild.core.errors import StorageError
from databuild.core.events import Event, EventPayload
from databuild.executors.fake import FakeExecutor
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.service.app import create_app
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.up]
outputs = ["up/{n}"]
command = ["true"]
"""


class BrokenDisk(InMemoryEventLog):
    """Appends work until ``broken`` is set, then fail as a full disk would."""

    broken = False

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        if self.broken:
            raise StorageError("cannot append to the Build Event Log: No space left on device")
        return super().append(payloads, timestamp)


def test_a_failing_log_stops_the_service_cleanly_and_a_restart_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    store = InMemoryStore()

    async def scenario() -> None:
        log = BrokenDisk(store)
        host = GraphHost(config, event_log=log, executor=FakeExecutor(slots=0))
        await host.start()
        app = create_app(host, manage_host=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            first = await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
            assert first.status_code == 200
            acknowledged = first.json()["wants"][0]["want_id"]

            log.broken = True
            second = await client.post("/api/v1/wants", json={"partition_refs": ["up/2"]})
            assert second.status_code == 503
            assert "No space left on device" in second.json()["error"]
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "failed"
            third = await client.post("/api/v1/wants", json={"partition_refs": ["up/3"]})
            assert third.status_code == 503  # stopped: no more half-recorded work
            # a follower long-polling for events (`databuild build`) is told, instead of
            # getting empty pages for ever
            last = health.json()["last_sequence"]
            follow = await client.get("/api/v1/events", params={"after": last, "wait": 30})
            assert follow.status_code == 503
            assert "No space left on device" in follow.json()["error"]
        await host.stop()

        # restart on the same log (the disk has room again): the acknowledged want is there,
        # the unacknowledged ones are not, and the service works again
        again = GraphHost(config, event_log=InMemoryEventLog(store), executor=FakeExecutor(slots=0))
        await again.start()
        try:
            wanted = {w.want.partition_ref for w in again.state.wants.values()}
            assert acknowledged in again.state.wants
            assert wanted == {"up/1"}
            app = create_app(again, manage_host=False)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                retry = await c.post("/api/v1/wants", json={"partition_refs": ["up/2"]})
                assert retry.status_code == 200
        finally:
            await again.stop()

    asyncio.run(scenario())
