"""Clock faults (issue 14.4) through the clock port: a wall clock stepped back by an hour
does not make the Build Event Log's timestamps go backwards (within a run or across a
restart) nor fire a retry back-off early; a clock stepped forward by an hour does not fire
a retry back-off early either (``ClockStepped`` moves it), while SLA deadlines, being
wall-clock facts, are taken as passed; ``SystemClock`` itself never goes backwards and
tells a forward step from time that passed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from databuild.config import GraphConfig, load_config
from databuild.core.events import ClockStepped, FailureKind, JobRunQueued
from databuild.core.model import WantRequest, WantSource
from databuild.core.outcomes import RunFailed
from databuild.core.refs import PartitionRef
from databuild.executors.fake import FakeExecutor
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.runtime.clock import FakeClock, SystemClock
from databuild.runtime.controller import Controller
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.up]
outputs = ["up/{n}"]
command = ["true"]
retries = 3
retry_backoff = "60s"
concurrency = 4
"""
HOUR = 3600.0
T0 = 1_700_000_000.0


def request(ref: str) -> WantRequest:
    return WantRequest(PartitionRef(ref), int(T0), WantSource.API)


def timestamps(store: InMemoryStore) -> list[float]:
    return [e.timestamp for e in InMemoryEventLog(store).read(0)]


@dataclass
class Graph:
    """The graph of CONFIG with its log's store, a fake clock at T0 and a fake executor."""

    config: GraphConfig
    store: InMemoryStore
    clock: FakeClock
    executor: FakeExecutor

    def runs_of(self, ref: str) -> int:
        return sum(1 for r in self.executor.started if PartitionRef(ref) in r.partition_refs)

    def fail_first_run(self) -> None:
        first = self.executor.started[0].job_run_id
        self.executor.finish(first, RunFailed(FailureKind.EXIT_NONZERO, "exit 1", 1, 0.1))


@pytest.fixture
def graph(tmp_path: Path) -> Graph:
    (tmp_path / "databuild.toml").write_text(CONFIG)
    config = load_config(tmp_path / "databuild.toml", {})
    return Graph(config, InMemoryStore(), FakeClock(T0), FakeExecutor(slots=2))


@asynccontextmanager
async def hosted(
    config: GraphConfig, store: InMemoryStore, executor: FakeExecutor, clock: FakeClock
) -> AsyncIterator[Controller]:
    """A started host on ``store``; stopped on exit."""
    host = GraphHost(config, event_log=InMemoryEventLog(store), executor=executor, clock=clock)
    await host.start()
    try:
        assert host.controller is not None
        yield host.controller
    finally:
        await host.stop()


def test_the_system_clock_never_goes_backwards() -> None:
    readings = iter([100.0, 101.0, 101.0 - HOUR, 50.0, 101.5, 200.0])
    clock = SystemClock(wall=lambda: next(readings))
    seen = [clock.now() for _ in range(6)]
    assert seen == [100.0, 101.0, 101.0, 101.0, 101.5, 200.0]


def test_the_system_clock_tells_a_forward_step_from_time_that_passed() -> None:
    wall = iter([100.0, 105.0, 105.0 + HOUR, 110.0 + HOUR])
    mono = iter([10.0, 15.0, 15.5, 20.5])
    clock = SystemClock(wall=lambda: next(wall), monotonic=lambda: next(mono))
    assert clock.now() == 100.0
    assert clock.now() == 105.0  # 5 s passed on both clocks: no step
    assert clock.now() == 105.0 + HOUR  # the wall leapt an hour in half a second
    assert clock.take_step() == HOUR - 0.5
    assert clock.take_step() == 0.0  # taken once
    assert clock.now() == 110.0 + HOUR  # 5 s more on both: no new step
    assert clock.take_step() == 0.0


def test_a_clock_stepped_forward_does_not_fire_a_back_off_early(graph: Graph) -> None:
    clock = graph.clock

    async def scenario() -> None:
        async with hosted(graph.config, graph.store, graph.executor, clock) as controller:
            await controller.create_wants([request("up/1")])
            graph.fail_first_run()
            await controller.poke()  # failed; retried 60-300 s later
            clock.step(HOUR)  # a VM resumed: the wall clock leaps an hour, no time passed
            await controller.poke()
            assert graph.runs_of("up/1") == 1, "the back-off fired early after a forward step"
            clock.advance(301)  # now the back-off (at most 300 s) has really passed
            await controller.poke()
            assert graph.runs_of("up/1") == 2

    asyncio.run(asyncio.wait_for(scenario(), 30))
    events = InMemoryEventLog(graph.store).read(0)
    steps = [e for e in events if isinstance(e.payload, ClockStepped)]
    assert [e.payload for e in steps] == [ClockStepped(HOUR)]


def test_a_clock_stepped_back_keeps_log_timestamps_in_order_and_timers_on_time(
    graph: Graph,
) -> None:
    config, store, clock = graph.config, graph.store, graph.clock

    async def scenario() -> None:
        async with hosted(config, store, graph.executor, clock) as controller:
            await controller.create_wants([request("up/1")])
            assert len(graph.executor.started) == 1
            graph.fail_first_run()
            await controller.poke()  # failed; retried 60-300 s later

            clock.set(T0 - HOUR)  # NTP steps the wall clock back an hour
            await controller.create_wants([request("up/2")])
            clock.set(T0 - HOUR + 120)  # two minutes pass on the stepped-back clock
            await controller.poke()
            assert graph.runs_of("up/1") == 1, "the back-off fired early"
            assert graph.runs_of("up/2") == 1

            clock.set(T0 + 301)  # past the back-off (at most 300 s) in the log's time
            await controller.poke()
            assert graph.runs_of("up/1") == 2

    asyncio.run(asyncio.wait_for(scenario(), 30))
    seen = timestamps(store)
    assert seen == sorted(seen), "a BEL timestamp went backwards"
    assert seen[-1] == T0 + 301

    async def restart_behind() -> None:
        # the service restarts on a host whose clock is an hour behind the log
        behind = FakeClock(T0 - HOUR)
        async with hosted(config, store, FakeExecutor(slots=0), behind) as controller:
            await controller.create_wants([request("up/3")])

    before = len(timestamps(store))
    asyncio.run(asyncio.wait_for(restart_behind(), 30))
    after = timestamps(store)
    assert len(after) > before
    assert after == sorted(after), "a restart with a clock behind the log wrote older times"
    queued = [e for e in InMemoryEventLog(store).read(0) if isinstance(e.payload, JobRunQueued)]
    assert queued, "the retry was queued"
