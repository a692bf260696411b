"""Deterministic simulation of the real controller (issue 14.6).

What runs is the production ``Controller`` (its loop, its storage retries, its clock
clamping, its recovery at start) on simulated ports: an in-memory Build Event Log that
fails from a seed (a lost connection before any statement, an append whose commit went
through before the error, a slow fsync during which time passes), an executor whose jobs
discover their inputs at run time and succeed, fail, crash or report missing inputs from
the same seed, a fake clock that also jumps an hour backwards or forwards, and restarts
(the process dies: the controller is dropped mid-flight, its runs lost, and a new one
starts on the same log). Every step, the harness checks the invariants of the core
against the log and the controller's state; at the end, with faults off, every want must
end. One seed is one exact history: ``simulate(seed)`` twice gives the same log digest,
so a failing seed replays exactly (``python -m bench.simulation --seed N``).

Used by tests/sim/test_simulation.py (a fixed set of seeds) and bench/simulation.py (many).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from databuild.config import load_config
from databuild.core import events as ev
from databuild.core.errors import StorageError, StorageUnavailable
from databuild.core.events import Event, EventPayload
from databuild.core.lifecycle import PartitionStatus
from databuild.core.model import GraphSpec, WantRequest, WantSource
from databuild.core.model import WantStatus as W
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunSucceeded
from databuild.core.refs import PartitionRef, parse_ref
from databuild.core.state import BuildState, canonical
from databuild.executors.fake import FakeExecutor
from databuild.executors.port import RunRequest
from databuild.log.memory import InMemoryEventLog, InMemoryStore
from databuild.runtime import controller as controller_module
from databuild.runtime.clock import FakeClock
from databuild.runtime.controller import Controller
from databuild.runtime.snapshots import SnapshotStore

CONFIG = """
[graph]
name = "sim"

[jobs.ingest]
outputs = ["raw/date={date}"]
command = ["true"]
retries = 3
retry_backoff = "30s"
concurrency = 2

[jobs.clean]
outputs = ["daily/date={date}"]
command = ["true"]
inputs = ["raw/date={date}"]  # an input hint: raw is wanted before the first run
retries = 3
retry_backoff = "30s"
concurrency = 2

