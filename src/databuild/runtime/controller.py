"""The controller loop: the I/O shell around the pure ``Reconciler``.

Who calls it: the service (HTTP handlers submit want requests and cancels; the event
stream waits on commits) and tests. What it does, one *step* at a time: take every input
that has arrived (want requests, cancels, executor reports), let the reconciler decide,
fire due timers and dispatch (``tick``), append all resulting events to the Build Event
Log in ONE transaction, and only after that commit acknowledge clients and start or kill
runs. It sleeps until an input arrives or the reconciler's next timer is due: no polling.

What it must not do: decide anything itself, or acknowledge a want before the event that
records it is durable. A failed append stops the controller (state in memory may be ahead
of the log); a restart rebuilds state from the log, which is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from databuild.core.errors import DataBuildError, StorageError
from databuild.core.model import GraphSpec, WantId, WantRequest, WantStatus
from databuild.core.outcomes import ExecutorReport, RunFinishedReport, RunStartedReport
from databuild.core.reconcile import (
    Effect,
    KillOrphan,
    KillRun,
    Reconciler,
    ReloadSummary,
    StartRun,
)
from databuild.core.refs import PartitionRef
from databuild.core.state import BuildState
from databuild.executors.port import Executor, RunRequest
from databuild.log.port import BuildEventLog
from databuild.runtime.clock import Clock, SystemClock
from databuild.runtime.snapshots import SnapshotStore, worth_writing_at_stop

log = logging.getLogger("databuild.controller")

_LOAD_CHUNK = 50_000


@dataclass
class _WantInput:
    requests: Sequence[WantRequest]
    done: asyncio.Future[list[WantId]]


@dataclass
class _CancelInput:
    want_id: WantId
    reason: str
    done: asyncio.Future[WantStatus]


@dataclass
class _UpstreamLiveInput:
    refs: Sequence[PartitionRef]
    upstream: str
    done: asyncio.Future[None]


@dataclass
class _Poke:
    done: asyncio.Future[None]


@dataclass
class _ReloadInput:
    graph: GraphSpec
    config_digest: str
    done: asyncio.Future[ReloadSummary]


_Input = _WantInput | _CancelInput | _UpstreamLiveInput | _Poke | _ReloadInput | ExecutorReport


@dataclass
class ControllerStats:
    steps: int = 0
    events: int = 0
    last_step_seconds: float = 0.0
    step_seconds_total: float = 0.0
    started_runs: int = 0


class Controller:
    def __init__(
        self,
        graph: GraphSpec,
        event_log: BuildEventLog,
        executor: Executor,
        *,
        root_dir: Path,
        runs_dir: Path,
        graph_url: str = "",
        clock: Clock | None = None,
        owner: str = "",
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 200_000,
    ) -> None:
        self.graph = graph
        self.log = event_log
        self.executor = executor
        self.root_dir = root_dir
        self.runs_dir = runs_dir
        self.graph_url = graph_url
        self.clock: Clock = clock or SystemClock()
        self.owner = owner or f"databuild service pid {os.getpid()}"
        self.reconciler = Reconciler(graph)
        self.stats = ControllerStats()
        self.failure: BaseException | None = None
        self._inbox: asyncio.Queue[_Input] = asyncio.Queue()
        self._committed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.last_committed = 0
        self._background: set[asyncio.Task[None]] = set()
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self._snapshot_sequence = 0
        self._snapshot_child: int | None = None
        self.loaded_from_snapshot = 0

    @property
    def state(self) -> BuildState:
        return self.reconciler.state

    @property
    def last_sequence(self) -> int:
        return self.reconciler.state.last_sequence

    # ---- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Take the log's writer lock, rebuild state from it, recover runs, start the loop."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.log.acquire_writer, self.owner)
        after = 0
        if self.snapshots is not None:
            last = await asyncio.to_thread(self.log.last_sequence)
            snapshot = await asyncio.to_thread(self.snapshots.load, last)
            if snapshot is not None:
                self.reconciler = Reconciler(self.graph, snapshot.state)
                after = self._snapshot_sequence = self.loaded_from_snapshot = snapshot.sequence
        # The fold makes millions of long-lived objects and no cycles to collect: with the
        # collector on, it walks them again and again while they are made (~0.3 s of a
        # start at 10M events). Off while folding; then the folded state is moved out of
        # the collector's generations, so that no full collection in the middle of a step
        # walks millions of records either.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while True:
                chunk = await asyncio.to_thread(self.log.read, after, _LOAD_CHUNK)
                if not chunk:
                    break
                self.reconciler.load(chunk)
                after = chunk[-1].sequence
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        self.last_committed = self.reconciler.state.last_sequence
        self.executor.set_reporter(self._report)
        self.executor.prepare(self.graph.jobs, self.root_dir)
        self.reconciler.recover(self.clock.now())
        await self._commit_and_act(self.clock.now())
        self._task = asyncio.create_task(self._run(), name="databuild-controller")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.executor.close()
        await self._snapshot_at_stop()
        async with self._committed:
            self._committed.notify_all()

    # ---- inputs --------------------------------------------------------------------
    def _future(self) -> asyncio.Future[object]:
        self.raise_if_failed()
        return asyncio.get_running_loop().create_future()

    def raise_if_failed(self) -> None:
        """StorageError if the loop has stopped on an error (no more events will come)."""
        if self.failure is not None:
            raise StorageError(f"the controller stopped: {self.failure}")

    async def create_wants(self, requests: Sequence[WantRequest]) -> list[WantId]:
        """Create (or find) the wants; returns once their creation is durable."""
        done: asyncio.Future[list[WantId]] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_WantInput(requests, done))
        return await done

    async def cancel_want(self, want_id: WantId, reason: str) -> WantStatus:
        done: asyncio.Future[WantStatus] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_CancelInput(want_id, reason, done))
        return await done

    async def upstream_live(self, refs: Sequence[PartitionRef], upstream: str) -> None:
        done: asyncio.Future[None] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_UpstreamLiveInput(refs, upstream, done))
        await done

    async def reload(self, graph: GraphSpec, config_digest: str) -> ReloadSummary:
        """Route new runs by ``graph`` (between two steps; runs in flight go on); returns
        once the ``config_reloaded`` event and the wants it reopened are durable."""
        done: asyncio.Future[ReloadSummary] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_ReloadInput(graph, config_digest, done))
        return await done

    async def poke(self) -> None:
        """Run one step now (tests move a FakeClock, then poke)."""
        done: asyncio.Future[None] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_Poke(done))
        await done

    def _report(self, report: ExecutorReport) -> None:
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._inbox.put_nowait, report)

    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Wait until the log holds an event after ``after`` (or timeout); return last seq."""
        async with self._committed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._committed.wait_for(
                        lambda: (
                            self.last_committed > after
                            or self._stopping
                            or self.failure is not None
                        )
                    ),
                    timeout,
                )
        return self.last_committed

    # ---- the loop ------------------------------------------------------------------
    async def _next_input(self) -> _Input | None:
        wake = self.reconciler.next_wakeup()
        if wake is None:
            return await self._inbox.get()
        delay = max(0.0, wake - self.clock.now())
        try:
            return await asyncio.wait_for(self._inbox.get(), delay)
        except TimeoutError:
            return None

    async def _run(self) -> None:
        try:
            while not self._stopping:
                first = await self._next_input()
                batch: list[_Input] = [] if first is None else [first]
                while not self._inbox.empty() and len(batch) < 10_000:
                    batch.append(self._inbox.get_nowait())
                await self._step(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the loop must not die silently
            self.failure = exc
            log.error("controller stopped: %s", exc)
            self._fail_pending(exc)
            async with self._committed:
                self._committed.notify_all()

    def _fail_pending(self, exc: BaseException) -> None:
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            done = getattr(item, "done", None)
            if done is not None and not done.done():
                done.set_exception(StorageError(f"the controller stopped: {exc}"))

    async def _step(self, batch: list[_Input]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = self.clock.now()
        replies: list[tuple[asyncio.Future[object], object]] = []
        failures: list[tuple[asyncio.Future[object], BaseException]] = []
        rec = self.reconciler
        for item in batch:
            try:
                if isinstance(item, RunStartedReport):
                    rec.run_started(item, now)
                elif isinstance(item, RunFinishedReport):
                    rec.run_finished(item, now)
                elif isinstance(item, _WantInput):
                    ids = [rec.request_want(r, now) for r in item.requests]
                    replies.append((item.done, ids))  # type: ignore[arg-type]
                elif isinstance(item, _CancelInput):
                    status = rec.cancel_want(item.want_id, item.reason, now)
                    replies.append((item.done, status))  # type: ignore[arg-type]
                elif isinstance(item, _ReloadInput):
                    summary = rec.reload(item.graph, item.config_digest, now)
                    self._use_graph(item.graph, {*summary.jobs_added, *summary.jobs_changed})
                    replies.append((item.done, summary))  # type: ignore[arg-type]
                elif isinstance(item, _UpstreamLiveInput):
                    for ref in item.refs:
                        rec.partition_live_upstream(ref, item.upstream, now)
                    replies.append((item.done, None))  # type: ignore[arg-type]
                else:
                    replies.append((item.done, None))  # type: ignore[arg-type]
            except DataBuildError as exc:
                done = getattr(item, "done", None)
                if done is not None:
                    failures.append((done, exc))
        try:
            await self._commit_and_act(now)
        except BaseException as exc:
            for done, _ in replies:
                if not done.done():
                    done.set_exception(StorageError(f"not recorded: {exc}"))
            raise
        for done, value in replies:
            if not done.done():
                done.set_result(value)
        for done, error in failures:
            if not done.done():
                done.set_exception(error)
        elapsed = loop.time() - started
        self.stats.steps += 1
        self.stats.last_step_seconds = elapsed
        self.stats.step_seconds_total += elapsed

    def _use_graph(self, graph: GraphSpec, new_jobs: set[str]) -> None:
        self.graph = graph
        if self.snapshots is not None:  # a snapshot is stamped with the graph it routes by
            self.snapshots = SnapshotStore(self.snapshots.directory, graph)
        # warm workers for the jobs that are new or changed (the others have theirs)
        self.executor.prepare([j for j in graph.jobs if j.name in new_jobs], self.root_dir)

    async def _commit_and_act(self, now: float) -> None:
        self.reconciler.tick(now, self.executor.free_slots())
        events, effects = self.reconciler.take()
        if events:
            first = events[0].sequence
            stored = await asyncio.to_thread(self.log.append, [e.payload for e in events], now)
            if not stored or stored[0].sequence != first or len(stored) != len(events):
                raise StorageError(
                    "the Build Event Log assigned sequence numbers this service did not "
                    "expect: another writer appended to it; restart to rebuild state"
                )
            self.stats.events += len(events)
            self._maybe_snapshot()
            async with self._committed:
                self.last_committed = events[-1].sequence
                self._committed.notify_all()
        for effect in effects:
            await self._carry_out(effect)

    def _maybe_snapshot(self) -> None:
        """Right after a commit (state == log): fork a snapshot every ``snapshot_every``."""
        store = self.snapshots
        if store is None:
            return
        if self._snapshot_child is not None:
            if store.reap(self._snapshot_child) is None:
                return
            self._snapshot_child = None
        sequence = self.state.last_sequence
        if sequence - self._snapshot_sequence >= self.snapshot_every:
            self._snapshot_child = store.write_in_background(self.state)
            self._snapshot_sequence = sequence

    async def _snapshot_at_stop(self) -> None:
        store = self.snapshots
        if store is None or self.failure is not None:
            return
        state = self.state
        records = len(state.wants) + len(state.partitions) + len(state.runs)
        if not worth_writing_at_stop(state.last_sequence - self._snapshot_sequence, records):
            return
        try:
            # only when the state is exactly the log (a stop mid-append may leave it ahead)
            if await asyncio.to_thread(self.log.last_sequence) == self.state.last_sequence:
                await asyncio.to_thread(store.write, self.state)
        except Exception as exc:  # a snapshot is a cache: failing to write one is no error
            log.warning("no snapshot written at stop: %s", exc)

    async def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, StartRun):
            job = self.graph.job(effect.job_name)
            request = RunRequest(
                job_run_id=effect.job_run_id,
                job=job,
                partition_refs=effect.partition_refs,
                graph_url=self.graph_url,
                root_dir=self.root_dir,
                runs_dir=self.runs_dir,
            )
            self.stats.started_runs += 1
            await self.executor.start(request)
        elif isinstance(effect, KillRun):
            # Killing waits out a grace period; the loop must not wait with it.
            task = asyncio.create_task(self.executor.kill(effect.job_run_id, effect.reason))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif isinstance(effect, KillOrphan):
            await asyncio.to_thread(self.executor.kill_orphan, effect.job_run_id, effect.pid)
