"""The head start of ``databuild build``: warm workers start before the service does.

``HeadStart.begin`` starts the embedded service's loop and its local executor's warm
workers as soon as the command has its configuration; the service then runs on that loop,
with those workers: its first runs use them and it starts no more. A head start that no
service takes over (abandoned, or a service that cannot open its log) leaves no worker
behind. Real processes, a real SQLite log, the real embedded service."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from executors.harness import warm_worker_pids  # tests/executors

from databuild.cli.inprocess import InProcessBuildApi
from databuild.config import GraphConfig, load_config
from databuild.core.errors import DataBuildError
from databuild.core.model import JobSpec
from databuild.executors.local import LocalExecutor
from databuild.service.head_start import HeadStart
from databuild.service.server import EmbeddedService, ServeOptions

GRAPH = """
[graph]
name = "head"

[jobs.leaf]
outputs = ["leaf/{n}"]
command = ["python", "jobs/leaf.py"]
warm = true
concurrency = 2
retries = 0
"""
JOB = """
import os, sys
from databuild import sdk
for ref in sys.argv[1:]:
    print("built", ref, "in", os.getpid())
"""
WAIT = 60.0


def wait_for_workers(count: int) -> set[int]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = warm_worker_pids()
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{count} warm workers did not start: {warm_worker_pids()}")


def wait_until_no_workers() -> bool:
    deadline = time.monotonic() + WAIT
    while warm_worker_pids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def graph(tmp_path: Path, job_env: dict[str, str], extra: str = "") -> GraphConfig:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "leaf.py").write_text(JOB)
    (tmp_path / "databuild.toml").write_text(GRAPH + extra)
    return load_config(tmp_path / "databuild.toml", job_env)


def build(service: EmbeddedService, refs: list[str]) -> set[int]:
    """Build ``refs`` through the command's in-process API: the pids their runs ran in."""
    pids: set[int] = set()
    api = InProcessBuildApi(service)
    after = api.last_sequence()
    wants = {w["want_id"] for w in api.create_wants({"partition_refs": refs})["wants"]}
    deadline = time.monotonic() + WAIT
    while wants and time.monotonic() < deadline:
        page = api.events(after)
        after = page["last_sequence"]
        for event in page["events"]:
            body = event[event["type"]]
            if event["type"] == "want_satisfied":
                wants.discard(body["want_id"])
            if event["type"] == "job_run_started":
                pids.add(body["pid"])
            assert event["type"] not in ("want_failed", "job_run_failed"), event
    assert not wants, "the build did not finish"
    return pids


def test_the_first_runs_use_the_workers_started_ahead_and_no_more_start(
    tmp_path: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = graph(tmp_path, job_env)
    assert not warm_worker_pids()
    head = HeadStart.begin(config, 2)
    assert head is not None
    # before any service exists: min(concurrency 2, max_parallel 2) workers for the one job
    ahead = wait_for_workers(2)
    assert len(ahead) == 2
    with EmbeddedService(config, ServeOptions(port=0, max_parallel=2), head) as service:
        assert service.thread is head.thread
        pids = build(service, [f"leaf/{n}" for n in range(6)])
        assert warm_worker_pids() == ahead  # the controller's own prepare started none
        assert pids and pids <= ahead, (pids, ahead)
    assert wait_until_no_workers()
    assert not head.thread.is_alive()


def test_an_abandoned_head_start_stops_its_workers_and_its_thread(
    tmp_path: Path, job_env: dict[str, str]
) -> None:
    config = graph(tmp_path, job_env)
    head = HeadStart.begin(config, 1)
    assert head is not None
    wait_for_workers(1)
    head.abandon()
    assert not head.thread.is_alive()
    assert wait_until_no_workers()


def test_a_service_left_before_it_was_entered_stops_the_workers_at_once(
    tmp_path: Path, job_env: dict[str, str]
) -> None:
    """Ctrl-C between the service's creation and its start: ``__exit__`` must not wait on
    a loop that has no service to stop."""
    config = graph(tmp_path, job_env)
    head = HeadStart.begin(config, 1)
    assert head is not None
    wait_for_workers(1)
    embedded = EmbeddedService(config, ServeOptions(port=0), head)
    embedded.__exit__(None, None, None)
    assert not head.thread.is_alive()  # else it joined in vain, the thread still waiting
    assert wait_until_no_workers()


def test_a_service_that_cannot_open_its_log_leaves_no_worker_and_says_why(
    tmp_path: Path, job_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    config = graph(
        tmp_path,
        job_env,
        '\n[storage]\nurl = "postgresql://postgres@127.0.0.1:9/nodb?connect_timeout=5"\n',
    )
    head = HeadStart.begin(config, 1)
    assert head is not None
    wait_for_workers(1)
    embedded = EmbeddedService(config, ServeOptions(port=0), head)
    with pytest.raises(DataBuildError, match="could not open the PostgreSQL Build Event Log"):
        embedded.__enter__()
    head.thread.join(timeout=WAIT)
    assert not head.thread.is_alive()
    assert wait_until_no_workers()
    assert "is closed" not in capfd.readouterr().err  # no asyncio complaint about a child


def test_no_head_start_without_a_warm_job(tmp_path: Path, job_env: dict[str, str]) -> None:
    (tmp_path / "databuild.toml").write_text(GRAPH.replace("warm = true\n", ""))
    config = load_config(tmp_path / "databuild.toml", job_env)
    assert HeadStart.begin(config, 2) is None
    assert not warm_worker_pids()


def test_a_head_start_whose_workers_cannot_start_early_still_builds(
    tmp_path: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting workers early only saves time: if it fails, the service starts them."""
    monkeypatch.chdir(tmp_path)
    config = graph(tmp_path, job_env)
    calls: list[int] = []
    original = LocalExecutor.prepare

    def flaky(self: LocalExecutor, jobs: Sequence[JobSpec], root_dir: Path) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("the test's: no workers ahead of the service")
        original(self, jobs, root_dir)

    monkeypatch.setattr(LocalExecutor, "prepare", flaky)
    head = HeadStart.begin(config, 2)
    assert head is not None and not warm_worker_pids()
    with EmbeddedService(config, ServeOptions(port=0, max_parallel=2), head) as service:
        pids = build(service, ["leaf/1", "leaf/2"])
        assert pids and pids <= warm_worker_pids()
    assert len(calls) == 2  # the head start's, then the controller's
    assert wait_until_no_workers()
