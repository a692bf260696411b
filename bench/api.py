"""Benchmark 6: want creation through the HTTP API, with concurrent clients on loopback.

A real ``databuild serve`` of a graph whose wants are for partitions an upstream graph
provides (``u/{n}``), so a want is created, recorded durably and left waiting: no job is
spawned and the figure is the API's and the controller's own. C concurrent tasks, each
with its own ``httpx.AsyncClient`` (keep-alive), POST one want each with a distinct ref
until R wants are made; we report wants/s (R / wall) and the per-request latency. The
client runs in this process, on the same machine: on a small machine it competes with
the service for CPU, which the figure includes.

Run alone: ``.venv/bin/python -m bench.api [--clients 8 32] [--requests 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import header, summary_ms, write_result
from bench.service import ServeProcess

GRAPH = """\
[graph]
name = "apibench"

[jobs.local]
outputs = ["local/{n}"]
command = ["true"]

[upstreams.up]
url = "http://127.0.0.1:9"
partitions = ["u/{n}"]
"""


async def load(url: str, clients: int, requests: int, tag: str) -> dict[str, Any]:
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while (i := next(counter)) < requests:
                t0 = time.perf_counter()
                response = await client.post(
                    "/api/v1/wants", json={"partition_refs": [f"u/{tag}-{i}"]}
                )
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "wants_per_second": round(requests / wall, 1),
        **summary_ms(latencies),
    }


def run(clients_list: tuple[int, ...], requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        graph = Path(tmp) / "api"
        graph.mkdir()
        (graph / "databuild.toml").write_text(GRAPH)
        with ServeProcess(graph) as service:
            asyncio.run(load(service.url, 4, 200, "warmup"))
            for clients in clients_list:
                figures = asyncio.run(load(service.url, clients, requests, f"c{clients}"))
                out[f"clients_{clients}"] = figures
                print(
                    f"   API want creation, {clients:>3} clients: "
                    f"{figures['wants_per_second']:,.0f} wants/s, p50 {figures['p50_ms']:.1f} ms, "
                    f"p99 {figures['p99_ms']:.1f} ms ({figures['errors']} errors)"
                )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="API want-creation rate and latency")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    info = header("API want creation")
    write_result("api", run(tuple(args.clients), args.requests), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
