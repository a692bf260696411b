"""What a user sees of wants, runs and events, through the real CLI against a real service.

Issue 16's rows, reproduced: a job that prints ~45 MB (`runs log` shows its head, the
drop marker and its tail; `--tail N` its last N lines), a flaky job retried (its runs'
events under `events --partition` and in `want status`), a re-asked want with another
SLA/TTL, a want that would expire at once. One ``databuild serve`` per module on a small
graph written here; every subprocess is bounded by a timeout.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

GUARD_SECONDS = 120.0
BIG_LINES = 450_000  # ~45 MB of 100-byte lines
GRAPH = f"""
[graph]
name = "ux"

[jobs.loud]
outputs = ["loud/id={{id}}"]
command = ["python", "-c", '''
import sys
out = sys.stdout
for i in range({BIG_LINES}):
    out.write("line %07d " % i + "x" * 87 + "\\n")
for i in range(1, 6):
    out.write("LAST %d of the job\\n" % i)
out.flush()
sys.exit(0 if sys.argv[1].endswith("ok") else 3)
''']
retries = 0
timeout = "5m"

[jobs.flaky]
outputs = ["flaky/id={{id}}"]
command = ["python", "-c", '''
import pathlib, sys
marker = pathlib.Path("flaky-tried-" + sys.argv[1].split("=")[1])
if not marker.exists():
    marker.write_text("once")
    print("first try fails")
    sys.exit(1)
print("second try works")
''']
retries = 2
retry_backoff = "0.1s"
timeout = "1m"

