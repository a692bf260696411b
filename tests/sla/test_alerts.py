"""Alert hooks: SLA violations and failed root wants are POSTed to a real local HTTP
receiver, retried with back-off while it is down, and never lost across a restart."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from databuild.core import events as ev
from databuild.core.outcomes import RunFailed, RunMissingDeps
from databuild.core.refs import parse_ref
from databuild.runtime.alerts import AlertDispatcher, DeliveryCursor, DeliveryPolicy

from .helpers import HOUR, T0, Rig, graph, job, request

FAST = DeliveryPolicy(backoff_seconds=0.01, backoff_max_seconds=0.05, timeout_seconds=5.0)
HANG_GUARD_STEPS = 2_000  # x 10 ms: only guards against a hang


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every JSON POST."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        received = self.received = []  # type: list[tuple[dict[str, Any], dict[str, str]]]
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                received.append((body, dict(self.headers)))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        return [body for body, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _until(predicate: Any) -> None:
    for _ in range(HANG_GUARD_STEPS):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("gave up waiting (hang guard)")


SPEC = graph(job("daily", "daily/date={date}", retries=0), job("raw", "raw/date={date}", retries=0))


def _dispatcher(rig: Rig, urls: list[str], state_dir: Path) -> AlertDispatcher:
    return AlertDispatcher("slagraph", urls, rig.log, rig.controller, state_dir, policy=FAST)


def test_sla_violation_and_failed_root_want_are_posted(tmp_path: Path, receiver: Receiver) -> None:
    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path)
        await rig.start()
        alerts = _dispatcher(rig, [receiver.url], tmp_path / "state")
        await alerts.start()
        try:
            (late,) = await rig.controller.create_wants(
                [request("daily/date=2024-01-01", sla=HOUR)]
            )
            rig.clock.set(T0 + HOUR)
            await rig.settle()
            await _until(lambda: len(receiver.received) == 1)
            body, headers = receiver.received[0]
            (missed,) = [e for e in rig.events() if isinstance(e.payload, ev.SlaMissed)]
            assert body["type"] == "sla_missed"
            assert body["idempotency_key"] == f"slagraph:{missed.sequence}"
            assert headers["Idempotency-Key"] == f"slagraph:{missed.sequence}"
            assert body["want"]["want_id"] == late
            assert body["want"]["partition_ref"] == "daily/date=2024-01-01"
            assert body["sla_missed"]["blame_ref"] == "daily/date=2024-01-01"
            assert "running in job run" in body["sla_missed"]["blame"]

            # the daily job needs raw, raw fails: the derived raw want is not alerted,
            # its root (upstream_failed, naming raw) is
            (run,) = rig.executor.running
            rig.executor.finish(
                run,
                RunMissingDeps(
                    (
                        ev.MissingDeps(
                            parse_ref("daily/date=2024-01-01"), (parse_ref("raw/date=2024-01-01"),)
                        ),
                    ),
                    1.0,
                ),
            )
            await rig.settle()
            (raw_run,) = rig.executor.running
            rig.executor.finish(raw_run, RunFailed(ev.FailureKind.PERMANENT, "source gone", 1, 1.0))
            await rig.settle()
            await _until(lambda: len(receiver.received) == 2)
            await asyncio.sleep(0.05)  # would a derived want's alert follow? it must not
            failed = receiver.bodies()[1]
            assert failed["type"] == "want_failed"
            assert failed["want"]["want_id"] == late
            assert failed["want_failed"]["reason"] == "upstream_failed"
            assert failed["want_failed"]["upstream_ref"] == "raw/date=2024-01-01"
            assert len(receiver.received) == 2
        finally:
            await alerts.stop()
            await rig.stop()

    asyncio.run(scenario())


def test_alerts_are_retried_while_the_receiver_is_down(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hook"
    started: list[Receiver] = []

    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path)
        await rig.start()
        alerts = _dispatcher(rig, [url], tmp_path / "state")
        await alerts.start()
        try:
            await rig.controller.create_wants([request("daily/date=2024-01-01", sla=HOUR)])
            rig.clock.set(T0 + HOUR)
            await rig.settle()
            await _until(lambda: alerts.failed_attempts >= 3)  # refused, backing off
            started.append(Receiver(port))
            await _until(lambda: len(alerts.delivered) == 1)
            assert started[0].bodies()[0]["type"] == "sla_missed"
            assert alerts.delivered == [(url, started[0].bodies()[0]["sequence"])]
        finally:
            await alerts.stop()
            await rig.stop()

    try:
        asyncio.run(scenario())
    finally:
        for r in started:
            r.close()


def test_a_receiver_error_is_retried_too(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 503

    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path)
        await rig.start()
        alerts = _dispatcher(rig, [receiver.url], tmp_path / "state")
        await alerts.start()
        try:
            await rig.controller.create_wants([request("daily/date=2024-01-01", sla=HOUR)])
            rig.clock.set(T0 + HOUR)
            await rig.settle()
            await _until(lambda: len(receiver.received) >= 3)
            assert alerts.delivered == []
            receiver.status = 204
            await _until(lambda: len(alerts.delivered) == 1)
            keys = {body["idempotency_key"] for body in receiver.bodies()}
            assert len(keys) == 1  # the same alert each time
        finally:
            await alerts.stop()
            await rig.stop()

    asyncio.run(scenario())


def test_no_alert_is_lost_or_resent_across_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    state_dir = tmp_path / "state"
    down_port = _free_port()
    down_url = f"http://127.0.0.1:{down_port}/hook"
    late_receivers: list[Receiver] = []

    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path)
        await rig.start()
        alerts = _dispatcher(rig, [receiver.url, down_url], state_dir)
        await alerts.start()
        await rig.controller.create_wants([request("daily/date=2024-01-01", sla=HOUR)])
        rig.clock.set(T0 + HOUR)
        await rig.settle()
        await _until(lambda: any(url == receiver.url for url, _ in alerts.delivered))
        await _until(lambda: alerts.failed_attempts >= 1)  # the second webhook is down
        assert DeliveryCursor(state_dir, receiver.url).load() > 0
        assert DeliveryCursor(state_dir, down_url).load() == 0
        await alerts.stop()
        # a second violation while no dispatcher runs (the service is restarting)
        await rig.controller.create_wants([request("daily/date=2024-01-02", ts=T0, sla=HOUR)])
        await rig.settle()
        await rig.restart()
        late_receivers.append(Receiver(down_port))
        alerts = _dispatcher(rig, [receiver.url, down_url], state_dir)
        await alerts.start()
        try:
            await _until(lambda: len(receiver.received) == 2)
            await _until(lambda: len(late_receivers[0].received) == 2)
            await asyncio.sleep(0.05)
            first = [b["sequence"] for b in receiver.bodies()]
            second = [b["sequence"] for b in late_receivers[0].bodies()]
            assert first == second and len(set(first)) == 2  # each delivered, none twice
        finally:
            await alerts.stop()
            await rig.stop()

    try:
        asyncio.run(scenario())
    finally:
        for r in late_receivers:
            r.close()
