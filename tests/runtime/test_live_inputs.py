"""A run of a job with input hints is told which hinted inputs were live at dispatch
(``RunRequest.live_inputs``, then ``$DATABUILD_LIVE_INPUTS``): its SDK need not ask."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from databuild.config import load_config
from databuild.core.model import JobRunId
from databuild.core.outcomes import RunSucceeded
from databuild.executors.fake import FakeExecutor
from databuild.executors.local import _environment
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.service.app import create_app
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.a]
outputs = ["a/{n}"]
command = ["true"]

[jobs.b]
outputs = ["b/{n}"]
command = ["true"]
inputs = ["a/{n}"]
"""
TIMEOUT = 30.0


def test_the_hinted_inputs_live_at_dispatch_reach_the_run(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    executor = FakeExecutor(slots=1)

    async def one_running() -> JobRunId:
        async with asyncio.timeout(TIMEOUT):
            while not executor.running:
                await asyncio.sleep(0.001)
        (rid,) = executor.running
        return rid

    async def scenario() -> None:
        host = GraphHost(config, event_log=InMemoryEventLog(InMemoryStore()), executor=executor)
        await host.start()
        transport = httpx.ASGITransport(app=create_app(host, manage_host=False))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                reply = await client.post("/api/v1/wants", json={"partition_refs": ["b/1"]})
                assert reply.status_code == 200, reply.text
                executor.finish(await one_running(), RunSucceeded(0.1))  # a/1 first
                await one_running()  # then b/1, once a/1 is live
        finally:
            await host.stop()

    asyncio.run(scenario())
    first, second = executor.started
    assert first.job.name == "a" and first.live_inputs == ()
    assert second.job.name == "b" and second.live_inputs == ("a/1",)
    assert _environment(second)["DATABUILD_LIVE_INPUTS"] == "a/1"
    assert "DATABUILD_LIVE_INPUTS" not in _environment(first)