[jobs.quick]
outputs = ["quick/date={{date}}"]
command = ["python", "-c", "print('built')"]
timeout = "1m"
"""


@dataclass(frozen=True)
class Cli:
    exe: Path
    directory: Path
    url: str
    env: dict[str, str]

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.exe), "--url", self.url, *args]
        done = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
        )
        assert done.returncode == code, f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run("--json", *args, code=code).stdout)


@pytest.fixture(scope="module")
def ux(
    tmp_path_factory: pytest.TempPathFactory,
    launch_service: Callable[..., tuple[Any, str]],
    databuild_bin: Path,
    job_env: dict[str, str],
) -> Iterator[Cli]:
    directory = tmp_path_factory.mktemp("ux")
    (directory / "databuild.toml").write_text(GRAPH)
    proc, url = launch_service(directory)
    yield Cli(databuild_bin, directory, url, job_env)
    proc.terminate()
    proc.wait(timeout=30)


# ---- 16.1: logs -----------------------------------------------------------------------------
def _loud_run(ux: Cli, ref: str, code: int) -> dict[str, Any]:
    ux.run("build", "-q", ref, code=code)
    (run,) = ux.json("runs", "--job", "loud")["job_runs"][:1]
    assert run["partition_refs"] == [ref]
    return dict(run)


def test_runs_log_prints_head_drop_marker_and_tail_of_a_45_mb_log(ux: Cli) -> None:
    run = _loud_run(ux, "loud/id=bad", code=1)
    assert run["status"] == "failed"
    # the failure message still names the run's last lines
    assert "LAST 5 of the job" in run["message"]
    log = ux.run("runs", "log", run["job_run_id"]).stdout
    assert log.startswith("line 0000000 ")
    assert "bytes of output dropped here" in log
    assert log.rstrip("\n").endswith("LAST 5 of the job")
    head, _, tail = log.partition("bytes of output dropped here")
    assert "LAST 1 of the job" in tail and "LAST" not in head
    # the whole bounded log, no more: about 1 MiB of head and 1 MiB of tail
    assert 2 << 20 <= len(log.encode()) < (2 << 20) + 4096
    # the API's default answer is the same whole log, and says nothing more follows
    response = httpx.get(f"{ux.url}/api/v1/job-runs/{run['job_run_id']}/log", timeout=30)
    assert response.text == log
    assert response.headers["x-log-more"] == "false"
    assert int(response.headers["x-log-size"]) == len(log.encode())
    # a page says more follows
    page = httpx.get(
        f"{ux.url}/api/v1/job-runs/{run['job_run_id']}/log", params={"limit": 1000}, timeout=30
    )
    assert len(page.content) == 1000 and page.headers["x-log-more"] == "true"
    assert page.headers["x-log-next-offset"] == "1000"


def test_runs_log_tail_prints_exactly_the_last_lines(ux: Cli) -> None:
    run = _loud_run(ux, "loud/id=ok", code=0)
    assert run["status"] == "succeeded"
    tail = ux.run("runs", "log", "--tail", "5", run["job_run_id"]).stdout
    assert tail.splitlines() == [f"LAST {i} of the job" for i in range(1, 6)]
    seven = ux.run("runs", "log", "--tail", "7", run["job_run_id"]).stdout.splitlines()
    assert len(seven) == 7 and seven[0].startswith(f"line {BIG_LINES - 2:07d} ")
    # more lines than the log has: the whole log
    (quick,) = _quick_runs(ux, "quick/date=2024-01-05")
    assert ux.run("runs", "log", "--tail", "100", quick).stdout == "built\n"
    bad = ux.run("runs", "log", "--tail", "0", quick, code=2)
    assert "--tail" in bad.stderr and "Traceback" not in bad.stderr


def _quick_runs(ux: Cli, ref: str) -> list[str]:
    ux.run("build", "-q", ref)
    runs = ux.json("runs", "--job", "quick", "--limit", "1000")["job_runs"]
    return [r["job_run_id"] for r in runs if r["partition_refs"] == [ref]]


# ---- 16.5: every event about a partition ----------------------------------------------------
def test_events_partition_shows_the_runs_that_built_it_retry_included(ux: Cli) -> None:
    built = ux.json("build", "flaky/id=a")
    assert built["ok"] is True
    (want,) = built["wants"]
    lines = ux.run("--json", "events", "--partition", "flaky/id=a").stdout.splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds.count("job_run_queued") == 2 and kinds.count("job_run_started") == 2
    assert kinds.count("job_run_failed") == 1 and kinds.count("job_run_succeeded") == 1
    assert {"want_created", "partition_building", "partition_live", "want_satisfied"} <= set(kinds)
    assert kinds.index("job_run_failed") < kinds.index("job_run_succeeded")
    # a pattern matches the same, and nothing about other partitions comes with it
    by_pattern = httpx.get(
        f"{ux.url}/api/v1/events", params={"partition": "flaky/id={id}"}, timeout=30
    ).json()["events"]
    assert [e["type"] for e in by_pattern] == kinds
    other = httpx.get(
        f"{ux.url}/api/v1/events", params={"partition": "flaky/id=b"}, timeout=30
    ).json()["events"]
    assert other == []
    # the want's timeline has its runs' events, in the API and in `want status`
    detail = httpx.get(f"{ux.url}/api/v1/wants/{want['want_id']}", timeout=30).json()
    timeline = [e["type"] for e in detail["timeline"]]
    assert timeline.count("job_run_failed") == 1 and timeline.count("job_run_succeeded") == 1
    assert timeline[0] == "want_created" and timeline[-1] == "want_satisfied"
    human = ux.run("want", "status", want["want_id"]).stdout
    failed_run = next(e for e in detail["timeline"] if e["type"] == "job_run_failed")
    run_id = failed_run["job_run_failed"]["job_run_id"]
    assert f"job_run_failed {run_id} (exit_nonzero, will retry)" in human
    assert "job_run_succeeded" in human


# ---- 16.6: re-asking is never silent ----------------------------------------------------------
def test_reasking_with_another_sla_or_ttl_says_what_stands(ux: Cli) -> None:
    ref = "quick/date=2030-01-01"
    first = ux.json("want", "create", ref, "--sla", "30h")
    assert first["notices"] == []
    (want,) = first["wants"]
    again = ux.run("want", "create", ref, "--sla", "40h", "--ttl", "2d")
    warnings = again.stderr.strip().splitlines()
    assert len(warnings) == 2, again.stderr
    sla, ttl = warnings
    assert sla.startswith("warning: ") and want["want_id"] in sla and ref in sla
    assert "SLA 1d6h (2030-01-02 06:00:00 UTC); you asked 1d16h: the first stands" in sla
    assert "TTL none; you asked 2d: the first stands" in ttl
    assert want["want_id"] in again.stdout  # the table of the existing want, as before
    # the API says the same in the response, field by field
    response = httpx.post(
        f"{ux.url}/api/v1/wants",
        json={"partition_refs": [ref], "sla_seconds": 40 * 3600, "source": "cli"},
        timeout=30,
    )
    assert response.status_code == 200
    body = response.json()
    assert [w["sla_seconds"] for w in body["wants"]] == [30 * 3600]
    (notice,) = body["notices"]
    assert notice["want_id"] == want["want_id"] and notice["field"] == "sla_seconds"
    assert (notice["asked"], notice["stands"]) == (40 * 3600, 30 * 3600)
    # asking the same again is quiet
    same = ux.run("want", "create", ref, "--sla", "30h")
    assert same.stderr == ""
    # `build` warns the same way
    built = ux.run("build", ref, "--sla", "1h")
    assert "warning: " in built.stderr and "you asked 1h: the first stands" in built.stderr


# ---- 16.7: a want that would expire at once ---------------------------------------------------
def test_a_want_that_would_expire_at_once_is_refused_with_how_to_ask(ux: Cli) -> None:
    ref = "quick/date=2024-03-12"
    done = ux.run("want", "create", ref, "--ttl", "30d", code=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    line = lines[0]
    for says in (
        ref,
        "a TTL of 30d counts from the data date 2024-03-12 (from the ref)",
        "would have expired at 2024-04-11 00:00:00 UTC, before now",
        "no TTL",
        "--ttl",
        "--data-date",
    ):
        assert says in line, (says, line)
    assert ux.json("want", "list", "--prefix", ref)["wants"] == []  # nothing was created
    ux.run("build", "-q", ref, "--ttl", "30d", code=2)
    response = httpx.post(
        f"{ux.url}/api/v1/wants",
        json={"partition_refs": [ref], "ttl_seconds": 86400, "data_date": "2024-03-12"},
        timeout=30,
    )
    assert response.status_code == 422
    assert "partition_refs[0]" in response.text and "data date 2024-03-12" in response.text
    # asked as the message says: a TTL long enough, or none
    assert ux.json("build", ref, "--ttl", "36500d")["ok"] is True
    assert ux.json("build", "quick/date=2024-03-13")["ok"] is True
