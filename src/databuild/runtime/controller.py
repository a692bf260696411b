"""The controller loop: the I/O shell around the pure ``Reconciler``.

Who calls it: the service (HTTP handlers submit want requests and cancels; the event
stream waits on commits) and tests. What it does, one *step* at a time: take every input
that has arrived (want requests, cancels, executor reports), let the reconciler decide,
fire due timers and dispatch (``tick``), append all resulting events to the Build Event
Log in ONE transaction, and only after that commit acknowledge clients and start or kill
runs (while the commit waits on the disk, the executor stages the runs it will start:
``Executor.stage``; a local log's fast appends run on the loop itself, see
``_inline_appends``, and the staging then on a thread beside them). It sleeps until an input arrives or the reconciler's next timer is
due: no polling.

What it must not do: decide anything itself, or acknowledge a want before the event that
records it is durable.

Storage faults (docs/operations.md, "What DataBuild survives and how"): an append that
fails with ``StorageUnavailable`` (connection lost, server restarting, lock or
serialization timeout, SQLite busy, disk full) is retried with capped, jittered back-off
for up to the storage grace. While it is retried, new writes are refused (503 with the
reason), reads are served from memory, running jobs go on (their reports wait in the
inbox). Before each retry the writer re-takes the log's writer lock and reads the log's
tail, because the failed attempt may have committed (the connection died at COMMIT): if
the tail holds exactly this step's events the step is done, if it ends just before them
they are appended again, anything else means another writer and is fatal. Why the tail
and not an idempotency id per append: one writer holds the lock, so the sequence numbers
this step expects already are that id; it needs no schema change and works the same on
every backend. Any other error, or a fault outlasting the grace, stops the controller for
good (``failed`` is set; the server then exits non-zero for a supervisor to restart it;
state in memory may be ahead of the log, and a restart rebuilds it from the log).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from databuild.core import hints, invalidation
from databuild.core.errors import (
    DataBuildError,
    InvalidInput,
    LogLocked,
    StorageError,
    StorageUnavailable,
)
from databuild.core.events import Event, EventPayload
from databuild.core.model import GraphSpec, JobRunId, JobSpec, WantId, WantRequest, WantStatus
from databuild.core.outcomes import ExecutorReport, RunFinishedReport, RunStartedReport
from databuild.core.reconcile import (
    Effect,
    KillOrphan,
    KillRun,
    Reconciler,
    ReloadSummary,
    StartRun,
)
from databuild.core.refs import PartitionRef, parse_ref
from databuild.core.state import FLUSH_AT, BuildState
from databuild.executors.port import Executor, RunRequest
from databuild.log.port import BuildEventLog, SharedEventLog
from databuild.runtime.clock import Clock, SystemClock
from databuild.runtime.history import SqliteHistory, starting_state
from databuild.runtime.snapshots import SnapshotStore, worth_writing_at_stop

log = logging.getLogger("databuild.controller")

_RECENT = 10_000  # committed events kept in memory for the event stream
_LOAD_CHUNK = 50_000
_MAX_BATCH = 10_000  # inputs folded in one step at most
# How long a step of nothing but run starts waits for more input to share its commit: long
# enough for a short run's result to arrive, short enough that `running` shows at once.
START_COALESCE_SECONDS = 0.025

# A local log's appends run on the event loop once this many in a row each took under
# this long (``Controller._inline_appends``); a slower one sends them back to a thread.
INLINE_APPEND_SECONDS = 0.005
INLINE_WINDOW = 16

STORAGE_GRACE_ENV = "DATABUILD_STORAGE_GRACE"
DEFAULT_STORAGE_GRACE_SECONDS = 300.0
RETRY_FIRST_SECONDS = 0.05
RETRY_CAP_SECONDS = 5.0


def storage_grace_from(environ: dict[str, str] | os._Environ[str]) -> float:
    """The storage grace in seconds: ``$DATABUILD_STORAGE_GRACE`` or the default."""
    raw = environ.get(STORAGE_GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_STORAGE_GRACE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(
            f"${STORAGE_GRACE_ENV} must be a number of seconds >= 0 (how long a storage "
            f"outage is retried before the service exits); got {raw!r}"
        )
    return value


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Back-off before retry ``attempt`` (0-based): exponential from 50 ms, capped at
    5 s, with full jitter over its upper half so many services do not retry in step."""
    ceiling = min(RETRY_CAP_SECONDS, RETRY_FIRST_SECONDS * 2.0 ** min(attempt, 16))
    return ceiling / 2 + rng.random() * ceiling / 2


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
    sequences: Sequence[int] = ()  # per ref: the upstream event it was learned from


