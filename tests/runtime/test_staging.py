"""A run is staged while the step that decided it is committed, and starts only after.

The controller hands the executor the runs a step decided (``Executor.stage``) while the
step's events are on their way to disk, so that the local executor creates each run's
directory and log file then instead of after the commit; the job itself is started only
once the commit is done, as before (issue 13.2: a run's start costs the loop less).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx

from databuild.config import load_config
from databuild.core.events import Event, EventPayload, JobRunQueued
from databuild.executors.fake import FakeExecutor
from databuild.executors.port import RunRequest
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
TIMEOUT = 30.0


class HeldLog(InMemoryEventLog):
    """An append that records a run's queueing waits until the test lets it go."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store)
        self.appending = threading.Event()
        self.release = threading.Event()
        self.committed: list[str] = []

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        if any(isinstance(p, JobRunQueued) for p in payloads):
            self.appending.set()
            assert self.release.wait(TIMEOUT), "the test never released the append"
        stored = super().append(payloads, timestamp)
        self.committed.extend(type(p).__name__ for p in payloads)
        return stored


class StagingExecutor(FakeExecutor):
    def __init__(self, log: HeldLog) -> None:
        super().__init__(slots=1)
        self.log = log
        self.order: list[tuple[str, str, bool]] = []  # (what, run id, queued committed?)

    def stage(self, request: RunRequest) -> None:
        self.order.append(("stage", request.job_run_id, "JobRunQueued" in self.log.committed))

    async def start(self, request: RunRequest) -> None:
        self.order.append(("start", request.job_run_id, "JobRunQueued" in self.log.committed))
        await super().start(request)


def test_a_run_is_staged_during_its_commit_and_started_after_it(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    log = HeldLog(InMemoryStore())
    executor = StagingExecutor(log)

    async def scenario() -> None:
        host = GraphHost(config, event_log=log, executor=executor)
        await host.start()
        transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                # the want's creation and its run's queueing are one commit: held, so the
                # request waits with it
                posting = asyncio.create_task(
                    client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
                )
                assert await asyncio.to_thread(log.appending.wait, TIMEOUT)
                async with asyncio.timeout(TIMEOUT):
                    while not executor.order:
                        await asyncio.sleep(0.001)
                # staged while the append is held; nothing started yet
                (staged,) = executor.order
                assert staged[0] == "stage" and staged[2] is False
                assert not executor.running
                log.release.set()
                reply = await posting
                assert reply.status_code == 200, reply.text
                async with asyncio.timeout(TIMEOUT):
                    while not executor.running:
                        await asyncio.sleep(0.001)
                assert executor.order == [("stage", staged[1], False), ("start", staged[1], True)]
        finally:
            log.release.set()
            await host.stop()

    asyncio.run(scenario())
