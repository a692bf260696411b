"""``databuild serve --log-format json --log-level ...`` through a real service process.

With ``json`` every line the service writes (stdout and stderr together) is one JSON object
with ``time``, ``level``, ``logger`` and ``event``; what a record carries (the schedule's
``want_id`` and ``partition_ref``, the ``url`` it serves at) comes along as fields. The
level filters; a fatal start-up error is a JSON record too (exit 2 for a config error);
Ctrl-C stops the service cleanly with exit 0. ``python -m databuild`` is the same program.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]
GUARD_SECONDS = 60.0


def _stop_with_ctrl_c(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=GUARD_SECONDS)


def _records(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "serve.log").read_text().splitlines()
    assert lines, "the service wrote nothing"
    records = []
    for line in lines:
        record = json.loads(line)  # every line: one JSON object
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "event"} <= set(record), line
        assert record["level"] in ("debug", "info", "warning", "error", "critical"), line
        assert datetime.fromisoformat(record["time"]).tzinfo is not None, line
        records.append(record)
    return records


def test_json_logs_are_one_object_per_line_with_ids(
    calendar_dir: Path, launch_service: Launcher
) -> None:
    proc, url = launch_service(calendar_dir, "--log-format", "json", "--log-level", "info")
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert _stop_with_ctrl_c(proc) == 0
    records = _records(calendar_dir)
    serving = [r for r in records if r["event"] == "serving"]
    assert serving == [{**serving[0], "logger": "databuild.service", "level": "info", "url": url}]
    assert serving[0]["graph"] == "calendar"
    fired = [r for r in records if r["logger"] == "databuild.scheduler"]
    assert fired, "the daily schedule's catch-up firing was not logged"
    for record in fired:
        assert record["want_id"].startswith("w") and record["want_id"] in record["event"]
        assert record["partition_ref"].startswith("daily/date=")
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's lines too
    assert not any("color_message" in r for r in records)


def test_the_log_level_filters(calendar_dir: Path, launch_service: Launcher) -> None:
    proc, _url = launch_service(calendar_dir, "--log-format", "json", "--log-level", "warning")
    assert _stop_with_ctrl_c(proc) == 0
    text = (calendar_dir / "serve.log").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert all(r["level"] in ("warning", "error", "critical") for r in records), text


def test_text_logs_keep_the_serving_line(calendar_dir: Path, launch_service: Launcher) -> None:
    proc, url = launch_service(calendar_dir, "--log-level", "info")
    assert _stop_with_ctrl_c(proc) == 0
    text = (calendar_dir / "serve.log").read_text()
    assert f"DataBuild graph 'calendar' serving at {url}" in text
    assert " INFO databuild.scheduler: schedule daily fired: want w" in text


def test_a_fatal_error_is_a_json_record_with_the_exit_code(
    calendar_dir: Path, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    config = calendar_dir / "databuild.toml"
    config.write_text(config.read_text().replace("concurrency = 4", "concurrency = 0", 1))
    done = subprocess.run(
        [str(databuild_bin), "serve", "--port", "0", "--log-format", "json"],
        cwd=calendar_dir,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and "jobs.ingest.concurrency" in record["event"]


def test_bad_log_options_are_usage_errors(
    calendar_dir: Path, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    for option in (("--log-level", "loud"), ("--log-format", "xml")):
        done = subprocess.run(
            [str(databuild_bin), "serve", *option],
            cwd=calendar_dir,
            env=job_env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
        )
        assert done.returncode == 2 and "Usage:" in done.stderr, done.stderr


def test_python_dash_m_databuild_is_the_cli(tmp_path: Path, job_env: dict[str, str]) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "databuild", "--version"],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    assert version.returncode == 0 and version.stdout.startswith("databuild, version ")
    schema = subprocess.run(
        [sys.executable, "-m", "databuild", "config", "schema"],
        cwd=tmp_path,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "GraphFile"
