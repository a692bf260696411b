"""FakeExecutor: what runtime tests rely on beyond the port's contract."""

from __future__ import annotations

import asyncio

import pytest

from databuild.core.errors import ExecutorError
from databuild.core.events import FailureKind
from databuild.core.model import JobRunId
from databuild.core.outcomes import RunFailed, RunFinishedReport, RunStartedReport, RunSucceeded
from databuild.executors import FakeExecutor

from .harness import Runs


def test_started_runs_are_recorded_and_finished_by_the_test(runs: Runs) -> None:
    executor = FakeExecutor(slots=2)
    runs.attach(executor)
    first, second = runs.request("job"), runs.request("job")

    async def start_both() -> None:
        await executor.start(first)
        await executor.start(second)

    asyncio.run(start_both())
    assert executor.started == [first, second]
    assert set(executor.running) == {first.job_run_id, second.job_run_id}
    executor.finish(first.job_run_id, RunSucceeded(2.0))
    assert runs.finished(first.job_run_id) == RunSucceeded(2.0)
    assert list(executor.running) == [second.job_run_id]
    assert executor.free_slots() == 1
    with pytest.raises(ExecutorError, match="not running"):
        executor.finish(first.job_run_id, RunSucceeded(1.0))


def test_pids_are_distinct(runs: Runs) -> None:
    executor = FakeExecutor()
    runs.attach(executor)
    requests = [runs.request("job") for _ in range(3)]

    async def start_all() -> None:
        for request in requests:
            await executor.start(request)

    asyncio.run(start_all())
    pids = [r.pid for r in runs.reports if isinstance(r, RunStartedReport)]
    assert len(set(pids)) == 3
    assert pids == [executor.pids[r.job_run_id] for r in requests]


def test_slots_can_change_under_a_test(runs: Runs) -> None:
    executor = FakeExecutor(slots=0)
    runs.attach(executor)
    assert executor.free_slots() == 0
    executor.slots = 1
    assert executor.free_slots() == 1


def test_spawn_failures_can_be_set_up_per_job(runs: Runs) -> None:
    executor = FakeExecutor()
    runs.attach(executor)
    executor.fail_spawn("job", "could not start job 'job': 'x': not found")
    request = runs.request("x")
    asyncio.run(executor.start(request))
    assert [type(r) for r in runs.reports] == [RunFinishedReport]
    outcome = runs.finished(request.job_run_id)
    assert isinstance(outcome, RunFailed)
    assert outcome.kind is FailureKind.SPAWN_ERROR
    assert executor.free_slots() == 4


def test_kills_are_recorded_with_their_reason(runs: Runs) -> None:
    executor = FakeExecutor()
    runs.attach(executor)
    request = runs.request("job")

    async def start_and_kill() -> None:
        await executor.start(request)
        await executor.kill(request.job_run_id, "want canceled")

    asyncio.run(start_and_kill())
    assert executor.killed == [(request.job_run_id, "want canceled")]


def test_orphans_the_test_declares_alive_are_killed_once() -> None:
    executor = FakeExecutor()
    executor.orphans.add((JobRunId("r00000001"), 4242))
    assert executor.kill_orphan(JobRunId("r00000001"), 4242)
    assert not executor.kill_orphan(JobRunId("r00000001"), 4242)
    assert not executor.kill_orphan(JobRunId("r00000002"), 4243)
    assert executor.orphans_killed == [(JobRunId("r00000001"), 4242)]
