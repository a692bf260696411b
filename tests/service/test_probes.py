"""Liveness (``/healthz``) and readiness (``/readyz``), by GET and HEAD.

Against a real ``databuild serve``: both answer 200, HEAD with no body. In process, through
the service's own ASGI entry (the gateway) on a host that has not finished starting, which
is what a probe sees while a long log is replayed: alive (200, ``starting``), not ready
(503), and every other route 503 with ``Retry-After``, never a half-folded state.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from databuild.config import load_config
from databuild.service.gateway import STARTING_MESSAGE, ServiceApp
from databuild.service.host import GraphHost

Launcher = Callable[..., tuple[Any, str]]


@pytest.mark.slow
def test_probes_answer_get_and_head(served_calendar: str) -> None:
    with httpx.Client(base_url=served_calendar, timeout=30) as client:
        for path in ("/healthz", "/readyz"):
            got = client.get(path)
            assert got.status_code == 200, got.text
            head = client.head(path)
            assert head.status_code == 200
            assert head.content == b""
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz").json()
        assert ready == {
            "ready": True,
            "graph": "calendar",
            "role": "leader",
            "replayed": True,
            "storage": "ok",
            "leader_url": ready["leader_url"],
            "message": "",
        }


def test_a_starting_service_is_alive_but_not_ready(calendar_dir: Path) -> None:
    host = GraphHost(load_config(calendar_dir / "databuild.toml", {}))
    app = ServiceApp(host, eager=True)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "starting"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["role"] == "starting"
            assert "replaying" in ready.json()["message"]
            assert (await client.head("/readyz")).status_code == 503
            for path in ("/api/v1/wants", "/api/v1/partitions?ref=raw/date=2024-01-01"):
                refused = await client.get(path)
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert refused.json() == {"error": STARTING_MESSAGE}

            await host.start()
            try:
                assert (await client.get("/readyz")).status_code == 200
                assert (await client.get("/api/v1/wants")).status_code == 200
            finally:
                await host.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.slow
def test_sigusr1_writes_every_threads_stack_and_the_service_goes_on(
    calendar_dir: Path, launch_service: Launcher
) -> None:
    """docs/operations.md: ``kill -USR1 PID`` shows what a seemingly stuck service does."""
    proc, url = launch_service(calendar_dir)
    proc.send_signal(signal.SIGUSR1)
    log = calendar_dir / "serve.log"
    deadline = time.monotonic() + 30
    while "most recent call first" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.05)
    text = log.read_text(errors="replace")
    assert "Current thread" in text or "Thread 0x" in text
    assert proc.poll() is None
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
