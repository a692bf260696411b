"""End to end through the real CLI (issue 11, point 3): a raw partition of the calendar
example turns out wrong; ``databuild partition invalidate REF --downstream`` makes it and
everything built from it absent, and the summary's want, reopened, rebuilds exactly that
day's daily, its week and the summary, with their contents recomputed. Bad asks get a
clear error and change nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import cli, wait_done

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]
HANG_GUARD_SECONDS = 120.0
REPO = Path(__file__).resolve().parents[2]
DAY = "2024-01-03"  # a Wednesday: ISO week 2024-W01


def outputs(graph: Path) -> dict[str, str]:
    data = graph / "data"
    return {
        str(p.relative_to(data)).removesuffix(".json"): p.read_text()
        for p in sorted(data.rglob("*.json"))
    }


def built_refs(client: httpx.Client, after_runs: set[str]) -> list[str]:
    runs = client.get("/api/v1/job-runs", params={"limit": 1000}).json()["job_runs"]
    refs = [
        ref
        for run in runs
        if run["job_run_id"] not in after_runs and run["status"] == "succeeded"
        for ref in run["partition_refs"]
    ]
    return sorted(refs)


def test_invalidating_a_raw_day_rebuilds_its_daily_its_week_and_the_summary(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> None:
    graph = calendar_factory()
    config = graph / "databuild.toml"  # without its schedule, which would build other days
    config.write_text(config.read_text().split("[schedules.daily]", 1)[0])
    proc, url = launch_service(graph)
    with httpx.Client(base_url=url, timeout=30) as client:
        made = cli(databuild_bin, graph, job_env, "--json", "want", "create", "summary/all")
        assert made.returncode == 0, made.stderr
        summary_want = json.loads(made.stdout)["wants"][0]["want_id"]
        assert wait_done(client, summary_want)["status"] == "satisfied"
        good = outputs(graph)
        week = next(ref for ref in good if ref.startswith("weekly/") and "2024-W01" in ref)
        touched = [f"raw/date={DAY}", f"daily/date={DAY}", week, "summary/all"]
        # the raw day turned out wrong, and so did everything computed from it
        for ref in touched:
            (graph / "data" / f"{ref}.json").write_text('{"wrong": true}')
        runs_before = {
            r["job_run_id"]
            for r in client.get("/api/v1/job-runs", params={"limit": 1000}).json()["job_runs"]
        }

        done = cli(
            databuild_bin,
            graph,
            job_env,
            "partition",
            "invalidate",
            f"raw/date={DAY}",
            "--downstream",
            "--reason",
            "meter feed replayed with bad readings",
        )
        assert done.returncode == 0, done.stderr
        # the example in docs/cli.md is this command and the last line of its output
        said = done.stdout.strip().splitlines()[-1]
        assert said == "4 partition(s) invalidated; 1 want(s) reopened and rebuilding", said
        doc = (REPO / "docs" / "cli.md").read_text()
        assert f"invalidate raw/date={DAY} --downstream --reason" in doc
        assert f"\n    {said}\n" in doc
        timeline = client.get(f"/api/v1/wants/{summary_want}").json()["timeline"]
        assert any("want_reopened" in e for e in timeline), timeline

        assert wait_done(client, summary_want)["status"] == "satisfied"
        assert outputs(graph) == good  # recomputed, every one of the four
        assert built_refs(client, runs_before) == sorted(touched)  # and nothing else

        # who and why is in the log, and on the partition's own events
        events = client.get(
            "/api/v1/events", params={"types": "partitions_invalidated", "limit": 10}
        ).json()["events"]
        (event,) = events
        recorded = event["partitions_invalidated"]
        assert sorted(recorded["partition_refs"]) == sorted(touched)
        assert recorded["reason"] == "meter feed replayed with bad readings"
        assert recorded["requested_by"].endswith("(cli)")
        mine = cli(databuild_bin, graph, job_env, "events", "--partition", f"daily/date={DAY}")
        assert "partitions_invalidated" in mine.stdout, mine.stdout

        # text output of a plain invalidation: no want to reopen, rebuilt when wanted
        plain = cli(databuild_bin, graph, job_env, "partition", "invalidate", "raw/date=2024-01-05")
        assert plain.returncode == 0, plain.stderr
        assert "rebuilt when wanted again" in plain.stdout
        status = client.get("/api/v1/partitions/raw/date=2024-01-05").json()
        assert status["status"] == "absent", status
        # a job asking for it now finds it not live: asking for it again rebuilds it
        again = cli(
            databuild_bin, graph, job_env, "--json", "want", "create", "raw/date=2024-01-05"
        )
        assert again.returncode == 0, again.stderr
        want_id = json.loads(again.stdout)["wants"][0]["want_id"]
        assert wait_done(client, want_id)["status"] == "satisfied"

    assert proc.poll() is None


def test_bad_invalidations_are_clear_errors_and_change_nothing(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> None:
    graph = calendar_factory()
    config = graph / "databuild.toml"
    config.write_text(config.read_text().split("[schedules.daily]", 1)[0])
    proc, url = launch_service(graph)
    with httpx.Client(base_url=url, timeout=30) as client:
        cases: list[tuple[tuple[str, ...], int, str]] = [
            # refused by the service (422): bad input, like a usage error, exits 2
            (("raw/date=2024-02-01",), 2, "cannot invalidate raw/date=2024-02-01"),
            (("not a ref!",), 2, "not a ref!"),
            ((), 2, "give the partition refs"),
            (("--job", "clean"), 2, "--job needs --older-than-version"),
            (("--job", "nope", "--older-than-version"), 2, "unknown job 'nope'"),
            (("--job", "clean", "--older-than-version"), 2, "declares no version"),
        ]
        for args, code, text in cases:
            got = cli(databuild_bin, graph, job_env, "partition", "invalidate", *args)
            assert got.returncode == code, (args, got.stdout, got.stderr)
            assert text in got.stderr, (args, got.stderr)
            assert "Traceback" not in got.stderr
        bad = client.post("/api/v1/partitions/invalidate", json={"downstream": True})
        assert bad.status_code == 422, bad.text
        assert "exactly one" in bad.text
        assert (
            client.get("/api/v1/events", params={"types": "partitions_invalidated"}).json()[
                "events"
            ]
            == []
        )
    assert proc.poll() is None
