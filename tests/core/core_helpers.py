"""Shared helpers for the core tests: a tiny graph builder and a simulated service.

``Sim`` drives a ``Reconciler`` the way the runtime does (inputs, then ``take()``) and keeps
the Build Event Log as a plain list with sequence numbers, so tests can assert on events
and rebuild state from them. Time is a plain float the test moves by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from databuild.core import events as ev
from databuild.core.model import GraphSpec, JobRunId, JobSpec, WantId, WantRequest, WantSource
from databuild.core.outcomes import (
    RunFailed,
    RunFinishedReport,
    RunMissingDeps,
    RunOutcome,
    RunStartedReport,
    RunSucceeded,
)
from databuild.core.reconcile import Effect, KillOrphan, KillRun, Reconciler, StartRun
from databuild.core.refs import PartitionPattern, PartitionRef, parse_ref
from databuild.core.state import BuildState, canonical

T = TypeVar("T")

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z, a data_timestamp


def ref(text: str) -> PartitionRef:
    return parse_ref(text)


def job(
    name: str,
    *patterns: str,
    max_batch: int = 1,
    concurrency: int = 1,
    retries: int = 2,
    backoff: float = 1.0,
    backoff_max: float = 300.0,
    inputs: Sequence[str] = (),
) -> JobSpec:
    return JobSpec(
        name=name,
        outputs=tuple(PartitionPattern.compile(p) for p in patterns),
        command=("true",),
        max_batch=max_batch,
        concurrency=concurrency,
        retries=retries,
        retry_backoff_seconds=backoff,
        retry_backoff_max_seconds=backoff_max,
        inputs=tuple(PartitionPattern.compile(p) for p in inputs),
    )


def graph(*jobs: JobSpec) -> GraphSpec:
    return GraphSpec(name="test", jobs=tuple(jobs))


def request(
    text: str,
    *,
    ts: int = T0,
    source: WantSource = WantSource.CLI,
    sla: int = 0,
    ttl: int = 0,
) -> WantRequest:
    return WantRequest(ref(text), ts, source, ttl_seconds=ttl, sla_seconds=sla)


def ok(duration: float = 1.0) -> RunSucceeded:
    return RunSucceeded(duration)


def fail(kind: ev.FailureKind = ev.FailureKind.EXIT_NONZERO, message: str = "boom") -> RunFailed:
    return RunFailed(kind, message, 1, 1.0)


def missing(*items: tuple[str, Sequence[str]]) -> RunMissingDeps:
    return RunMissingDeps(
        tuple(ev.MissingDeps(ref(out), tuple(ref(m) for m in deps)) for out, deps in items), 1.0
    )


def of_type(items: Iterable[object], kind: type[T]) -> list[T]:
    return [item for item in items if isinstance(item, kind)]


class Sim:
    """A reconciler plus its event log, driven by hand with a simulated clock."""

    def __init__(self, spec: GraphSpec, now: float = float(T0)) -> None:
        self.graph = spec
        self.now = now
        self.rec = Reconciler(spec)
        self.log: list[ev.Event] = []
        self.effects: list[Effect] = []
        # what the latest step produced
        self.step_events: list[ev.EventPayload] = []
        self.step_effects: list[Effect] = []

    # ---- plumbing --------------------------------------------------------------------
    def take(self) -> list[ev.EventPayload]:
        events, effects = self.rec.take()
        for event in events:
            self.log.append(ev.Event(len(self.log) + 1, event.timestamp, event.payload))
        self.effects.extend(effects)
        self.step_events = [e.payload for e in events]
        self.step_effects = list(effects)
        return self.step_events

    @property
    def state(self) -> BuildState:
        return self.rec.state

    @property
    def payloads(self) -> list[ev.EventPayload]:
        return [e.payload for e in self.log]

    def events_of(self, kind: type[T]) -> list[T]:
        return of_type(self.payloads, kind)

    def starts(self) -> list[StartRun]:
        return of_type(self.effects, StartRun)

    def step_starts(self) -> list[StartRun]:
        return of_type(self.step_effects, StartRun)

    def kills(self) -> list[KillRun]:
        return of_type(self.effects, KillRun)

    def orphans(self) -> list[KillOrphan]:
        return of_type(self.effects, KillOrphan)

    # ---- inputs ----------------------------------------------------------------------
    def want(
        self,
        text: str,
        *,
        ts: int = T0,
        source: WantSource = WantSource.CLI,
        sla: int = 0,
        ttl: int = 0,
        slots: int = 8,
    ) -> WantId:
        req = request(text, ts=ts, source=source, sla=sla, ttl=ttl)
        return self.want_request(req, slots)

    def want_request(self, req: WantRequest, slots: int = 8) -> WantId:
        want_id = self.rec.request_want(req, self.now)
        self.rec.tick(self.now, slots)
        self.take()
        return want_id

    def cancel(self, want_id: WantId, slots: int = 8) -> None:
        self.rec.cancel_want(want_id, "user asked", self.now)
        self.rec.tick(self.now, slots)
        self.take()

    def start(self, run_id: JobRunId, pid: int = 4242) -> None:
        self.rec.run_started(RunStartedReport(run_id, pid), self.now)
        self.take()

    def finish(self, run_id: JobRunId, outcome: RunOutcome, slots: int = 8) -> None:
        self.rec.run_finished(RunFinishedReport(run_id, outcome), self.now)
        self.rec.tick(self.now, slots)
        self.take()

    def tick(self, now: float | None = None, slots: int = 8) -> list[ev.EventPayload]:
        if now is not None:
            self.now = now
        self.rec.tick(self.now, slots)
        return self.take()

    def restart(self, slots: int = 8) -> None:
        """A new service process: rebuild from the log, recover, tick."""
        self.rec = Reconciler(self.graph)
        self.rec.load(list(self.log))
        self.rec.recover(self.now)
        self.rec.tick(self.now, slots)
        self.take()

    def replayed(self) -> dict[str, object]:
        fresh = BuildState(self.graph)
        for event in self.log:
            fresh.apply(event)
        return canonical(fresh)

    def status(self, want_id: WantId) -> str:
        return self.state.wants[want_id].status.value

    def run_of(self, text: str) -> JobRunId:
        """The latest StartRun that builds ``text``."""
        target = ref(text)
        for effect in reversed(self.starts()):
            if target in effect.partition_refs:
                return effect.job_run_id
        raise AssertionError(f"no run started for {text}")
