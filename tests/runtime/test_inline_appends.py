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
from databuild.executors.fake import FakeExecutor
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
