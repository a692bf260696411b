"""Benchmark: the dashboard's pages on a graph with ~10,000 wants and 100,000 events.

The log is made by ``bench.reconciler_scale.generate_bel`` (the real Reconciler driven
through a calendar-like build: ``daily/day={i}`` wants whose runs discover ``raw/day={i}``)
into a graph directory whose databuild.toml declares the same jobs; a real
``databuild serve`` then starts on it, and each page is fetched N times over loopback
(after one warm-up). The figure is the request's wall time seen by the client on the same
machine: the server's time plus loopback HTTP, so an upper bound of the server's time.
Since the overview scans the wants once to count them, its cost follows the number of
wants, not of events.

Run alone: ``.venv/bin/python -m bench.dashboard [--events 100000] [--requests 30]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import header, summary_ms, write_result
from bench.reconciler_scale import generate_bel
from bench.service import ServeProcess

GRAPH = """\
[graph]
name = "startbench"

[jobs.ingest]
outputs = ["raw/day={i}"]
command = ["true"]
max_batch = 64

[jobs.clean]
outputs = ["daily/day={i}"]
command = ["true"]
max_batch = 64

[upstreams.up]
url = "http://127.0.0.1:9"
partitions = ["u/{n}"]
"""
PAGES = ("/", "/wants", "/wants?status=satisfied&prefix=daily/", "/runs", "/partitions", "/sla")


def run(events: int, requests: int, sla_wants: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="databuild-dashboard-bench-") as tmp:
        graph = Path(tmp)
        (graph / "databuild.toml").write_text(GRAPH)
        (graph / ".databuild").mkdir()
        made = generate_bel(graph / ".databuild" / "bel.sqlite", events)
        figures: dict[str, Any] = {"log": made}
        with ServeProcess(graph) as serve, httpx.Client(base_url=serve.url, timeout=60) as client:
            for start in range(0, sla_wants, 1000):
                refs = [f"u/{n}" for n in range(start, min(start + 1000, sla_wants))]
                body = {"partition_refs": refs, "sla_seconds": 86400}
                client.post("/api/v1/wants", json=body).raise_for_status()
            health = client.get("/healthz").json()
            figures["last_sequence"] = health["last_sequence"]
            figures["active_wants_with_sla"] = health["active_wants"]
            for page in PAGES:
                client.get(page).raise_for_status()  # warm-up
                times = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    response = client.get(page)
                    times.append(time.perf_counter() - t0)
                    response.raise_for_status()
                figures[page] = summary_ms(times)
                print(f"   {page:40s} {figures[page]}")
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--sla-wants",
        type=int,
        default=0,
        help="also this many active wants with a pending SLA (waiting on an upstream graph)",
    )
    args = parser.parse_args()
    info = header("dashboard pages at scale")
    figures = run(args.events, args.requests, args.sla_wants)
    write_result("dashboard-sla" if args.sla_wants else "dashboard", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
