"""The event stream (issue 17.1, issue 16.3): an idle filtered stream sleeps and sends its
keep-alive; the cursor passes events the filter drops, so the first match after 10,000
others arrives; a hundred clients that leave mid-burst are released at once, with no
error line per failed write in the service's log.

Real ``databuild serve`` processes; SSE read line by line with httpx. The keep-alive
interval is shortened through ``DATABUILD_SSE_KEEPALIVE_SECONDS`` so the test is quick.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .graphs import HANG_GUARD_SECONDS, add_test_jobs, create_wants, json_of

Launcher = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def stream_service(
    calendar_factory: Callable[[], Path], launch_service: Launcher, job_env: dict[str, str]
) -> Iterator[tuple[str, Path, int]]:
    directory = calendar_factory()
    add_test_jobs(directory)
    proc, url = launch_service(directory, env={**job_env, "DATABUILD_SSE_KEEPALIVE_SECONDS": "0.5"})
    yield url, directory, proc.pid


def _lines(url: str, params: dict[str, str], out: queue.Queue[str], stop: threading.Event) -> None:
    with (
        httpx.Client(base_url=url, timeout=HANG_GUARD_SECONDS) as client,
        client.stream("GET", "/api/v1/events/stream", params=params) as stream,
    ):
        assert stream.status_code == 200
        for line in stream.iter_lines():
            out.put(line)
            if stop.is_set():
                return


def _follow(url: str, **params: str) -> tuple[queue.Queue[str], threading.Event]:
    out: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_lines, args=(url, params, out, stop), daemon=True).start()
    return out, stop


def _next_event(lines: queue.Queue[str]) -> dict[str, str]:
    """The next event's fields (id, event, data), skipping comments."""
    fields: dict[str, str] = {}
    while True:
        line = lines.get(timeout=HANG_GUARD_SECONDS)
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
        elif fields:
            return fields


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_an_idle_filtered_stream_sends_keepalives_and_no_events(
    stream_service: tuple[str, Path, int],
) -> None:
    url, _, _ = stream_service
    lines, stop = _follow(url, types="want_expired")
    seen = [lines.get(timeout=HANG_GUARD_SECONDS) for _ in range(3)]
    stop.set()
    # three keep-alive comments in a row: no event matched, the stream is alive
    assert all(line.startswith(": keep-alive") for line in seen if line), seen
    assert sum(1 for line in seen if line.startswith(":")) >= 2, seen


@pytest.mark.parametrize("opened", ["before", "after"])
def test_a_filtered_stream_delivers_the_first_match_after_10000_others(
    stream_service: tuple[str, Path, int], opened: str
) -> None:
    """``before``: the stream follows live, served from memory; ``after``: it catches up
    from the log from sequence 0 past 10,000 non-matching events."""
    url, _, _ = stream_service
    with httpx.Client(base_url=url, timeout=HANG_GUARD_SECONDS) as client:
        start = int(json_of(client.get("/healthz"))["last_sequence"])
        if opened == "before":
            lines, stop = _follow(url, types="want_canceled", after=str(start))
        wants = create_wants(client, *(f"hold/id={i}" for i in range(10_000)))
        assert len(wants) == 10_000
        target = wants[-1]["want_id"]
        assert client.delete(f"/api/v1/wants/{target}").status_code == 200
        head = int(json_of(client.get("/healthz"))["last_sequence"])
        assert head - start > 10_000  # 10,000 want_created (and more) before the cancel
        if opened == "after":
            lines, stop = _follow(url, types="want_canceled", after="0")
        event = _next_event(lines)
        stop.set()
    assert event["event"] == "want_canceled"
    assert target in event["data"]
    assert int(event["id"]) > start + 10_000


def test_a_hundred_clients_leaving_mid_burst_are_released(
    stream_service: tuple[str, Path, int],
) -> None:
    url, directory, pid = stream_service
    streams: list[tuple[httpx.Client, httpx.Response]] = []
    for i in range(100):
        client = httpx.Client(base_url=url, timeout=HANG_GUARD_SECONDS)
        params = {"types": "want_created"} if i % 2 else {}
        request = client.build_request("GET", "/api/v1/events/stream", params=params)
        streams.append((client, client.send(request, stream=True)))
    assert all(response.status_code == 200 for _, response in streams)
    guard = time.monotonic() + HANG_GUARD_SECONDS
    while _metric(url, "databuild_event_stream_subscriptions") < 100:
        assert time.monotonic() < guard, "the 100 streams did not all subscribe"
        time.sleep(0.05)

    def burst() -> None:
        with httpx.Client(base_url=url, timeout=HANG_GUARD_SECONDS) as client:
            for batch in range(20):
                create_wants(client, *(f"hold/id=burst-{batch}-{i}" for i in range(100)))

    writer = threading.Thread(target=burst)
    writer.start()
    for client, response in streams:  # leave mid-burst, without reading to the end
        response.close()
        client.close()
    writer.join()

    guard = time.monotonic() + HANG_GUARD_SECONDS
    while _metric(url, "databuild_event_stream_subscriptions") > 0:
        assert time.monotonic() < guard, "streams were not released after their clients left"
        time.sleep(0.05)
    with httpx.Client(base_url=url, timeout=HANG_GUARD_SECONDS) as client:
        assert json_of(client.get("/healthz"))["status"] == "ok"
        create_wants(client, "hold/id=after-the-burst")
    # and the service is idle again: a stream left spinning would hold a core
    before = _cpu_ticks(pid)
    time.sleep(3.0)
    spent = (_cpu_ticks(pid) - before) / os.sysconf("SC_CLK_TCK")
    assert spent < 0.6, f"the service used {spent:.2f} CPU s in 3 s with no client"
    log = (directory / "serve.log").read_text(errors="replace")
    assert "socket.send() raised exception" not in log
    assert "Traceback" not in log
    assert "Lock is not acquired" not in log
