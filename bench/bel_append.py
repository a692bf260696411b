"""Benchmark: Build Event Log append rate, in batches of 1000 events (one transaction each).

Measures SQLite (WAL, synchronous=FULL, a fresh file in a temporary directory) and, when
a URL is given by --postgres or DATABUILD_TEST_POSTGRES_URL, PostgreSQL (synchronous
commit, a fresh schema dropped afterwards). Times whole ``append`` calls, encoding
included, over a mix of event types. Prints events/s with the git commit and machine, and
writes bench/results/bel_append.json.

Run: ``.venv/bin/python bench/bel_append.py [--batches 50] [--postgres URL]``.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from databuild.core.events import (
    EventPayload,
    JobRunQueued,
    JobRunStarted,
    JobRunSucceeded,
    PartitionBuilding,
    PartitionLive,
    WantCreated,
    WantSatisfied,
)
from databuild.core.model import (
    JobRunId,
    Want,
    WantSource,
    job_run_id_for,
    want_id_for,
)
from databuild.core.refs import PartitionRef
from databuild.log import BuildEventLog, PostgresEventLog, SqliteEventLog

BATCH = 1000
ROOT = Path(__file__).resolve().parent.parent


def make_batch(start: int) -> list[EventPayload]:
    """1000 events shaped like a real build: wants, runs, partition states."""
    out: list[EventPayload] = []
    n = start
    while len(out) < BATCH:
        ref = PartitionRef(f"daily/date=2024-01-{n % 28 + 1:02d}/shard={n}")
        want_id = want_id_for(ref, 1704067200, WantSource.API)
        run: JobRunId = job_run_id_for(n)
        out += [
            WantCreated(Want(want_id, want_id, None, ref, 1704067200, 0, 86400, WantSource.API)),
            JobRunQueued(run, "daily", (ref,), (want_id,)),
            JobRunStarted(run, 10_000 + n % 50_000),
            PartitionBuilding(ref, run),
            JobRunSucceeded(run, 1.25),
            PartitionLive(ref, run),
            WantSatisfied(want_id, run),
        ]
        n += 1
    return out[:BATCH]


def measure(log: BuildEventLog, batches: int) -> dict[str, float]:
    payloads = [make_batch(i * BATCH) for i in range(batches + 1)]
    log.append(payloads[0], time.time())  # warm-up: connections, caches, first pages
    started = time.perf_counter()
    for batch in payloads[1:]:
        log.append(batch, time.time())
    elapsed = time.perf_counter() - started
    events = batches * BATCH
    return {
        "events": events,
        "batch_size": BATCH,
        "seconds": round(elapsed, 4),
        "events_per_second": round(events / elapsed),
        "batch_latency_ms": round(elapsed / batches * 1000, 2),
    }


def git_commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return found.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50, help="measured batches (default 50)")
    parser.add_argument("--postgres", default=os.environ.get("DATABUILD_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()

    results: dict[str, object] = {
        "benchmark": "bel_append",
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "backends": {},
    }
    backends: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, SqliteEventLog(Path(tmp) / "bel.sqlite") as log:
        backends["sqlite"] = measure(log, args.batches)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            with PostgresEventLog(args.postgres, schema=schema) as log:
                backends["postgres"] = measure(log, args.batches)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    results["backends"] = backends

    print(f"BEL append, batches of {BATCH}, commit {results['commit']}")
    machine = results["machine"]
    assert isinstance(machine, dict)
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    for name, figures in backends.items():
        print(
            f"{name:>9}: {figures['events_per_second']:>8,.0f} events/s "
            f"({figures['events']:,} events in {figures['seconds']:.2f}s, "
            f"{figures['batch_latency_ms']:.1f} ms per batch)"
        )
    if not args.postgres:
        print("postgres: skipped (give --postgres URL or set DATABUILD_TEST_POSTGRES_URL)")
    out = ROOT / "bench" / "results" / "bel_append.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
