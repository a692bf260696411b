"""Shared fixtures: a fresh copy of the calendar example, and real ``databuild serve``
processes on it.

Generic on purpose: they know how to copy the example and run the service, nothing about
what a test checks. ``launch_service`` starts ``databuild serve --port 0`` in a graph
directory, waits until its ``service.json`` names it and ``/healthz`` answers, and returns
the process and its URL; every process it started is killed at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
CALENDAR_EXAMPLE = REPO / "examples" / "calendar"
CALENDAR_DAYS = "8"
START_DEADLINE_SECONDS = 60.0  # a guard against a hang, not an expectation

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]


@pytest.fixture(scope="session")
def databuild_bin() -> Path:
    """The ``databuild`` console script of the interpreter running the tests."""
    found = Path(sys.executable).parent / "databuild"
    if not found.exists():
        which = shutil.which("databuild")
        assert which is not None, "the databuild console script is not installed"
        found = Path(which)
    return found


@pytest.fixture(scope="session")
def job_env() -> dict[str, str]:
    """The environment for the CLI and the service: jobs run ``python``, which must be the
    test interpreter; a small calendar; no DATABUILD_* settings from whoever runs the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CALENDAR_DAYS"] = CALENDAR_DAYS
    env["CALENDAR_START"] = "2024-01-01"
    env.pop("CALENDAR_DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def calendar_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """Each call: a fresh copy of examples/calendar (no data, no state) in its own dir."""

    def make() -> Path:
        target = tmp_path_factory.mktemp("graph") / "calendar"
        shutil.copytree(
            CALENDAR_EXAMPLE,
            target,
            ignore=shutil.ignore_patterns("data", ".databuild", "__pycache__"),
        )
        return target

    return make


@pytest.fixture
def calendar_dir(calendar_factory: Callable[[], Path]) -> Path:
    return calendar_factory()


def _discovered_url(directory: Path, pid: int) -> str | None:
    try:
        record = json.loads((directory / ".databuild" / "service.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("pid") != pid:
        return None  # a stale file from a killed service
    return str(record["url"])


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the service stops its runs), then SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def launch_service(databuild_bin: Path, job_env: dict[str, str]) -> Iterator[Launcher]:
    started: list[subprocess.Popen[bytes]] = []

    def launch(
        directory: Path, *extra: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        log = (directory / "serve.log").open("ab")
        proc = subprocess.Popen(
            [str(databuild_bin), "serve", "--port", "0", *extra],
            cwd=directory,
            env=env or job_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(proc)
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = (directory / "serve.log").read_text(errors="replace")
                raise AssertionError(f"databuild serve exited {proc.returncode}:\n{output}")
            url = _discovered_url(directory, proc.pid)
            if url is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        return proc, url
            time.sleep(0.02)
        proc.kill()
        raise AssertionError("databuild serve did not become healthy")

    yield launch
    for proc in started:
        stop_process(proc)


@pytest.fixture
def served_calendar(calendar_dir: Path, launch_service: Launcher) -> Iterator[str]:
    """A real ``databuild serve`` on a fresh calendar copy; yields its URL."""
    proc, url = launch_service(calendar_dir)
    yield url
    stop_process(proc)