@dataclass
class _UpstreamFailedInput:
    refs: Sequence[PartitionRef]
    upstream: str
    message: str
    done: asyncio.Future[None]


@dataclass
class _ExternalLiveInput:
    refs: tuple[PartitionRef, ...]
    done: asyncio.Future[None]


@dataclass(frozen=True)
class Invalidation:
    """What ``databuild partition invalidate`` asks: ``refs`` (and, with ``downstream``,
    what was built from them), or the partitions of ``job`` built by an older version."""

    refs: tuple[PartitionRef, ...] = ()
    downstream: bool = False
    job: str = ""
    reason: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class InvalidationResult:
    partition_refs: tuple[PartitionRef, ...]
    reopened_want_ids: tuple[WantId, ...]


@dataclass
class _InvalidateInput:
    request: Invalidation
    done: asyncio.Future[InvalidationResult]


@dataclass
class _Poke:
    done: asyncio.Future[None]


@dataclass
class _ReloadInput:
    graph: GraphSpec
    config_digest: str
    done: asyncio.Future[ReloadSummary]


_Input = (
    _WantInput
    | _CancelInput
    | _UpstreamLiveInput
    | _ExternalLiveInput
    | _InvalidateInput
    | _UpstreamFailedInput
    | _Poke
    | _ReloadInput
    | ExecutorReport
)


@dataclass
class ControllerStats:
    steps: int = 0
    events: int = 0
    last_step_seconds: float = 0.0
    step_seconds_total: float = 0.0
    started_runs: int = 0
    storage_retries: int = 0
    storage_outages: int = 0