[jobs.summary]
outputs = ["summary/{name}"]
command = ["true"]
retries = 2
retry_backoff = "1m"
"""
DATES = tuple(f"2024-01-0{d}" for d in range(1, 7))
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
HOUR = 3600
_PARTITION_OF_WANT = {
    W.PENDING: {PartitionStatus.ABSENT},
    W.BUILDING: {PartitionStatus.BUILDING},
    W.WAITING: {PartitionStatus.WAITING},
    W.RETRYING: {PartitionStatus.BACKOFF},
}


@dataclass(frozen=True)
class Faults:
    """Probabilities per log call (storage) or per step (the rest)."""

    connection_lost: float = 0.04  # any log call raises before it does anything
    commit_unknown: float = 0.03  # an append commits, then raises
    slow_fsync: float = 0.05  # an append takes 1-120 s of simulated time
    job_crash: float = 0.08  # a finishing run crashed (retryable failure)
    job_fails: float = 0.04  # a finishing run failed for good
    clock_jump: float = 0.03  # the wall clock steps an hour back or forth
    restart: float = 0.03  # the process dies and a new one starts on the log

    @staticmethod
    def none() -> Faults:
        return Faults(0, 0, 0, 0, 0, 0, 0)


@dataclass
class Report:
    seed: int
    steps: int = 0
    events: int = 0
    found: Counter[str] = field(default_factory=Counter)  # fault kind -> times injected
    wants: Counter[str] = field(default_factory=Counter)  # final want status -> count
    digest: str = ""


class SimulationFailure(AssertionError):
    """An invariant broke: the message names the seed and the step to replay it."""


class SimLog(InMemoryEventLog):
    """The in-memory log, failing from the seed while ``faults`` are on."""

    def __init__(
        self, store: InMemoryStore, rng: random.Random, sim: Simulation, faults: Faults
    ) -> None:
        super().__init__(store)
        self.rng = rng
        self.sim = sim
        self.faults = faults

    def _maybe_lose(self, call: str) -> None:
        if self.rng.random() < self.faults.connection_lost:
            self.sim.report.found["connection lost"] += 1
            raise StorageUnavailable(f"simulated: connection lost before {call}")

    def acquire_writer(self, owner: str) -> None:
        self._maybe_lose("acquire_writer")
        super().acquire_writer(owner)

    def last_sequence(self) -> int:
        self._maybe_lose("last_sequence")
        return super().last_sequence()

    def read(
        self, after: int = 0, limit: int | None = None, types: Collection[str] | None = None
    ) -> list[Event]:
        self._maybe_lose("read")
        if limit is None:
            return super().read(after, types=types)
        return super().read(after, limit, types)

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self._maybe_lose("append")
        if self.rng.random() < self.faults.slow_fsync:
            self.sim.report.found["slow fsync"] += 1
            self.sim.clock.advance(self.rng.uniform(1, 120))  # time passes during the fsync
        stored = super().append(payloads, timestamp)
        if self.rng.random() < self.faults.commit_unknown:
            self.sim.report.found["commit outcome unknown"] += 1
            raise StorageUnavailable("simulated: connection lost at COMMIT")
        return stored


class SimExecutor(FakeExecutor):
    """Jobs that look up their inputs when they run (as real jobs do): a daily needs its
    raw, a summary needs every daily; otherwise they report the missing ones."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(slots=4)
        self.sim = sim

    def needs(self, ref: PartitionRef) -> tuple[PartitionRef, ...]:
        text = str(ref)
        if text.startswith("daily/date="):
            return (parse_ref("raw/date=" + text.split("=", 1)[1]),)
        if text.startswith("summary/"):
            return tuple(parse_ref(f"daily/date={d}") for d in DATES)
        return ()

    def outcome(self, request: RunRequest) -> RunSucceeded | RunFailed | RunMissingDeps:
        rng, faults = self.sim.rng, self.sim.faults
        state = self.sim.controller_state()
        missing = []
        for ref in request.partition_refs:
            lacking = tuple(
                dep
                for dep in self.needs(ref)
                if (part := state.partitions.get(dep)) is None
                or part.status is not PartitionStatus.LIVE
            )
            if lacking:
                missing.append(ev.MissingDeps(ref, lacking))
        roll = rng.random()
        if roll < faults.job_crash:
            self.sim.report.found["job crash"] += 1
            return RunFailed(ev.FailureKind.EXIT_NONZERO, "simulated crash", 137, 1.0)
        if roll < faults.job_crash + faults.job_fails:
            self.sim.report.found["job failed"] += 1
            return RunFailed(ev.FailureKind.PERMANENT, "simulated failure", 1, 1.0)
        if missing:
            return RunMissingDeps(tuple(missing), 1.0)
        return RunSucceeded(1.0)


