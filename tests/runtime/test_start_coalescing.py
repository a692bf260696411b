"""A run's start shares the commit of what follows it (issue 13.2: one fsync per short run).

A step holding nothing but run starts waits up to ``start_coalesce_seconds`` for more input:
a short run's start and result go into the Build Event Log in one append, and the run's
recorded start is still when it began (its measured duration), not when it was written. A
long run's start is committed on its own once the window is over, while the run goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from databuild.config import load_config
from databuild.core.events import Event, EventPayload
from databuild.core.outcomes import RunSucceeded
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
TIMEOUT = 30.0


class CountingLog(InMemoryEventLog):
    """Remembers the event types of every append, one list per commit."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store)
        self.commits: list[list[str]] = []

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self.commits.append([type(p).__name__ for p in payloads])
        return super().append(payloads, timestamp)


async def until(condition: Callable[[], object], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def run_one(tmp_path: Path, window: float, finish_after_start_commit: bool) -> CountingLog:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    log = CountingLog(InMemoryStore())
    executor = FakeExecutor(slots=1)

    async def scenario() -> None:
        host = GraphHost(config, event_log=log, executor=executor)
        await host.start()
        assert host.controller is not None
        host.controller.start_coalesce_seconds = window
        transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                reply = await client.post("/api/v1/wants", json={"partition_refs": ["up/1"]})
                assert reply.status_code == 200, reply.text
                await until(lambda: executor.running, "the run to start")
                (rid,) = executor.running
                if finish_after_start_commit:
                    await until(
                        lambda: any("JobRunStarted" in c for c in log.commits),
                        "the start to be committed",
                    )
                    assert rid in executor.running  # recorded while it still runs
                executor.finish(rid, RunSucceeded(0.5))
                await until(lambda: any("JobRunSucceeded" in c for c in log.commits), "the result")
                run = host.state.runs[rid]
                assert run.finished_at - run.started_at >= 0.5 - 1e-9
        finally:
            await host.stop()

    asyncio.run(scenario())
    return log


def test_a_short_runs_start_and_result_are_one_commit(tmp_path: Path) -> None:
    log = run_one(tmp_path, window=TIMEOUT, finish_after_start_commit=False)
    (together,) = [c for c in log.commits if "JobRunStarted" in c]
    assert "JobRunSucceeded" in together
    assert together.index("JobRunStarted") < together.index("JobRunSucceeded")


def test_a_long_runs_start_is_committed_while_it_runs(tmp_path: Path) -> None:
    log = run_one(tmp_path, window=0.01, finish_after_start_commit=True)
    assert ["JobRunStarted"] in log.commits
    started = log.commits.index(["JobRunStarted"])
    assert any("JobRunSucceeded" in c for c in log.commits[started + 1 :])
