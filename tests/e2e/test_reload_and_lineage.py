"""Reload and observed lineage through a real ``databuild serve`` (issue 16, rows 8 and 9).

A want for a partition no job builds fails; a job is added to databuild.toml and SIGHUP is
sent: the service reloads, records ``config_reloaded`` and retries the want, which the new
job builds. A bad file sent the same way is refused (logged) and the old configuration keeps
serving; ``databuild reload`` and ``POST /api/v1/reload`` return the refusal. ``databuild
graph`` says when the file differs from what the service runs, and shows the job -> job
edges the calendar example records after a real build.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]
GUARD_SECONDS = 90.0  # a guard against a hang, not an expectation
REPORT_JOB = """
[jobs.report]
outputs = ["report/date={date}"]
command = ["python", "-c", "import sys; sys.exit(0)"]
timeout = "1m"
"""


def _cli(
    exe: Path, directory: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(exe), *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _want(url: str, ref: str) -> str:
    body = {"partition_refs": [ref], "source": "api"}
    response = httpx.post(f"{url}/api/v1/wants", json=body, timeout=30)
    assert response.status_code == 200, response.text
    want_id: str = response.json()["wants"][0]["want_id"]
    return want_id


def _wait_status(url: str, want_id: str, *statuses: str) -> dict[str, Any]:
    """Long-poll the event stream until the want reaches one of ``statuses``."""
    deadline = time.monotonic() + GUARD_SECONDS
    after = 0
    while time.monotonic() < deadline:
        want: dict[str, Any] = httpx.get(f"{url}/api/v1/wants/{want_id}", timeout=30).json()
        if want["want"]["status"] in statuses:
            return want
        page = httpx.get(
            f"{url}/api/v1/events", params={"after": after, "wait": 5}, timeout=30
        ).json()
        after = page["last_sequence"]
    raise AssertionError(f"want {want_id} never reached {statuses}")


def _events_of(url: str, kind: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/api/v1/events", params={"types": kind}, timeout=30).json()
    events: list[dict[str, Any]] = page["events"]
    return events


def _wait_log(log: Path, text: str) -> str:
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.05)  # the service log is a file: there is no event to await
    raise AssertionError(f"{text!r} never appeared in {log}:\n{log.read_text(errors='replace')}")


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(
    calendar_dir: Path, launch_service: Launcher, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    proc, url = launch_service(calendar_dir)
    config = calendar_dir / "databuild.toml"
    original = config.read_text()
    want_id = _want(url, "report/date=2024-01-01")
    failed = _wait_status(url, want_id, "failed")
    assert "no job builds partition 'report/date=2024-01-01'" in failed["want"]["message"]

    # the file changes: `databuild graph` says the service runs something else
    config.write_text(original + REPORT_JOB)
    shown = _cli(databuild_bin, calendar_dir, job_env, "graph")
    assert shown.returncode == 0, shown.stderr
    assert "differs from the configuration the service at" in " ".join(shown.stderr.split())
    assert "the file adds job(s) report" in " ".join(shown.stderr.split())

    proc.send_signal(signal.SIGHUP)
    satisfied = _wait_status(url, want_id, "satisfied")
    assert satisfied["want"]["status"] == "satisfied"
    (reloaded,) = _events_of(url, "config_reloaded")
    assert reloaded["config_reloaded"]["jobs_added"] == ["report"]
    assert _events_of(url, "want_reopened")[-1]["want_reopened"]["want_id"] == want_id
    _wait_log(calendar_dir / "serve.log", "configuration reloaded from")
    graph = httpx.get(f"{url}/api/v1/graph", timeout=30).json()
    assert "report" in [j["name"] for j in graph["jobs"]]
    shown = _cli(databuild_bin, calendar_dir, job_env, "graph")
    assert "differs" not in shown.stderr

    # a bad file: refused and logged; the old configuration goes on serving
    config.write_text(original + REPORT_JOB + '\n[jobs.bad]\noutputs = ["report/{x}"]\n')
    proc.send_signal(signal.SIGHUP)
    log = _wait_log(calendar_dir / "serve.log", "reload refused")
    assert "jobs.bad.command: this required key is missing" in log
    assert "Traceback" not in log
    assert proc.poll() is None
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    again = _want(url, "report/date=2024-01-02")
    assert _wait_status(url, again, "satisfied", "failed")["want"]["status"] == "satisfied"
    assert len(_events_of(url, "config_reloaded")) == 1

    # the same refusal through the CLI and the API, each one line
    done = _cli(databuild_bin, calendar_dir, job_env, "reload")
    assert done.returncode == 2
    line = " ".join(done.stderr.split())
    assert line.startswith("error: ")
    assert "jobs.bad.command: this required key is missing; reload refused" in line
    response = httpx.post(f"{url}/api/v1/reload", json={}, timeout=30)
    assert response.status_code == 422
    assert "reload refused" in response.json()["error"]

    # a cross-site page cannot drive it: a write like the others
    hostile = httpx.post(
        f"{url}/api/v1/reload", json={}, headers={"Origin": "https://evil.example"}, timeout=30
    )
    assert hostile.status_code == 403

    # fixed: the CLI reloads it and says what changed
    config.write_text(original + REPORT_JOB.replace('timeout = "1m"', 'timeout = "2m"'))
    done = _cli(databuild_bin, calendar_dir, job_env, "--json", "reload")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["jobs_changed"] == ["report"]
    assert result["config_digest"] == httpx.get(f"{url}/api/v1/graph").json()["config_digest"]


def test_reload_with_a_token_needs_the_token(
    calendar_dir: Path, launch_service: Launcher, job_env: dict[str, str]
) -> None:
    env = {**job_env, "DATABUILD_TOKEN": "s3cret"}
    _, url = launch_service(calendar_dir, env=env)
    assert httpx.post(f"{url}/api/v1/reload", json={}, timeout=30).status_code == 401
    ok = httpx.post(
        f"{url}/api/v1/reload",
        json={},
        headers={"Authorization": "Bearer s3cret"},
        timeout=30,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["summary"].endswith(": unchanged")


def test_graph_shows_the_lineage_the_calendar_build_recorded(
    calendar_dir: Path, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    built = _cli(databuild_bin, calendar_dir, job_env, "build", "-q", "summary/all")
    assert built.returncode == 0, built.stderr
    # no service runs now: the graph comes from a read-only view of the log
    shown = _cli(databuild_bin, calendar_dir, job_env, "--json", "graph")
    assert shown.returncode == 0, shown.stderr
    edges = {
        (e["owner"], e["pattern"], e["job"]): e for e in json.loads(shown.stdout)["observed_edges"]
    }
    # 8 days from Monday 2024-01-01: two ISO weeks, so 14 days of daily and raw inputs
    assert set(edges) == {
        ("ingest", "raw/date={date}", "clean"),
        ("clean", "daily/date={date}", "weekly"),
        ("weekly", "weekly/week={week}", "summary"),
    }
    assert edges[("weekly", "weekly/week={week}", "summary")]["count"] == 2
    assert edges[("clean", "daily/date={date}", "weekly")]["count"] == 14
    assert all(e["observed"] and e["owner_kind"] == "job" for e in edges.values())
    assert all(e["last_seen"] >= e["first_seen"] > 0 for e in edges.values())

    mermaid = _cli(databuild_bin, calendar_dir, job_env, "graph", "--format", "mermaid").stdout
    assert 'job0 -. "observed 14x: raw/date={date}" .-> job1' in mermaid
    assert 'job2 -. "observed 2x: weekly/week={week}" .-> job3' in mermaid
    dot = _cli(databuild_bin, calendar_dir, job_env, "graph", "--format", "dot").stdout
    assert 'job1 -> job2 [style=dashed,label="observed 14x: daily/date={date}"];' in dot
    text = _cli(databuild_bin, calendar_dir, job_env, "graph").stdout
    assert "job summary needs weekly/week={week} of job weekly" in " ".join(text.split())
