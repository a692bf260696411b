"""End to end through the real CLI: a year-long backfill on the calendar example.

A real ``databuild serve`` (real SQLite file, real job processes) on a calendar copy
covering 2024; ``databuild want create 'daily/date={date}' --from 2024-01-01 --to
2024-12-31`` makes one want per day in one request, ``databuild backfill status`` follows
the set to the end, and every daily partition is on disk with the total recomputed from
its raw input. Bad ranges are refused with exit code 2 (CLI) and 422 (HTTP).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

DATABUILD = str(Path(sys.executable).with_name("databuild"))
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]


def run_cli(graph: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DATABUILD, "--url", url, *args],
        cwd=graph,
        env={**os.environ, "CALENDAR_DAYS": "366"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_year_long_backfill_builds_every_day_and_reports_progress(
    calendar_dir: Path, launch_service: Launcher, job_env: dict[str, str]
) -> None:
    _proc, url = launch_service(calendar_dir, env={**job_env, "CALENDAR_DAYS": "366"})
    made = run_cli(
        calendar_dir,
        url,
        "--json",
        "want",
        "create",
        "daily/date={date}",
        "--from",
        "2024-01-01",
        "--to",
        "2024-12-31",
    )
    assert made.returncode == 0, made.stderr
    backfill = json.loads(made.stdout)["backfill"]
    assert backfill["wants"] == 366  # 2024 is a leap year
    backfill_id = backfill["backfill_id"]

    # asked again: the same set, nothing new
    again = run_cli(
        calendar_dir, url, "--json", "want", "create", "daily/date={date}",
        "--from", "2024-01-01", "--to", "2024-12-31",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["backfill"]["backfill_id"] == backfill_id
    assert json.loads(again.stdout)["backfill"]["wants"] == 366

    deadline = time.monotonic() + 600
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        shown = run_cli(calendar_dir, url, "--json", "backfill", "status", backfill_id)
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        if status["done"]:
            break
        time.sleep(0.5)
    assert status["done"], status
    assert status["by_status"] == {"satisfied": 366}, status
    assert status["derived_wants"] == 366  # one raw partition per day, wanted on its behalf

    text = run_cli(calendar_dir, url, "backfill", "status", backfill_id)
    assert text.returncode == 0, text.stderr
    assert f"backfill {backfill_id}: 366 wants (366 satisfied); done" in text.stdout
    # the examples in docs/cli.md are this run's output
    cli_doc = (REPO / "docs" / "cli.md").read_text()
    for line in text.stdout.splitlines():
        assert f"    {line}\n" in cli_doc, line
    plain = run_cli(
        calendar_dir, url, "want", "create", "daily/date={date}",
        "--from", "2024-01-01", "--to", "2024-12-31",
    )  # fmt: skip
    assert plain.stdout.startswith(f"backfill {backfill_id}: 366 wants (366 satisfied)")
    for doc in ("cli.md", "concepts.md", "api.md"):
        assert backfill_id in (REPO / "docs" / doc).read_text(), doc

    with httpx.Client(base_url=url, timeout=30) as client:
        listed = client.get("/api/v1/wants", params={"root_want_id": backfill_id, "limit": 1000})
        wants = listed.json()["wants"]
    own = [w for w in wants if not w["parent_want_id"]]
    assert len(own) == 366
    # each want has its own data timestamp: its partition's date, midnight UTC
    for want in own:
        day = dt.date.fromisoformat(want["partition_ref"].removeprefix("daily/date="))
        midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
        assert want["data_timestamp"] == int(midnight.timestamp())
    for day in (dt.date(2024, 1, 1), dt.date(2024, 2, 29), dt.date(2024, 12, 31)):
        raw = json.loads((calendar_dir / "data" / "raw" / f"date={day}.json").read_text())
        daily = json.loads((calendar_dir / "data" / "daily" / f"date={day}.json").read_text())
        kept = [r["wh"] for r in raw["readings"] if isinstance(r.get("wh"), int)]
        assert daily["total_wh"] == sum(kept)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("daily/date={date}",), "needs a date range"),
        (("daily/date={date}", "--from", "2024-02-01", "--to", "2024-01-01"), "inverted"),
        (("daily/date={date}", "--from", "2024-13-01", "--to", "2024-12-31"), "not a date"),
        (("daily/date={date}", "--from", "0001-01-01", "--to", "9999-12-31"), "at most 100,000"),
        (("summary/all", "--from", "2024-01-01", "--to", "2024-12-31"), "no field to fill"),
    ],
)
def test_bad_backfills_are_refused_with_exit_2(
    served_calendar: str, calendar_dir: Path, args: tuple[str, ...], message: str
) -> None:
    done = run_cli(calendar_dir, served_calendar, "want", "create", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_backfills_are_refused_with_422_over_http(served_calendar: str) -> None:
    bodies = [
        ({"partition_pattern": "daily/date={date}"}, "needs a date range"),
        (
            {"partition_pattern": "daily/date={date}", "from_date": "2024-02-01",
             "to_date": "2024-01-01"},
            "inverted",
        ),
        (
            {"partition_pattern": "daily/date={date}", "from_date": "1000-01-01",
             "to_date": "9999-12-31"},
            "at most 100,000",
        ),
        ({"partition_pattern": "summary/all", "from_date": "2024-01-01", "to_date": "2024-01-02"},
         "no field to fill"),
        ({"from_date": "2024-01-01", "to_date": "2024-01-02"}, "go with partition_pattern"),
        ({}, "give partition_refs"),
    ]  # fmt: skip
    with httpx.Client(base_url=served_calendar, timeout=30) as client:
        for body, message in bodies:
            response = client.post("/api/v1/wants", json=body)
            assert response.status_code == 422, (body, response.text)
            assert message in response.text, (body, response.text)
        missing = client.get("/api/v1/backfills/bnope")
        assert missing.status_code == 404
