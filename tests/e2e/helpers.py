"""What the end-to-end tests share: running the real CLI, and following a want to its end
over HTTP (long-polling the event feed, so nothing polls on a timer; the deadline only
guards a hang)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HANG_GUARD_SECONDS = 120.0
UNFINISHED = frozenset({"pending", "waiting", "building", "retrying"})


def cli(
    bin_path: Path, graph: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``databuild ARGS…`` in the graph's folder; never a traceback, whatever it answers."""
    done = subprocess.run(
        [str(bin_path), *args],
        cwd=graph,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def want_of(client: httpx.Client, want_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/wants/{want_id}")
    assert response.status_code == 200, response.text
    want: dict[str, Any] = response.json()["want"]
    return want


def wait_until(
    client: httpx.Client, want_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Follow the event feed until ``done(want)``."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    after = int(client.get("/healthz").json()["last_sequence"])
    while True:
        want = want_of(client, want_id)
        if done(want):
            return want
        assert time.monotonic() < deadline, f"want stuck: {want}"
        page = client.get("/api/v1/events", params={"after": after, "wait": 2}).json()
        after = int(page["last_sequence"])


def wait_done(client: httpx.Client, want_id: str) -> dict[str, Any]:
    """The want once it has ended (satisfied, failed, expired, canceled)."""
    return wait_until(client, want_id, lambda want: want["status"] not in UNFINISHED)
