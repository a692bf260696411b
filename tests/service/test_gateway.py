"""The gateway's answer to the jobs' question is the FastAPI app's answer.

``GET /api/v1/partitions?ref=...`` (only ``ref`` parameters) is answered by the gateway
without the FastAPI app; the same question with one more parameter that changes nothing
(``limit``) goes to the FastAPI route. Against a real ``databuild serve`` with a built
calendar, both must give the same status and the same JSON for any list of refs, valid or
not, live or not. In process, the gateway of an embedded service must answer valid
questions without building the FastAPI app at all (that is what a build saves), and hand a
bad one to the app, whose error names the bad ref.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from databuild.config import load_config
from databuild.executors.fake import FakeExecutor
from databuild.service.gateway import ServiceApp
from databuild.service.host import GraphHost

from .graphs import create_wants, wait_for_want

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]

LIVE = [f"raw/date=2024-01-0{d}" for d in range(1, 9)] + ["summary/all", "weekly/week=2024-W01"]
NOT_LIVE = ["raw/date=2031-01-01", "nothing/here", "é/ü=ø", "a b/c%20d", "x" * 512]
INVALID = ["", "a//b", "../up", "/abs", "trail/", "x" * 513, "back\\slash", "nul\x00"]


@pytest.fixture(scope="module")
def built(calendar_factory: Callable[[], Path], launch_service: Launcher) -> Iterator[str]:
    directory = calendar_factory()
    config = directory / "databuild.toml"
    config.write_text(config.read_text().replace("${CALENDAR_DAYS:-365}", "8"))
    proc, url = launch_service(directory)
    with httpx.Client(base_url=url, timeout=30) as client:
        (want,) = create_wants(client, "summary/all")
        assert wait_for_want(client, want["want_id"])["status"] == "satisfied"
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _ask(client: httpx.Client, refs: list[str], *extra: tuple[str, str]) -> tuple[int, Any]:
    response = client.get("/api/v1/partitions", params=[*(("ref", r) for r in refs), *extra])
    return response.status_code, response.json()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    refs=st.lists(
        st.one_of(st.sampled_from(LIVE + NOT_LIVE + INVALID), st.text(min_size=0, max_size=40)),
        min_size=1,
        max_size=30,
    )
)
def test_the_fast_answer_is_the_routes_answer(built: str, refs: list[str]) -> None:
    with httpx.Client(base_url=built, timeout=30) as client:
        fast = _ask(client, refs)
        full = _ask(client, refs, ("limit", "100"))
    assert fast == full
    if fast[0] == 200:
        assert [p["partition_ref"] for p in fast[1]["partitions"]] == refs


def test_live_inputs_are_reported_live(built: str) -> None:
    with httpx.Client(base_url=built, timeout=30) as client:
        status, body = _ask(client, [*LIVE, "raw/date=2031-01-01"])
    assert status == 200
    statuses = {p["partition_ref"]: p["status"] for p in body["partitions"]}
    assert all(statuses[r] == "live" for r in LIVE)
    assert statuses["raw/date=2031-01-01"] != "live"


def test_an_embedded_gateway_answers_jobs_without_the_fastapi_app(
    calendar_factory: Callable[[], Path],
) -> None:
    directory = calendar_factory()
    host = GraphHost(load_config(directory / "databuild.toml", {}), executor=FakeExecutor())
    gateway = ServiceApp(host, eager=False)

    async def scenario() -> tuple[list[httpx.Response], bool, httpx.Response, bool]:
        await host.start()
        try:
            transport = httpx.ASGITransport(app=gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                good = [
                    await client.get("/api/v1/partitions", params=[("ref", r) for r in LIVE]),
                    await client.get("/api/v1/partitions", params={"ref": "é/ü=ø"}),
                ]
                built_before = gateway._app is not None
                bad = await client.get(
                    "/api/v1/partitions", params=[("ref", "ok/one"), ("ref", "a//b")]
                )
                return good, built_before, bad, gateway._app is not None
        finally:
            await host.stop()

    good, built_before, bad, built_after = asyncio.run(scenario())
    assert [r.status_code for r in good] == [200, 200]
    assert [p["partition_ref"] for p in good[0].json()["partitions"]] == LIVE
    assert good[1].json()["partitions"][0]["status"] == "absent"
    assert not built_before, "a valid question must not need the FastAPI app"
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("ref[1]: ")
    assert built_after
    shutil.rmtree(directory)
