"""Benchmark: a 10,000-partition backfill on the calendar example.

A real ``databuild serve`` (SQLite, real warm job processes) on a fresh copy of
``examples/calendar``; one ``POST /api/v1/wants`` asks ``daily/date={date}`` from
2000-01-01 for 10,000 days (so 10,000 daily wants and, as each daily reports its raw input
missing, 10,000 raw partitions built on their behalf). Figures:

    accept = the POST's round trip (the wants durable in the log, answer received)
    build  = from the POST until ``GET /api/v1/backfills/ID`` says done (polled every 0.2 s)

Run alone: ``.venv/bin/python -m bench.backfill [--days 10000]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import EXAMPLE, header, write_result
from bench.service import ServeProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10_000)
    args = parser.parse_args()
    info = header(f"backfill: {args.days} daily partitions on the calendar example")
    start = dt.date(2000, 1, 1)
    end = start + dt.timedelta(days=args.days - 1)
    with tempfile.TemporaryDirectory(prefix="databuild-bench-backfill-") as tmp:
        graph = Path(tmp) / "calendar"
        shutil.copytree(
            EXAMPLE, graph, ignore=shutil.ignore_patterns(".databuild", "data", "__pycache__")
        )
        with ServeProcess(graph) as serve, httpx.Client(base_url=serve.url, timeout=600) as c:
            body = {
                "partition_pattern": "daily/date={date}",
                "from_date": start.isoformat(),
                "to_date": end.isoformat(),
            }
            began = time.perf_counter()
            response = c.post("/api/v1/wants", json=body)
            accepted = time.perf_counter() - began
            response.raise_for_status()
            status = response.json()["backfill"]
            assert status["wants"] == args.days, status
            while not status["done"]:
                time.sleep(0.2)
                status = c.get(f"/api/v1/backfills/{status['backfill_id']}").json()
            built = time.perf_counter() - began
    if status["by_status"] != {"satisfied": args.days}:
        raise SystemExit(f"the backfill did not succeed: {status}")
    print(f"   accept {args.days} wants: {accepted:.2f} s")
    print(f"   build {args.days} daily (+{status['derived_wants']} raw) partitions: {built:.1f} s")
    write_result(
        "backfill",
        {"partitions": args.days, "accept_seconds": accepted, "build_seconds": built},
        info,
    )


if __name__ == "__main__":
    main()
