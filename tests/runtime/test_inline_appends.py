"""A local log's appends run on the event loop while they are fast, on a thread once one is
slow (issue 13.2: two thread hand-offs a step were ~0.5 ms of an unbatched run's cycle).

Through the HTTP API with a real SQLite Build Event Log: the test slows the disk down by
making one append sleep, and records on which thread each append ran.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from databuild.config import load_config
from databuild.core.errors import StorageUnavailable
from databuild.core.events import Event, EventPayload
from databuild.core.outcomes import RunSucceeded
from databuild.core.refs import PartitionRef
from databuild.executors.fake import FakeExecutor
from databuild.executors.port import RunRequest
from databuild.log.sqlite import SqliteEventLog
from databuild.runtime.controller import INLINE_APPEND_SECONDS, INLINE_WINDOW
from databuild.service.app import create_app
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.up]
outputs = ["up/{n}"]
command = ["true"]
"""


class WatchedLog(SqliteEventLog):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[str] = []
        self.slow_next = False
        self.fail_next = False

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self.threads.append(threading.current_thread().name)
        if self.fail_next:
            self.fail_next = False
            raise StorageUnavailable("database is locked (the test's)")
        if self.slow_next:
            self.slow_next = False
            time.sleep(INLINE_APPEND_SECONDS * 4)
        return super().append(payloads, timestamp)


def test_appends_move_to_the_loop_while_fast_and_off_it_after_a_slow_one(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_scenario(tmp_path), 60))


async def _scenario(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    log = WatchedLog(tmp_path / "bel.db")
    host = GraphHost(config, event_log=log, executor=FakeExecutor(slots=0))
    await host.start()
    loop_thread = threading.current_thread().name
    transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
    n = 0

    async def want() -> None:
        nonlocal n
        n += 1
        reply = await client.post("/api/v1/wants", json={"partition_refs": [f"up/{n}"]})
        assert reply.status_code in (200, 201), reply.text

    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            for _ in range(INLINE_WINDOW):
                await want()
            assert loop_thread not in log.threads  # on a thread until proven fast
            log.threads.clear()
            for _ in range(3):
                await want()
            assert log.threads == [loop_thread] * 3
            log.slow_next = True
            await want()  # slow, on the loop: the next ones go to a thread
            log.threads.clear()
            for _ in range(INLINE_WINDOW):
                await want()
            assert loop_thread not in log.threads
            assert len(log.threads) == INLINE_WINDOW
            log.threads.clear()
            await want()  # fast again INLINE_WINDOW times in a row: back on the loop
            assert log.threads == [loop_thread]
            for _ in range(INLINE_WINDOW):
                await want()
            log.threads.clear()
            log.fail_next = True
            await want()  # fails on the loop, retried on a thread: acknowledged all the same
            await want()  # and the next one waits on a thread too
            assert log.threads[0] == loop_thread
            assert loop_thread not in log.threads[1:] and len(log.threads) == 3
            listed = await client.get("/api/v1/wants")
            assert listed.status_code == 200
    finally:
        await host.stop()
    reopened = SqliteEventLog(tmp_path / "bel.db")
    try:  # every acknowledged want is in the log, whichever thread wrote it
        created = [e for e in reopened.read(0, 10_000) if type(e.payload).__name__ == "WantCreated"]
        assert len(created) == n
    finally:
        reopened.close()


class StagingLog(SqliteEventLog):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.appending = False
        self.fail_next = False

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self.appending = True
        try:
            time.sleep(0.001)  # a disk: long enough for the stager to run meanwhile
            if self.fail_next:
                self.fail_next = False
                raise StorageUnavailable("database is locked (the test's)")
            return super().append(payloads, timestamp)
        finally:
            self.appending = False


class StagingExecutor(FakeExecutor):
    """Records where each run was staged and whether the append was still going."""

    def __init__(self, log: StagingLog) -> None:
        super().__init__(slots=1)
        self.log = log
        self.seen: list[tuple[str, str, bool]] = []  # (what, run, during the append)
        self.threads: dict[str, str] = {}

    def stage(self, request: RunRequest) -> None:
        time.sleep(0.0002)
        self.threads[request.job_run_id] = threading.current_thread().name
        self.seen.append(("stage", request.job_run_id, self.log.appending))

    async def start(self, request: RunRequest) -> None:
        self.seen.append(("start", request.job_run_id, self.log.appending))
        await super().start(request)


def test_runs_are_staged_on_a_thread_beside_an_append_on_the_loop_and_started_after(
    tmp_path: Path,
) -> None:
    asyncio.run(asyncio.wait_for(_staging_scenario(tmp_path), 60))


async def _staging_scenario(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    log = StagingLog(tmp_path / "bel.db")
    executor = StagingExecutor(log)
    host = GraphHost(config, event_log=log, executor=executor)
    await host.start()
    loop_thread = threading.current_thread().name
    transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:

            async def build(n: int) -> str:
                reply = await client.post("/api/v1/wants", json={"partition_refs": [f"up/{n}"]})
                assert reply.status_code in (200, 201), reply.text
                for _ in range(2000):
                    if len(executor.running) == 1:
                        break
                    await asyncio.sleep(0.001)
                (run_id,) = executor.running
                executor.finish(run_id, RunSucceeded(0.0))
                for _ in range(2000):
                    if not executor.running and host.state.is_live(PartitionRef(f"up/{n}")):
                        break
                    await asyncio.sleep(0.001)
                return run_id

            first = await build(0)  # its append on a thread: staged on the loop meanwhile
            assert executor.threads[first] == loop_thread
            for n in range(1, INLINE_WINDOW):  # several appends each: fast ones in a row
                await build(n)
            inline = await build(100)  # appends on the loop now: staged beside them
            assert executor.threads[inline].startswith("databuild-stage")
            assert ("stage", inline, True) in executor.seen  # while the append went on
            assert executor.seen.index(("stage", inline, True)) < [
                s[:2] for s in executor.seen
            ].index(("start", inline))
            assert ("start", inline, False) in executor.seen  # after the commit
            log.fail_next = True  # an append that fails on the loop waits for its staging
            retried = await build(101)
            assert [s[:2] for s in executor.seen].count(("start", retried)) == 1
    finally:
        await host.stop()
