"""The executor port's contract, run against every executor: LocalExecutor and FakeExecutor
must behave the same wherever the runtime can tell the difference."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from databuild.core.errors import ExecutorError
from databuild.core.model import JobRunId
from databuild.core.outcomes import RunFinishedReport, RunStartedReport
from databuild.executors import Executor, FakeExecutor, LocalExecutor

from .harness import Runs

# A run that goes on until it is killed; its refs become $0, $1...: ignored.
SLEEPER = ("sh", "-c", "sleep 1000")

MAKERS: dict[str, Callable[[int], Executor]] = {
    "local": lambda slots: LocalExecutor(slots, kill_grace_seconds=0.2),
    "fake": lambda slots: FakeExecutor(slots),
}


@pytest.fixture(params=sorted(MAKERS))
def make(request: pytest.FixtureRequest) -> Callable[[int], Executor]:
    maker: Callable[[int], Executor] = MAKERS[request.param]
    return maker


def scenario(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_start_reports_started_and_takes_a_slot(
    make: Callable[[int], Executor], runs: Runs
) -> None:
    async def body() -> None:
        executor = make(2)
        runs.attach(executor)
        request = runs.request(*SLEEPER)
        await executor.start(request)
        started = runs.started(request.job_run_id)
        assert isinstance(started, RunStartedReport)
        assert started.pid > 0
        assert executor.free_slots() == 1
        await executor.close()

    scenario(body)


def test_start_beyond_the_limit_is_refused(make: Callable[[int], Executor], runs: Runs) -> None:
    async def body() -> None:
        executor = make(1)
        runs.attach(executor)
        await executor.start(runs.request(*SLEEPER))
        assert executor.free_slots() == 0
        with pytest.raises(ExecutorError):
            await executor.start(runs.request(*SLEEPER))
        await executor.close()

    scenario(body)


def test_a_run_id_cannot_run_twice(make: Callable[[int], Executor], runs: Runs) -> None:
    async def body() -> None:
        executor = make(2)
        runs.attach(executor)
        request = runs.request(*SLEEPER)
        await executor.start(request)
        with pytest.raises(ExecutorError, match="already running"):
            await executor.start(request)
        await executor.close()

    scenario(body)


def test_start_needs_a_reporter(make: Callable[[int], Executor], runs: Runs) -> None:
    async def body() -> None:
        with pytest.raises(ExecutorError, match="set_reporter"):
            await make(1).start(runs.request(*SLEEPER))

    scenario(body)


def test_kill_frees_the_slot_and_reports_nothing_more(
    make: Callable[[int], Executor], runs: Runs
) -> None:
    async def body() -> None:
        executor = make(1)
        runs.attach(executor)
        request = runs.request(*SLEEPER)
        await executor.start(request)
        await executor.kill(request.job_run_id, "canceled")
        assert executor.free_slots() == 1
        await executor.kill(request.job_run_id, "canceled again")
        await executor.kill(JobRunId("r-never"), "unknown")
        await executor.close()

    scenario(body)
    assert not any(isinstance(r, RunFinishedReport) for r in runs.reports)


def test_close_ends_everything_and_refuses_more(
    make: Callable[[int], Executor], runs: Runs
) -> None:
    async def body() -> None:
        executor = make(3)
        runs.attach(executor)
        for _ in range(3):
            await executor.start(runs.request(*SLEEPER))
        await executor.close()
        assert executor.free_slots() == 0
        with pytest.raises(ExecutorError):
            await executor.start(runs.request(*SLEEPER))

    scenario(body)
    assert not any(isinstance(r, RunFinishedReport) for r in runs.reports)


def test_kill_orphan_of_an_unknown_run_kills_nothing(make: Callable[[int], Executor]) -> None:
    assert make(1).kill_orphan(JobRunId("r-never"), 999_999_999) is False


def test_staging_reports_nothing_takes_no_slot_and_start_goes_on_as_usual(
    make: Callable[[int], Executor], runs: Runs
) -> None:
    async def body() -> None:
        executor = make(1)
        runs.attach(executor)
        request = runs.request(*SLEEPER)
        executor.stage(request)
        assert not runs.reports
        assert executor.free_slots() == 1
        await executor.start(request)
        assert isinstance(runs.started(request.job_run_id), RunStartedReport)
        assert executor.free_slots() == 0
        executor.stage(runs.request(*SLEEPER))  # staged, never started: close lets it go
        await executor.close()

    scenario(body)
