"""What the SLA tests share: small graphs, a simulated reconciler and a real controller.

``Sim`` drives a ``Reconciler`` the way the runtime does, with time a plain float the test
moves, and keeps its events so that a test can rebuild state from them (a restart).
``Rig`` runs a real ``Controller`` over an in-memory Build Event Log with a ``FakeExecutor``
and a ``FakeClock``: tests move the clock and ``settle`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

from databuild.core import events as ev
from databuild.core.model import (
    GraphSpec,
    JobRunId,
    JobSpec,
    UpstreamSpec,
    WantId,
    WantRequest,
    WantSource,
)
from databuild.core.outcomes import RunFinishedReport, RunOutcome, RunStartedReport
from databuild.core.reconcile import Reconciler, StartRun
from databuild.core.refs import PartitionPattern, parse_ref
from databuild.executors.fake import FakeExecutor
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.runtime.clock import FakeClock
from databuild.runtime.controller import Controller

T = TypeVar("T")

HOUR = 3_600
DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def job(
    name: str,
    *patterns: str,
    concurrency: int = 1,
    expected: float = 0.0,
    retries: int = 2,
    backoff: float = 60.0,
) -> JobSpec:
    return JobSpec(
        name=name,
        outputs=tuple(PartitionPattern.compile(p) for p in patterns),
        command=("true",),
        concurrency=concurrency,
        expected_seconds=expected,
        retries=retries,
        retry_backoff_seconds=backoff,
        retry_backoff_max_seconds=backoff,
    )


def graph(*jobs: JobSpec, upstreams: tuple[UpstreamSpec, ...] = ()) -> GraphSpec:
    return GraphSpec(name="slagraph", jobs=tuple(jobs), upstreams=upstreams)


def upstream(name: str, *patterns: str) -> UpstreamSpec:
    return UpstreamSpec(
        name, "http://upstream.invalid", tuple(PartitionPattern.compile(p) for p in patterns)
    )


def request(
    text: str, *, ts: int = T0, sla: int = 0, ttl: int = 0, source: WantSource = WantSource.CLI
) -> WantRequest:
    return WantRequest(parse_ref(text), ts, source, ttl_seconds=ttl, sla_seconds=sla)


class Sim:
    """A reconciler and its log, driven by hand; ``now`` is a float the test moves."""

    def __init__(self, spec: GraphSpec, now: float = float(T0), slots: int = 8) -> None:
        self.spec = spec
        self.now = now
        self.slots = slots
        self.rec = Reconciler(spec)
        self.log: list[ev.Event] = []
        self.started: list[StartRun] = []

    def _take(self) -> list[ev.EventPayload]:
        events, effects = self.rec.take()
        self.log.extend(events)
        self.started.extend(e for e in effects if isinstance(e, StartRun))
        return [e.payload for e in events]

    def want(self, text: str, *, ts: int = T0, sla: int = 0, ttl: int = 0) -> WantId:
        want_id = self.rec.request_want(request(text, ts=ts, sla=sla, ttl=ttl), self.now)
        self.rec.tick(self.now, self.slots)
        self._take()
        return want_id

    def tick(self, now: float) -> list[ev.EventPayload]:
        self.now = now
        self.rec.tick(now, self.slots)
        return self._take()

    def run_of(self, text: str) -> JobRunId:
        for start in reversed(self.started):
            if parse_ref(text) in start.partition_refs:
                return start.job_run_id
        raise AssertionError(f"no run started for {text}")

    def start(self, run_id: JobRunId) -> None:
        self.rec.run_started(RunStartedReport(run_id, 4242), self.now)
        self._take()

    def finish(self, run_id: JobRunId, outcome: RunOutcome) -> list[ev.EventPayload]:
        self.rec.run_finished(RunFinishedReport(run_id, outcome), self.now)
        self.rec.tick(self.now, self.slots)
        return self._take()

    def restart(self) -> None:
        """A new process: fold the log into a fresh reconciler, recover."""
        self.rec = Reconciler(self.spec)
        self.rec.load(list(self.log))
        self.rec.recover(self.now)
        self.rec.tick(self.now, self.slots)
        self._take()

    def events_of(self, kind: type[T]) -> list[T]:
        return [e.payload for e in self.log if isinstance(e.payload, kind)]


class Rig:
    """A real controller over an in-memory log; restartable over the same store."""

    def __init__(self, spec: GraphSpec, tmp: Path, *, slots: int = 4, start: float = T0) -> None:
        self.spec = spec
        self.tmp = tmp
        self.slots = slots
        self.clock = FakeClock(start)
        self.store = InMemoryStore()
        self.log = InMemoryEventLog(self.store)
        self.executor = FakeExecutor(slots)
        self.controller = self._controller()

    def _controller(self) -> Controller:
        return Controller(
            self.spec,
            self.log,
            self.executor,
            root_dir=self.tmp,
            runs_dir=self.tmp / "runs",
            clock=self.clock,
        )

    async def start(self) -> None:
        await self.controller.start()

    async def stop(self) -> None:
        await self.controller.stop()
        self.log.close()

    async def restart(self) -> None:
        """Stop, then a new log object, executor and controller over the same store."""
        await self.stop()
        self.log = InMemoryEventLog(self.store)
        self.executor = FakeExecutor(self.slots)
        self.controller = self._controller()
        await self.controller.start()

    async def settle(self) -> None:
        """Let executor reports reach the controller, then run one step."""
        await asyncio.sleep(0)
        await self.controller.poke()

    def events(self) -> list[ev.Event]:
        return self.log.read(0, 1_000_000)

    def payloads(self, kind: type[T]) -> list[T]:
        return [e.payload for e in self.events() if isinstance(e.payload, kind)]