# Events between snapshots: a restart folds at most this many after the newest. With the
# compact fold a snapshot holds active work and partitions only (at 10M events: ~5 s to
# write in the forked child, ~53 MB; one child at a time), so they are taken often: a
# 100k-event tail was ~1 s of a 10M-event start, 50k is half that (docs/performance.md).
SNAPSHOT_EVERY = 50_000


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
        snapshot_every: int = SNAPSHOT_EVERY,
        storage_grace: float | None = None,
        state: BuildState | None = None,
    ) -> None:
        """``state``: the log already folded up to some event (a standby taking over);
        ``start`` folds the rest instead of starting from a snapshot."""
        self.graph = graph
        self.log = event_log
        self.executor = executor
        self.root_dir = root_dir
        self.runs_dir = runs_dir
        self.graph_url = graph_url
        self.clock: Clock = clock or SystemClock()
        self.owner = owner or f"databuild service pid {os.getpid()}"
        self.reconciler = Reconciler(graph, state) if state is not None else Reconciler(graph)
        self._given_state = state is not None
        self.stats = ControllerStats()
        self.failure: BaseException | None = None
        self.start_coalesce_seconds = START_COALESCE_SECONDS
        self.failed = asyncio.Event()  # set once the loop has stopped on an error
        self.storage_grace = (
            storage_grace_from(os.environ) if storage_grace is None else storage_grace
        )
        self.storage_down = ""  # why storage is unavailable, while an append is retried
        self.storage_down_since = 0.0  # wall clock, for /healthz
        self._rng = random.Random()
        self._latest = 0.0  # the newest time handed to the core or written to the log
        self._inbox: asyncio.Queue[_Input] = asyncio.Queue()
        # Waiters on commits (the event stream, long-polls) await the current signal; each
        # commit sets it and puts a fresh one in its place. A plain Event per commit, not a
        # Condition: a waiter cancelled when its client leaves holds no lock to re-take
        # (asyncio.Condition's re-acquire on cancel can fail with "Lock is not acquired").
        self._commit_signal = asyncio.Event()
        # The newest committed events, in order and gap-free, so that followers of the
        # stream are served from memory instead of each reading the log on every commit:
        # ``recent`` holds the events after ``recent_base``, up to ``last_committed``.
        self.recent: list[Event] = []
        self.recent_base = 0
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
        self.history: SqliteHistory | None = None
        self.flush_at = FLUSH_AT  # finished records held before a flush to the store
        self._local_log = bool(getattr(event_log, "local_append", False))
        self._fast_appends = 0  # appends in a row under INLINE_APPEND_SECONDS
        # stages a step's runs while that step's append runs on the loop (see _append)
        self._stager: concurrent.futures.ThreadPoolExecutor | None = None

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
        after = self.reconciler.state.last_sequence if self._given_state else 0
        if self._given_state and isinstance(self.state.history, SqliteHistory):
            self.history = self.state.history  # a standby's, taking over: flushed from now
        if self.snapshots is not None and not self._given_state:
            last = await asyncio.to_thread(self.log.last_sequence)
            state, after = await asyncio.to_thread(starting_state, self.snapshots, self.graph, last)
            history = state.history
            self.history = history if isinstance(history, SqliteHistory) else None
            self.reconciler = Reconciler(self.graph, state)
            self._snapshot_sequence = self.loaded_from_snapshot = after
        # The fold makes millions of long-lived objects and no cycles to collect: with the
        # collector on, it walks them again and again while they are made (~0.3 s of a
        # start at 10M events). Off while folding; then the folded state is moved out of
        # the collector's generations, so that no full collection in the middle of a step
        # walks millions of records either.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(self.log.read, after, _LOAD_CHUNK)
                except StorageUnavailable:
                    raise
                except StorageError as exc:
                    raise await asyncio.to_thread(self._damaged, after, str(exc)) from None
                if not chunk:
                    break
                if chunk[0].sequence != after + 1 or chunk[-1].sequence != after + len(chunk):
                    raise await asyncio.to_thread(self._damaged, after, "events are missing")
                self.reconciler.load(chunk)
                after = chunk[-1].sequence
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        if self.history is not None:
            self.history.replay_done()
        self.last_committed = self.recent_base = self.reconciler.state.last_sequence
        self.executor.set_reporter(self._report)
        self.executor.answer_statuses_with(self.partition_statuses)
        self.executor.prepare(self.graph.jobs, self.root_dir)
        if self.reconciler.state.last_sequence > 0:
            newest = await asyncio.to_thread(
                self.log.read, self.reconciler.state.last_sequence - 1, 1
            )
            self._latest = newest[0].timestamp if newest else 0.0
        self.reconciler.recover(self._now())
        await self._commit_and_act(self._now())
        self._task = asyncio.create_task(self._run(), name="databuild-controller")

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: no more events will be committed."""
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._signal_commit()  # followers of the stream end now, not after the stop
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.executor.close()
        if self._stager is not None:
            self._stager.shutdown(wait=False)  # idle: the loop waits for what it stages
        self._flush_history()
        await self._snapshot_at_stop()
        if self.history is not None:
            self.history.close()
        self._signal_commit()

    # ---- inputs --------------------------------------------------------------------
    def _future(self) -> asyncio.Future[object]:
        self.raise_if_failed()
        self.raise_if_storage_down()
        return asyncio.get_running_loop().create_future()

    def raise_if_failed(self) -> None:
        """StorageError if the loop has stopped on an error (no more events will come)."""
        if self.failure is not None:
            raise StorageError(f"the controller stopped: {self.failure}")

    def raise_if_storage_down(self) -> None:
        """StorageUnavailable while an append is being retried: a write now would only
        wait behind it, so it is refused at once with the reason."""
        if self.storage_down:
            raise StorageUnavailable(
                f"the Build Event Log is unavailable, retrying (writes refused until it is "
                f"back; reads are served from memory): {self.storage_down}"
            )

    async def create_wants(self, requests: Sequence[WantRequest]) -> list[WantId]:
        """Create (or find) the wants; returns once their creation is durable."""
        done: asyncio.Future[list[WantId]] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_WantInput(requests, done))
        return await done

    async def cancel_want(self, want_id: WantId, reason: str) -> WantStatus:
        done: asyncio.Future[WantStatus] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_CancelInput(want_id, reason, done))
        return await done

    async def upstream_live(
        self, refs: Sequence[PartitionRef], upstream: str, sequences: Sequence[int] = ()
    ) -> None:
        """``upstream`` made ``refs`` live, learned from its events ``sequences`` (one per
        ref; recorded in the same append, as the follower's cursor). Returns once durable."""
        done: asyncio.Future[None] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_UpstreamLiveInput(refs, upstream, done, sequences))
        await done

    async def upstream_failed(
        self, refs: Sequence[PartitionRef], upstream: str, message: str
    ) -> None:
        """The wants forwarded to ``upstream`` for ``refs`` ended unsatisfied there."""
        done: asyncio.Future[None] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_UpstreamFailedInput(refs, upstream, message, done))
        await done

    async def externals_live(self, refs: Sequence[PartitionRef]) -> None:
        """Declare external partitions live; returns once that is durable (and the wants
        waiting on them are woken in the same step). InvalidInput: a ref is no external's."""
        done: asyncio.Future[None] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_ExternalLiveInput(tuple(refs), done))
        await done

    async def invalidate(self, request: Invalidation) -> InvalidationResult:
        """Invalidate live partitions (``core.invalidation`` decides the set, in the step,
        against the state of that moment) and reopen their client wants; returns once
        durable. InvalidInput: a ref not live, an upstream's, an unknown job."""
        done: asyncio.Future[InvalidationResult] = self._future()  # type: ignore[assignment]
        self._inbox.put_nowait(_InvalidateInput(request, done))
        return await done

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
        if asyncio._get_running_loop() is loop:  # the local executor reports on the loop:
            loop.call_soon(self._receive, report)  # no need to wake it through its pipe
        else:
            loop.call_soon_threadsafe(self._receive, report)

    def _receive(self, report: ExecutorReport) -> None:
        """On the loop: a start is stamped with when it was heard of, since its step may be
        later (``_coalesce_starts``)."""
        if isinstance(report, RunStartedReport) and not report.at:
            report = dataclasses.replace(report, at=self._now())
        self._inbox.put_nowait(report)

    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Wait until the log holds an event after ``after`` (or timeout, or the controller
        stops); return the last committed sequence. Safe to cancel at any point."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.last_committed <= after and not self._stopping and self.failure is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            signal = self._commit_signal
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await signal.wait()
        return self.last_committed

    def _signal_commit(self) -> None:
        signal, self._commit_signal = self._commit_signal, asyncio.Event()
        signal.set()

    def _remember(self, events: list[Event]) -> None:
        """Keep the newest ~``_RECENT`` committed events for the stream's followers."""
        recent = self.recent
        recent.extend(events)
        if len(recent) > 2 * _RECENT:
            drop = len(recent) - _RECENT
            self.recent_base = recent[drop - 1].sequence
            self.recent = recent[drop:]

    # ---- the loop ------------------------------------------------------------------
    def _damaged(self, after: int, detail: str) -> StorageError:
        """The error for a log that cannot be folded past some event (issue 14.3): which
        event, how many follow, and what a person can do. Nothing is changed."""
        good = after
        while True:  # find the first event that cannot be read, one at a time from after
            try:
                step = self.log.read(good, 1)
            except StorageError as exc:
                detail = str(exc)
                break
            if not step or step[0].sequence != good + 1:
                break
            good += 1
        last = self.log.last_sequence()
        lost = max(last - good, 1)
        return StorageError(
            f"the Build Event Log is damaged after event {good} of {last}: {detail}. The "
            "service did not start and changed nothing. Restore the log from a backup; or, "
            f"to keep events 1-{good} and lose the {lost} after them, delete those "
            f"(DELETE FROM build_events WHERE sequence > {good}) and start again"
        )

    def _now(self) -> float:
        """The clock's time, never before the newest already used: after the wall clock
        steps back (here or between two runs of the service) time stands still until it
        catches up, so the log's timestamps never go backwards and no timer fires early."""
        reading = self.clock.now()
        if reading < self._latest:
            return self._latest
        self._latest = reading
        return reading

    async def _next_input(self) -> _Input | None:
        wake = self.reconciler.next_wakeup()
        if wake is None:
            return await self._inbox.get()
        delay = max(0.0, wake - self._now())
        # asyncio.timeout, not wait_for: on 3.11 wait_for runs the get as a task of its own,
        # and a cancel (stop, or a crash in the simulation) landing while that inner task
        # is woken could leave the loop cancelling for ever (found by tests/sim).
        try:
            async with asyncio.timeout(delay):
                return await self._inbox.get()
        except TimeoutError:
            return None

    async def _run(self) -> None:
        try:
            while not self._stopping:
                first = await self._next_input()
                batch: list[_Input] = [] if first is None else [first]
                self._drain(batch)
                if batch and all(isinstance(item, RunStartedReport) for item in batch):
                    await self._coalesce_starts(batch)
                await self._step(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the loop must not die silently
            self.failure = exc
            self.storage_down = ""
            # info, not error: `databuild serve` then exits with the one line that says
            # why (service.server); embedded users read it from `failure` and /healthz.
            log.info("controller stopped: %s", exc)
            self._fail_pending(exc)
            self.failed.set()
            self._signal_commit()

    def _live_hinted_inputs(
        self, job: JobSpec, refs: Sequence[PartitionRef]
    ) -> tuple[PartitionRef, ...]:
        """The inputs ``job``'s hints name for ``refs`` that are live now (the run is told)."""
        if not job.inputs:
            return ()
        state = self.reconciler.state
        found = {dep: None for ref in refs for dep in hints.resolve(job, ref)}
        return tuple(dep for dep in found if state.is_live(dep))

    def partition_statuses(self, raw_refs: Sequence[str]) -> dict[str, str]:
        """What ``GET /api/v1/partitions?ref=…`` answers a job, for the executor to answer
        without HTTP: each known partition's status (from memory, like the API). Called on
        the event loop, between steps; raises InvalidInput for a malformed ref."""
        partitions = self.reconciler.state.partitions
        statuses: dict[str, str] = {}
        for index, raw in enumerate(raw_refs):
            try:
                ref = parse_ref(raw)
            except InvalidInput as exc:
                raise InvalidInput(f"ref[{index}]: {exc}") from None
            record = partitions.get(ref)
            if record is not None:
                statuses[raw] = record.status.value
        return statuses

    def _drain(self, batch: list[_Input]) -> None:
        while not self._inbox.empty() and len(batch) < _MAX_BATCH:
            batch.append(self._inbox.get_nowait())

    async def _coalesce_starts(self, batch: list[_Input]) -> None:
        """A step of nothing but runs that have started would cost a commit (an fsync) of
        its own per run, and a start is acknowledged to no one: wait up to
        ``start_coalesce_seconds`` for more input (most often the same run's result, or another
        run's) and record them in one commit. What a crash in the window loses is only that
        the runs had started: recovery finds them queued and retries them as lost, as after a
        crash just before such a commit. A due timer is not held back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_coalesce_seconds
        wake = self.reconciler.next_wakeup()
        if wake is not None:
            deadline = min(deadline, loop.time() + max(0.0, wake - self._now()))
        while not self._stopping and len(batch) < _MAX_BATCH:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._inbox.get())
            except TimeoutError:
                return
            self._drain(batch)
            if not all(isinstance(item, RunStartedReport) for item in batch):
                return

    def abandon(self, exc: BaseException) -> None:
        """Stop for good from outside the loop (the log says another service has taken the
        writer role over): pending requests fail, ``failed`` is set, nothing more commits."""
        if self.failure is not None:
            return
        self.failure = exc
        self.storage_down = ""
        log.info("controller stopped: %s", exc)
        if self._task is not None:
            self._task.cancel()
        self._fail_pending(exc)
        self.failed.set()
        self._signal_commit()

    def _fail_pending(self, exc: BaseException) -> None:
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            done = getattr(item, "done", None)
            if done is not None and not done.done():
                done.set_exception(StorageError(f"the controller stopped: {exc}"))

    async def _step(self, batch: list[_Input]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = self._now()
        replies: list[tuple[asyncio.Future[object], object]] = []
        failures: list[tuple[asyncio.Future[object], BaseException]] = []
        rec = self.reconciler
        stepped = self.clock.take_step()
        if stepped and rec.clock_stepped(stepped, now):
            log.warning(
                "the wall clock stepped %.1f s ahead: retry back-offs still waiting move "
                "later by as much (SLA deadlines and TTLs stay)",
                stepped,
            )
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
                    sequences = item.sequences or [0] * len(item.refs)
                    for ref, sequence in zip(item.refs, sequences, strict=True):
                        rec.partition_live_upstream(ref, item.upstream, now, sequence)
                    replies.append((item.done, None))  # type: ignore[arg-type]
                elif isinstance(item, _UpstreamFailedInput):
                    for ref in item.refs:
                        rec.upstream_failed(ref, item.upstream, item.message, now)
                    replies.append((item.done, None))  # type: ignore[arg-type]
                elif isinstance(item, _ExternalLiveInput):
                    rec.externals_live(item.refs, now)
                    replies.append((item.done, None))  # type: ignore[arg-type]
                elif isinstance(item, _InvalidateInput):
                    asked = item.request
                    if asked.job:
                        refs = invalidation.by_version(rec.state, asked.job)
                    else:
                        refs = invalidation.plan(rec.state, asked.refs, downstream=asked.downstream)
                    chosen, reopened = rec.invalidate(refs, asked.reason, asked.requested_by, now)
                    result = InvalidationResult(chosen, reopened)
                    replies.append((item.done, result))  # type: ignore[arg-type]
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
        requests = {
            effect.job_run_id: self._run_request(effect)
            for effect in effects
            if isinstance(effect, StartRun)
        }
        if events:
            # While the commit waits on the disk, the executor readies the runs it decided
            # (directories, log files); nothing of them runs before the commit is done.
            stage = (lambda: self._stage(requests.values())) if requests else None
            await self._append(events, now, stage)
            self.stats.events += len(events)
            self._maybe_snapshot()
            self._remember(events)
            self.last_committed = events[-1].sequence
            self._signal_commit()
        if isinstance(self.log, SharedEventLog) and requests:
            # A leader paused between its append and here may have been replaced since:
            # it must not start runs its successor has already retried. (Storage away:
            # no answer, go on; the next append is fenced all the same.)
            with contextlib.suppress(StorageUnavailable):
                await asyncio.to_thread(self.log.confirm_writer)
        for effect in effects:
            await self._carry_out(effect, requests)

    def _stage(self, requests: Iterable[RunRequest]) -> None:
        for request in requests:
            try:
                self.executor.stage(request)
            except Exception:  # staging only saves time: start does the same without it
                log.exception("staging run %s failed", request.job_run_id)

    async def _append(
        self, events: list[Event], now: float, meanwhile: Callable[[], None] | None = None
    ) -> None:
        """Make ``events`` durable, exactly once, retrying transient faults within the
        grace (see the module docstring). ``meanwhile`` runs on the loop while the first
        attempt is on its thread."""
        loop = asyncio.get_running_loop()
        attempt = 0
        outage_began: float | None = None  # loop.time(): monotonic, immune to clock steps
        while True:
            try:
                if attempt == 0:
                    payloads = [e.payload for e in events]
                    if self._inline_appends():
                        # on the loop: no hand-off to a thread and back (~0.5 ms a step
                        # on a busy 2-CPU machine). The runs are staged on a thread
                        # meanwhile (their directories and log files, ~0.4 ms a run),
                        # which the loop does not touch until staging is done.
                        staging = self._stage_beside(meanwhile)
                        began = time.perf_counter()
                        try:
                            stored = self.log.append(payloads, now)
                        finally:
                            if staging is not None:
                                staging.result()
                        self._append_took(time.perf_counter() - began)
                    else:
                        appending = loop.run_in_executor(None, self._timed_append, payloads, now)
                        if meanwhile is not None:
                            meanwhile()
                        stored, took = await appending
                        self._append_took(took)
                    _check_stored(stored, events)
                else:
                    await asyncio.to_thread(self._append_unless_recorded, events, now)
                break
            except (StorageUnavailable, LogLocked) as exc:
                self._fast_appends = 0  # the next steps' appends wait on a thread, not here
                # LogLocked only while recovering: the server may not have noticed yet
                # that our old session (and its lock) is gone.
                if outage_began is None:
                    outage_began = loop.time()
                    self.storage_down_since = self.clock.now()
                    self.stats.storage_outages += 1
                    log.warning("Build Event Log unavailable, retrying: %s", exc)
                self.storage_down = str(exc)
                waited = loop.time() - outage_began
                if waited >= self.storage_grace:
                    raise StorageError(
                        f"the Build Event Log stayed unavailable for {waited:.0f} s (longer "
                        f"than the storage grace of {self.storage_grace:g} s, "
                        f"${STORAGE_GRACE_ENV}): {exc}"
                    ) from exc
                await asyncio.sleep(retry_delay(attempt, self._rng))
                attempt += 1
                self.stats.storage_retries += 1
        if outage_began is not None:
            log.warning(
                "Build Event Log available again after %.1f s (%d retries)",
                loop.time() - outage_began,
                attempt,
            )
            self.storage_down = ""

    def _stage_beside(
        self, meanwhile: Callable[[], None] | None
    ) -> concurrent.futures.Future[None] | None:
        if meanwhile is None:
            return None
        if self._stager is None:
            self._stager = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="databuild-stage"
            )
        return self._stager.submit(meanwhile)

    def _inline_appends(self) -> bool:
        """Whether the next append runs on the loop: for a local log whose last
        ``INLINE_WINDOW`` appends each took under ``INLINE_APPEND_SECONDS``. A disk that
        slows down blocks the loop for one slow append at most; the appends then go back to
        a thread (the API answers meanwhile) until that many in a row are fast again."""
        return self._local_log and self._fast_appends >= INLINE_WINDOW

    def _append_took(self, seconds: float) -> None:
        if seconds < INLINE_APPEND_SECONDS:
            self._fast_appends += 1
        else:
            self._fast_appends = 0

    def _timed_append(self, payloads: list[EventPayload], now: float) -> tuple[list[Event], float]:
        began = time.perf_counter()
        stored = self.log.append(payloads, now)
        return stored, time.perf_counter() - began

    def _append_unless_recorded(self, events: list[Event], now: float) -> None:
        """A retry: the failed attempt may have committed. Runs on a worker thread."""
        self.log.acquire_writer(self.owner)
        first, last = events[0].sequence, events[-1].sequence
        found = self.log.last_sequence()
        if found == first - 1:
            _check_stored(self.log.append([e.payload for e in events], now), events)
            return
        if found == last:
            tail = self.log.read(first - 1, len(events))
            if [e.payload for e in tail] == [e.payload for e in events]:
                log.warning(
                    "the append of events %d-%d had committed before it failed", first, last
                )
                return
        raise StorageError(
            f"the Build Event Log ends at sequence {found} where this service expected "
            f"{first - 1} or its own events up to {last}: another writer appended to it; "
            "restart to rebuild state"
        )

    def _maybe_snapshot(self) -> None:
        """Right after a commit (state == log): finished records to the history store once
        there are ``FLUSH_AT`` of them; fork a snapshot every ``snapshot_every``."""
        if self.state.pending_records() >= self.flush_at:
            self._flush_history()
        store = self.snapshots
        if store is None:
            return
        if self._snapshot_child is not None:
            if store.reap(self._snapshot_child) is None:
                return
            self._snapshot_child = None
        sequence = self.state.last_sequence
        if sequence - self._snapshot_sequence >= self.snapshot_every:
            # what the snapshot leaves to the history store must be in it first
            if not self._flush_history(for_snapshot=True):
                return
            self._snapshot_child = store.write_in_background(self.state)
            self._snapshot_sequence = sequence

    def _flush_history(self, for_snapshot: bool = False) -> bool:
        """Finished records into the history store; False if it could not take them (they
        stay in memory, for the next flush)."""
        if self.history is None or not (for_snapshot or self.state.pending_records()):
            return True
        try:
            if for_snapshot:
                self.state.flush_for_snapshot()
            else:
                self.state.flush_history()
        except StorageError as exc:
            log.warning("finished records kept in memory for now: %s", exc)
            return False
        return True

    async def _snapshot_at_stop(self) -> None:
        store = self.snapshots
        if store is None or self.failure is not None:
            return
        state = self.state
        records = len(state.wants.hot) + len(state.partitions) + len(state.runs.hot)
        if not worth_writing_at_stop(state.last_sequence - self._snapshot_sequence, records):
            return
        try:
            # only when the state is exactly the log (a stop mid-append may leave it ahead)
            exact = await asyncio.to_thread(self.log.last_sequence) == self.state.last_sequence
            if exact and self._flush_history(for_snapshot=True):
                await asyncio.to_thread(store.write, self.state)
        except Exception as exc:  # a snapshot is a cache: failing to write one is no error
            log.warning("no snapshot written at stop: %s", exc)

    def _run_request(self, effect: StartRun) -> RunRequest:
        job = self.graph.job(effect.job_name)
        return RunRequest(
            job_run_id=effect.job_run_id,
            job=job,
            partition_refs=effect.partition_refs,
            graph_url=self.graph_url,
            root_dir=self.root_dir,
            runs_dir=self.runs_dir,
            live_inputs=self._live_hinted_inputs(job, effect.partition_refs),
        )

    async def _carry_out(self, effect: Effect, requests: dict[JobRunId, RunRequest]) -> None:
        if isinstance(effect, StartRun):
            self.stats.started_runs += 1
            await self.executor.start(requests[effect.job_run_id])
        elif isinstance(effect, KillRun):
            # Killing waits out a grace period; the loop must not wait with it.
            task = asyncio.create_task(self.executor.kill(effect.job_run_id, effect.reason))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif isinstance(effect, KillOrphan):
            await asyncio.to_thread(self.executor.kill_orphan, effect.job_run_id, effect.pid)


def _check_stored(stored: list[Event], events: list[Event]) -> None:
    if not stored or stored[0].sequence != events[0].sequence or len(stored) != len(events):
        raise StorageError(
            "the Build Event Log assigned sequence numbers this service did not "
            "expect: another writer appended to it; restart to rebuild state"
        )