class Simulation:
    def __init__(self, seed: int, faults: Faults, root: Path) -> None:
        self.seed = seed
        self.faults = faults
        self.rng = random.Random(seed)
        self.log_rng = random.Random(seed * 7919 + 1)
        self.fold_rng = random.Random(seed * 104729 + 3)  # snapshot and flush intervals
        self.report = Report(seed)
        self.clock = FakeClock(float(T0 + HOUR))
        self.store = InMemoryStore()
        self.root = root
        (root / "databuild.toml").write_text(CONFIG)
        self.graph: GraphSpec = load_config(root / "databuild.toml", {}).graph
        self.controller: Controller | None = None
        self.executor = SimExecutor(self)
        self.checked = 0  # events checked so far by the one-pass invariants
        self.live_seen: set[PartitionRef] = set()
        self.sla_missed: set[str] = set()
        self.want_ids: set[str] = set()
        self.run_ids: set[str] = set()
        self.last_timestamp = 0.0
        self.step = 0

    # ---- the ports ----------------------------------------------------------------
    def controller_state(self) -> BuildState:
        assert self.controller is not None
        return self.controller.state

    def new_log(self, faults: Faults) -> SimLog:
        return SimLog(self.store, self.log_rng, self, faults)

    async def start(self, faults: Faults) -> None:
        """Start a controller on the log; a start that meets a storage fault is retried,
        as a supervisor restarts a service that exited."""
        while True:
            self.executor = SimExecutor(self)
            controller = Controller(
                self.graph,
                self.new_log(faults),
                self.executor,
                root_dir=self.root,
                runs_dir=self.root / "runs",
                clock=self.clock,
                owner=f"sim {self.seed} start {self.step}",
                storage_grace=1e9,  # simulated outages end; the grace is not what is tested
                # the compact fold under crashes: snapshots (forked, as in the service) and
                # the history store beside them, flushed often, survive a crash as a real
                # one leaves them; every restart starts from them
                snapshots=SnapshotStore(self.root / "snapshots", self.graph),
                snapshot_every=self.fold_rng.choice((20, 60, 100_000)),
            )
            controller.flush_at = self.fold_rng.choice((1, 4, 32))
            controller._rng = random.Random(self.seed + self.step)
            try:
                await controller.start()
            except StorageError:
                self.store.writer = None  # the failed process's session is gone
                with contextlib.suppress(Exception):
                    await controller.stop()
                self.store.writer = None
                continue
            self.controller = controller
            return

    async def crash(self) -> None:
        """The process dies: no stop, no snapshot; its session (and writer lock) ends."""
        controller = self.controller
        assert controller is not None
        task = controller._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if controller.history is not None:
            controller.history.close()  # the process's file lock goes with it; nothing flushed
        self.store.writer = None
        self.controller = None

    # ---- one step -----------------------------------------------------------------
    async def do_step(self) -> None:
        rng = self.rng
        controller = self.controller
        assert controller is not None
        self.step += 1
        action = rng.random()
        if action < 0.25:
            await self.want(rng)
        elif action < 0.32:
            await self.cancel(rng)
        else:
            self.finish_some(rng)
        if rng.random() < self.faults.clock_jump:
            self.report.found["clock jump"] += 1
            self.clock.step(rng.choice((-HOUR, HOUR)))  # a step: no time passes
        else:
            self.clock.advance(rng.choice((1, 5, 30, 60)))
        await self.poke()
        if rng.random() < self.faults.restart:
            self.report.found["restart"] += 1
            await self.crash()
            await self.start(self.faults)
            await self.poke()

    async def want(self, rng: random.Random) -> None:
        assert self.controller is not None
        kind = rng.random()
        if kind < 0.5:
            ref = f"daily/date={rng.choice(DATES)}"
        elif kind < 0.8:
            ref = f"raw/date={rng.choice(DATES)}"
        else:
            ref = "summary/all"
        request = WantRequest(
            parse_ref(ref),
            data_timestamp=T0,
            source=WantSource.API,
            sla_seconds=rng.choice((0, 0, 600, 3 * HOUR)),
        )
        # A client whose request met an outage (503) or was cut off asks again.
        with contextlib.suppress(StorageError):
            await asyncio.wait_for(self.controller.create_wants([request]), 30)

    async def cancel(self, rng: random.Random) -> None:
        assert self.controller is not None
        active = sorted(w for w, r in self.controller.state.wants.items() if r.active)
        if active:
            with contextlib.suppress(StorageError):
                await asyncio.wait_for(
                    self.controller.cancel_want(rng.choice(active), "simulated cancel"), 30
                )

    def finish_some(self, rng: random.Random) -> None:
        for run_id in sorted(self.executor.running):
            if rng.random() < 0.6:
                request = self.executor.running[run_id]
                self.executor.finish(run_id, self.executor.outcome(request))

    async def poke(self) -> None:
        """Run steps until the controller is at rest: its inbox empty and no step half
        done (a step's only suspension is its append, when the state is ahead of the log).
        The loop also steps on its own when reports arrive; this waits for all of it."""
        controller = self.controller
        assert controller is not None
        committed = InMemoryEventLog(self.store)
        while True:
            try:
                await asyncio.wait_for(controller.poke(), 60)
                if controller._inbox.empty() and (
                    controller.state.last_sequence == committed.last_sequence()
                ):
                    return
            except StorageError:
                # the poke was refused while an append is retried: wait for it to end
                await controller.wait_for_events(controller.last_committed, 0.01)
                if controller.failure is not None:
                    raise self.fail(f"the controller stopped: {controller.failure}") from None

    # ---- invariants -----------------------------------------------------------------
    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(
            f"seed {self.seed}, step {self.step}: {what} "
            f"(replay: python -m bench.simulation --seed {self.seed})"
        )

    def check(self) -> None:
        controller = self.controller
        assert controller is not None
        events = InMemoryEventLog(self.store).read(0)
        if [e.sequence for e in events] != list(range(1, len(events) + 1)):
            raise self.fail("the log's sequences have a gap or a duplicate")
        for event in events[self.checked :]:
            if event.timestamp < self.last_timestamp:
                raise self.fail(f"event {event.sequence}'s timestamp goes backwards")
            self.last_timestamp = event.timestamp
            self.check_event(event)
        self.checked = len(events)
        if controller.storage_down:
            return  # the state may be ahead of the log until the append is retried
        if controller.state.last_sequence != len(events):
            raise self.fail(
                f"state at {controller.state.last_sequence}, log at {len(events)} (lost or doubled)"
            )
        fresh = BuildState(self.graph)
        for event in events:
            fresh.apply(event)
        if canonical(fresh) != canonical(controller.state):
            raise self.fail("the state in memory differs from a fold of the log")
        self.check_state(controller.state)

    def check_event(self, event: Event) -> None:
        payload = event.payload
        if isinstance(payload, ev.WantCreated):
            if payload.want.want_id in self.want_ids:
                raise self.fail(f"want {payload.want.want_id} created twice")
            self.want_ids.add(payload.want.want_id)
        elif isinstance(payload, ev.JobRunQueued):
            if payload.job_run_id in self.run_ids:
                raise self.fail(f"run {payload.job_run_id} queued twice")
            self.run_ids.add(payload.job_run_id)
            rebuilt = set(payload.partition_refs) & self.live_seen
            if rebuilt:
                raise self.fail(f"live partitions queued again: {sorted(map(str, rebuilt))}")
        elif isinstance(payload, ev.PartitionLive):
            if payload.partition_ref in self.live_seen:
                raise self.fail(f"{payload.partition_ref} made live twice")
            self.live_seen.add(payload.partition_ref)
        elif isinstance(payload, ev.SlaMissed):
            if payload.want_id in self.sla_missed:
                raise self.fail(f"SLA of {payload.want_id} missed twice")
            self.sla_missed.add(payload.want_id)

    def check_state(self, state: BuildState) -> None:
        building: Counter[PartitionRef] = Counter()
        for run in state.runs.values():
            if not run.status.terminal:
                building.update(run.partition_refs)
        doubled = [str(ref) for ref, n in building.items() if n > 1]
        if doubled:
            raise self.fail(f"built by two runs at once: {doubled}")
        for want_id, record in state.wants.items():
            part = state.partitions[record.want.partition_ref]
            if record.status is W.SATISFIED and part.status is not PartitionStatus.LIVE:
                raise self.fail(f"{want_id} satisfied but {part.ref} is {part.status.value}")
            if not record.active:
                continue
            if part.status not in _PARTITION_OF_WANT.get(record.status, set()):
                raise self.fail(f"{want_id} is {record.status.value}, {part.ref} {part.status}")
            if part.status is PartitionStatus.WAITING:
                for dep in part.waiting_on:
                    dep_part = state.partitions.get(dep)
                    if dep_part is None or not dep_part.active_wants:
                        raise self.fail(f"{part.ref} waits on {dep}, which nobody wants: a hang")

    # ---- the whole run --------------------------------------------------------------
    async def run(self, steps: int) -> Report:
        patched = controller_module.retry_delay
        controller_module.retry_delay = _no_delay  # simulated back-off: no real sleeping
        try:
            await self.start(self.faults)
            for _ in range(steps):
                await self.do_step()
                self.check()
            await self.drain()
        finally:
            controller_module.retry_delay = patched
            if self.controller is not None:
                with contextlib.suppress(Exception):
                    await self.controller.stop()
        events = InMemoryEventLog(self.store).read(0)
        self.report.steps = self.step
        self.report.events = len(events)
        self.report.digest = digest(events)
        return self.report

    async def drain(self) -> None:
        """Faults off, a fresh process (as after the last restart), then honest progress
        until every want has ended: nothing may hang."""
        await self.crash()
        self.faults = Faults.none()
        await self.start(self.faults)
        for _ in range(400):
            await self.poke()
            self.check()
            state = self.controller_state()
            if not any(r.active for r in state.wants.values()) and not self.executor.running:
                break
            self.step += 1
            for run_id in sorted(self.executor.running):
                self.executor.finish(run_id, self.executor.outcome(self.executor.running[run_id]))
            self.clock.advance(120)
        state = self.controller_state()
        stuck = sorted(w for w, r in state.wants.items() if r.active)
        if stuck:
            raise self.fail(f"wants never ended: {stuck[:5]}")
        self.report.wants = Counter(r.status.value for r in state.wants.values())


def _no_delay(attempt: int, rng: random.Random) -> float:
    return 0.0


def digest(events: Sequence[Event]) -> str:
    """The history's fingerprint: every event's type, time and payload, in order."""
    h = hashlib.sha256()
    for event in events:
        h.update(f"{event.sequence} {event.timestamp!r} {event.payload!r}\n".encode())
    return h.hexdigest()[:16]


def simulate(seed: int, steps: int = 150, faults: Faults | None = None) -> Report:
    """One seed's history, checked at every step; raises SimulationFailure on a break."""
    with tempfile.TemporaryDirectory(prefix="databuild-sim-") as tmp:
        sim = Simulation(seed, faults or Faults(), Path(tmp))
        return asyncio.run(sim.run(steps))


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)
