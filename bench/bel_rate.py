"""Benchmark 5: Build Event Log append rate, through ``bench/bel_append.py``'s measurement.

Batches of 1000 events, one transaction each, on SQLite (WAL, synchronous=FULL) and, when
a URL is given (``--postgres`` or DATABUILD_TEST_POSTGRES_URL), PostgreSQL in a fresh
schema dropped afterwards. ``bench/bel_append.py`` stays runnable alone as before.

Run alone: ``.venv/bin/python -m bench.bel_rate [--batches 200] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import bel_append
from bench.common import header, write_result
from databuild.log import PostgresEventLog, SqliteEventLog


def run(batches: int, postgres: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, SqliteEventLog(Path(tmp) / "bel.sqlite") as log:
        out["sqlite"] = bel_append.measure(log, batches)
    if postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            with PostgresEventLog(postgres, schema=schema) as log:
                out["postgres"] = bel_append.measure(log, batches)
        finally:
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    else:
        out["postgres"] = {"skipped": "give --postgres URL or set DATABUILD_TEST_POSTGRES_URL"}
    for name, figures in out.items():
        if "skipped" in figures:
            print(f"   BEL append {name}: skipped ({figures['skipped']})")
        else:
            print(
                f"   BEL append {name:>8}: {figures['events_per_second']:>9,.0f} events/s "
                f"(batches of {figures['batch_size']}, {figures['batch_latency_ms']:.1f} ms each)"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="BEL append rate")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--postgres", default=os.environ.get("DATABUILD_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    info = header("BEL append rate")
    write_result("bel_rate", run(args.batches, args.postgres), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
