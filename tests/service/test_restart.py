"""kill -9 the service in the middle of a build, start it again: the build converges.

A real ``databuild serve`` and real job processes on the calendar example (21 days, small
batches so that the build has many runs). For several points of the build, given as a
share of the events an uninterrupted build writes: create ``summary/all`` through the API,
wait until the log holds that many events, SIGKILL the service, start a new one on the same
directory and follow the want to its end. Then: the want is satisfied, no job was queued
for a partition already live, the outputs equal those of the uninterrupted build, and no
job process is left behind.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .graphs import HANG_GUARD_SECONDS, all_events, create_wants, wait_for_want

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]
DAYS = "21"


@dataclass(frozen=True)
class Build:
    events: int  # how many events the uninterrupted build wrote
    outputs: dict[str, str]  # partition ref -> the content of its file


def _graph(calendar_factory: Callable[[], Path]) -> Path:
    directory = calendar_factory()
    config = directory / "databuild.toml"
    # small batches: many runs, so a kill lands among runs in flight
    config.write_text(re.sub(r"max_batch = \d+", "max_batch = 3", config.read_text()))
    return directory


def _outputs(client: httpx.Client, directory: Path, want_id: str) -> dict[str, str]:
    tree = client.get("/api/v1/wants", params={"root_want_id": want_id, "limit": 1000})
    refs = sorted({w["partition_ref"] for w in tree.json()["wants"]})
    return {ref: (directory / "data" / f"{ref}.json").read_text() for ref in refs}


def _job_processes(directory: Path, exclude: set[int]) -> list[int]:
    """Live (not zombie) processes working in ``directory`` other than ``exclude`` and
    their children (the running service's own idle warm workers are not orphans)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != directory:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, parent = fields[0], int(fields[1])
        if state != "Z" and parent not in exclude:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def env(job_env: dict[str, str]) -> dict[str, str]:
    return {**job_env, "CALENDAR_DAYS": DAYS}


@pytest.fixture(scope="module")
def uninterrupted(
    calendar_factory: Callable[[], Path], launch_service: Launcher, env: dict[str, str]
) -> Build:
    directory = _graph(calendar_factory)
    proc, url = launch_service(directory, env=env)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            (want,) = create_wants(client, "summary/all")
            assert wait_for_want(client, want["want_id"])["status"] == "satisfied"
            events = client.get("/healthz").json()["last_sequence"]
            outputs = _outputs(client, directory, want["want_id"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert '"days": 21' in outputs["summary/all"]
    return Build(events, outputs)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc")
@pytest.mark.parametrize("share", [0.02, 0.25, 0.5, 0.8])
def test_kill_9_and_restart_converges(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    env: dict[str, str],
    uninterrupted: Build,
    share: float,
) -> None:
    directory = _graph(calendar_factory)
    kill_at = max(1, int(uninterrupted.events * share))
    first, url = launch_service(directory, env=env)
    with httpx.Client(base_url=url, timeout=30) as client:
        (want,) = create_wants(client, "summary/all")  # acknowledged: must survive
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while client.get("/healthz").json()["last_sequence"] < kill_at:
            assert time.monotonic() < deadline, "the build stalled"
    first.send_signal(signal.SIGKILL)
    first.wait()

    second, url = launch_service(directory, env=env)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            done = wait_for_want(client, want["want_id"])
            assert done["status"] == "satisfied", done
            events = all_events(client)
            outputs = _outputs(client, directory, want["want_id"])
        # no job was queued for a partition that was already live
        live_at: dict[str, int] = {}
        for event in events:
            if event["type"] == "partition_live":
                live_at.setdefault(event["partition_live"]["partition_ref"], event["sequence"])
            elif event["type"] == "job_run_queued":
                rebuilt = [
                    ref for ref in event["job_run_queued"]["partition_refs"] if ref in live_at
                ]
                assert rebuilt == [], f"#{event['sequence']} queued live partitions {rebuilt}"
        created = [
            e
            for e in events
            if e["type"] == "want_created" and e["want_created"]["want"]["source"] == "api"
        ]
        assert [e["want_created"]["want"]["want_id"] for e in created] == [want["want_id"]]
        assert outputs == uninterrupted.outputs
        # runs in flight at the kill were killed (or ended by themselves): none left over
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while left := _job_processes(directory, {second.pid}):
            assert time.monotonic() < deadline, f"orphan job processes {left}"
            time.sleep(0.05)
    finally:
        second.terminate()
        second.wait(timeout=30)
