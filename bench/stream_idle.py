"""Benchmark: what followers of the event stream cost the service (issue 17.1).

A real ``databuild serve`` of a graph whose wants wait on an upstream graph (so a want is
one ``want_created`` event and no job runs). C clients follow
``GET /api/v1/events/stream`` from this process (httpx, one connection each). We read the
service's own CPU time (utime + stime from /proc/PID/stat) over each phase and report it
as a percentage of one core:

1. idle: C clients with a filter that matches nothing (``types=want_expired``) for S s;
2. burst, filtered: the same C clients while wants are created at about R events/s;
3. burst, unfiltered: C clients that receive every event, at the same rate.

The load generator and the clients run in this process and are not counted.

Run alone: ``.venv/bin/python -m bench.stream_idle [--clients 100] [--idle-seconds 60]
[--burst-seconds 10] [--rate 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.api import GRAPH
from bench.common import header, write_result
from bench.service import ServeProcess

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def follow(url: str, params: dict[str, str], counts: list[int], index: int) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as client,
        client.stream("GET", "/api/v1/events/stream", params=params) as stream,
    ):
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                counts[index] += 1


async def produce(url: str, seconds: float, rate: int, tag: str) -> int:
    """POST wants in batches, 10 batches a second, ~``rate`` wants (events) per second."""
    made = 0
    batch = max(1, rate // 10)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while loop.time() - start < seconds:
            refs = [f"u/{tag}-{made + i}" for i in range(batch)]
            response = await client.post("/api/v1/wants", json={"partition_refs": refs})
            response.raise_for_status()
            made += batch
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / 10 - loop.time()))
    return made


async def phase(
    serve: ServeProcess, clients: int, params: dict[str, str], seconds: float, rate: int, tag: str
) -> dict[str, Any]:
    assert serve.proc is not None
    counts = [0] * clients
    tasks = [asyncio.create_task(follow(serve.url, params, counts, i)) for i in range(clients)]
    async with httpx.AsyncClient(base_url=serve.url, timeout=60) as client:
        while True:  # every client subscribed before the clock starts
            text = (await client.get("/metrics")).text
            line = next(
                (
                    x
                    for x in text.splitlines()
                    if x.startswith("databuild_event_stream_subscriptions")
                ),
                "x 0",
            )
            if float(line.rsplit(" ", 1)[1]) >= clients:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    cpu0, wall0 = cpu_seconds(serve.proc.pid), time.perf_counter()
    made = await produce(serve.url, seconds, rate, tag) if rate else 0
    if not rate:
        await asyncio.sleep(seconds)
    else:
        await asyncio.sleep(1.0)  # let the last events reach every client
    cpu1, wall1 = cpu_seconds(serve.proc.pid), time.perf_counter()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = wall1 - wall0
    return {
        "clients": clients,
        "filter": "&".join(f"{k}={v}" for k, v in params.items()) or "none",
        "seconds": round(wall, 1),
        "events_per_second": round(made / wall, 1),
        "service_cpu_percent_of_a_core": round(100 * (cpu1 - cpu0) / wall, 2),
        "messages_delivered": sum(counts),
    }


def run(clients: int, idle_seconds: float, burst_seconds: float, rate: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="databuild-stream-") as tmp:
        graph = Path(tmp)
        (graph / "databuild.toml").write_text(GRAPH)
        with ServeProcess(graph) as serve:
            filtered = {"types": "want_expired"}
            idle = asyncio.run(phase(serve, clients, filtered, idle_seconds, 0, "idle"))
            burst = asyncio.run(phase(serve, clients, filtered, burst_seconds, rate, "f"))
            unfiltered = asyncio.run(phase(serve, clients, {}, burst_seconds, rate, "u"))
    return {"idle_filtered": idle, "burst_filtered": burst, "burst_unfiltered": unfiltered}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--burst-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="events per second in a burst")
    args = parser.parse_args()
    info = header("event stream followers: service CPU")
    figures = run(args.clients, args.idle_seconds, args.burst_seconds, args.rate)
    for name, row in figures.items():
        print(
            f"   {name:18} {row['clients']} clients, filter {row['filter']}: "
            f"{row['service_cpu_percent_of_a_core']} % of a core over {row['seconds']} s "
            f"({row['events_per_second']} events/s, {row['messages_delivered']} messages)"
        )
    write_result("stream_idle", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
