"""The state fold: ``BuildState.apply(event)`` folds one Build Event Log event into state.

The fold is deterministic and does no I/O: replaying the log from empty gives the same
state as folding incrementally. It owns its records (it mutates them in place, which is
what keeps one event O(affected) instead of O(state)), checks every status change against
``lifecycle``'s tables, and keeps the indexes the reconciler needs to stay O(events):
per-job ready queues ordered by SLA deadline, timer heaps (retry, TTL, SLA), who waits on
which partition. It decides nothing; decisions live in ``reconcile``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from databuild.core import events as ev
from databuild.core.errors import IllegalTransition
from databuild.core.history import (
    RUNS,
    WANTS,
    Described,
    DetachedHistory,
    History,
    MemoryHistory,
    RecordFilter,
    RecordMap,
    merged_items,
)
from databuild.core.lifecycle import (
    ACTIVE_WANT_STATUSES,
    JobRunStatus,
    PartitionStatus,
    check_run,
    check_want,
)
from databuild.core.lineage import NeedKey, ObservedNeed, observe
from databuild.core.model import (
    NO_DEADLINE,
    GraphSpec,
    JobRunId,
    Want,
    WantId,
    WantSource,
    WantStatus,
)
from databuild.core.pickling import positional_pickle
from databuild.core.refs import PartitionRef

_QUEUED = (PartitionStatus.ABSENT, PartitionStatus.BACKOFF)

_WANT_STATUS_OF_PARTITION = {
    PartitionStatus.ABSENT: WantStatus.PENDING,
    PartitionStatus.BUILDING: WantStatus.BUILDING,
    PartitionStatus.WAITING: WantStatus.WAITING,
    PartitionStatus.BACKOFF: WantStatus.RETRYING,
    PartitionStatus.FAILED: WantStatus.PENDING,  # a fresh want resets a failed partition
    PartitionStatus.LIVE: WantStatus.PENDING,  # satisfied by the reconciler right after
}


@positional_pickle
@dataclass(slots=True)
class WantRecord:
    want: Want
    status: WantStatus
    created_at: float
    updated_at: float
    message: str = ""
    finished_at: float = 0.0
    sla_missed: bool = False
    sla_missed_at: float = 0.0  # when SlaMissed was recorded, with its blame
    sla_blame_ref: str = ""
    sla_blame: str = ""
    children: list[WantId] = field(default_factory=list)
    job_run_ids: list[JobRunId] = field(default_factory=list)
    events: list[int] = field(default_factory=list)  # sequences of events about this want
    order: int = 0  # the how-manieth want made (``RecordMap.add``): lists go by it

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_WANT_STATUSES


# Most partitions wait on nothing and have no active want (all the live ones): they share
# this one immutable empty set instead of holding two empty sets of their own (216 bytes
# each, and objects a snapshot has to load). The fold gives a record a set of its own when
# it first adds to it; a snapshot writes every empty set as an empty frozenset.
_NO_REFS: frozenset[Any] = frozenset()


@positional_pickle
@dataclass(slots=True)
class PartitionRecord:
    ref: PartitionRef
    status: PartitionStatus = PartitionStatus.ABSENT
    job_run_id: JobRunId | None = None
    waiting_on: AbstractSet[PartitionRef] = _NO_REFS
    failures: int = 0
    retry_at: float = 0.0
    message: str = ""
    updated_at: float = 0.0
    upstream: str = ""
    active_wants: AbstractSet[WantId] = _NO_REFS
    job_version: str = ""  # the version of the job that built it (``PartitionLive``)

    def add_active_want(self, want_id: WantId) -> None:
        if isinstance(self.active_wants, set):
            self.active_wants.add(want_id)
        else:
            self.active_wants = {*self.active_wants, want_id}

    def discard_active_want(self, want_id: WantId) -> None:
        if isinstance(self.active_wants, set):
            self.active_wants.discard(want_id)
        elif want_id in self.active_wants:
            self.active_wants = self.active_wants - {want_id}

    def discard_waiting_on(self, ref: PartitionRef) -> None:
        if isinstance(self.waiting_on, set):
            self.waiting_on.discard(ref)
        elif ref in self.waiting_on:
            self.waiting_on = self.waiting_on - {ref}


@positional_pickle
@dataclass(slots=True)
class JobRunRecord:
    job_run_id: JobRunId
    job_name: str
    partition_refs: tuple[PartitionRef, ...]
    want_ids: tuple[WantId, ...]
    status: JobRunStatus
    queued_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    pid: int = 0
    exit_code: int = 0
    failure_kind: ev.FailureKind | None = None
    message: str = ""
    missing: tuple[ev.MissingDeps, ...] = ()
    job_version: str = ""  # the job's version when the run was dispatched
    order: int = 0  # the how-manieth run queued (``RecordMap.add``)

    @property
    def duration_seconds(self) -> float:
        if not self.finished_at or not self.started_at:
            return 0.0
        return self.finished_at - self.started_at


# Run durations are counted into these buckets (seconds) as runs finish: the metrics'
# histogram, kept by the fold instead of scanned from every run ever finished.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@dataclass(slots=True)
class RunStats:
    """Per job: finished runs by outcome, and the durations of those that ran."""

    outcomes: dict[JobRunStatus, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_count: int = 0
    duration_sum: float = 0.0


def _describe_want(record: WantRecord) -> Described:
    want = record.want
    return Described(record.status.value, want.partition_ref, want.root_want_id, want.source.value)


def _describe_run(record: JobRunRecord) -> Described:
    edges = tuple((dep, item.partition_ref) for item in record.missing for dep in item.missing_refs)
    return Described(record.status.value, "", "", record.job_name, bool(record.missing), edges)


def _want_key(record: WantRecord) -> WantId:
    return record.want.want_id


def _run_key(record: JobRunRecord) -> JobRunId:
    return record.job_run_id


def want_table(history: History) -> RecordMap[WantId, WantRecord]:
    active = frozenset(s.value for s in ACTIVE_WANT_STATUSES)
    return RecordMap(WANTS, history, _describe_want, _want_key, active)


def run_table(history: History) -> RecordMap[JobRunId, JobRunRecord]:
    active = frozenset(s.value for s in JobRunStatus if not s.terminal)
    return RecordMap(RUNS, history, _describe_run, _run_key, active)


def _expect_absent(table: RecordMap[Any, Any], keys: Sequence[str]) -> None:
    table.absent.update(k for k in keys if k not in table.hot and k not in table.pending)


_PRUNE_RANKS_EVERY = 4096  # partitions dispatched

# how many finished records the fold holds before the shell should flush them to history
FLUSH_AT = 1024


class BuildState:
    """Everything the BEL says, folded. Read it; change it only through ``apply``.

    Finished wants and runs leave memory for ``history`` (``core.history``): memory
    follows active work, not the log's length."""

    def __init__(self, graph: GraphSpec, history: History | None = None) -> None:
        self.graph = graph
        self.history: History = history if history is not None else MemoryHistory()
        self.wants = want_table(self.history)
        self.partitions: dict[PartitionRef, PartitionRecord] = {}
        self.runs = run_table(self.history)
        self.want_counts: dict[WantStatus, int] = defaultdict(int)  # wants by status
        self.run_stats: dict[str, RunStats] = {}  # per job
        self._seq = 0  # the sequence of the event being folded (a changed record's version)
        # how many wants are active, kept by the fold: health checks ask it at any scale
        # (counting 1M wants took ~0.1 s of the event loop at 10M events)
        self.active_want_count = 0
        self.last_sequence = 0
        self.run_count = 0
        # indexes (derived; rebuilt by replay, never compared)
        self.waiters: dict[PartitionRef, set[PartitionRef]] = defaultdict(set)
        self.running_by_job: dict[str, set[JobRunId]] = defaultdict(set)
        # per job: (SLA deadline, fair rank, counter, ref); the rank takes turns between
        # roots (a backfill's wants share one root), so a big set does not starve others
        self.ready: dict[str, list[tuple[float, int, int, PartitionRef]]] = defaultdict(list)
        self.root_next_rank: dict[WantId, int] = {}
        self.dispatched_count = 0  # partitions that started building: the fair clock
        self.retry_timers: list[tuple[float, PartitionRef]] = []
        self.ttl_timers: list[tuple[float, WantId]] = []
        self.sla_timers: list[tuple[float, WantId]] = []
        self.job_durations: dict[str, list[float]] = defaultdict(list)
        self.sla_violations: list[WantId] = []  # in the order SlaMissed was recorded
        self._route_cache: dict[PartitionRef, str | None] = {}
        self._ready_counter = 0
        # wants whose last failure was "no job builds it": a config reload retries them
        self.unbuildable: set[WantId] = set()
        # partitions made ready that no local job builds (an upstream's, or a job a reload
        # removed): the reconciler fails those whose route has a problem
        self.orphaned: list[PartitionRef] = []
        # partitions made ready that an external provides, by external name: the refs its
        # check command is asked about (``core.externals`` prunes the live and unwanted)
        self.awaiting_external: dict[str, set[PartitionRef]] = defaultdict(set)
        # which inputs runs of each job were found to lack (``lineage``): observed edges
        self.observed_needs: dict[NeedKey, ObservedNeed] = {}
        # per upstream graph: the newest of its event sequences recorded here (the
        # follower resumes after it: core.federation)
        self.upstream_cursors: dict[str, int] = {}
        # per partition: the hinted inputs it waited on before a run (``PartitionWaiting``),
        # recorded edges like a run's missing inputs (``invalidation.dependents``)
        self.hinted_inputs: dict[PartitionRef, frozenset[PartitionRef]] = {}
        # partitions waiting now because of hints, not a run's report: the reconciler
        # releases such a wait when discovery closes a cycle through it (hints are advisory)
        self.hint_waiting: set[PartitionRef] = set()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a snapshot) without the route cache: it is derived from the graph alone,
        refilled on demand, and at millions of partitions a large part of a snapshot. The
        tables go as their hot records (``wants``, ``runs``: plain dicts) and the rest of
        each map; a persistent history is not pickled (``attach_history`` after a load),
        an in-memory one is, whole."""
        attrs = dict(self.__dict__)
        del attrs["_route_cache"]
        kept = None if self.history.persistent else self.history
        attrs["history"] = kept
        for name in ("wants", "runs"):
            table: RecordMap[Any, Any] = attrs.pop(name)
            attrs[name] = table.hot
            attrs[f"{name}_pending"] = table.pending
            attrs[f"{name}_total"] = table.total
        return attrs

    def __setstate__(self, attrs: dict[str, Any]) -> None:
        attrs = dict(attrs)
        history = attrs.pop("history") or DetachedHistory()
        wants, runs = want_table(history), run_table(history)
        for name, table in (("wants", wants), ("runs", runs)):
            table.hot = attrs.pop(name)
            table.pending = attrs.pop(f"{name}_pending")
            table.total = attrs.pop(f"{name}_total")
        self.__dict__.update(attrs)
        self.history = history
        self.wants, self.runs = wants, runs
        self._route_cache = {}

    def attach_history(self, history: History) -> None:
        """The store of finished records (a state read back from a snapshot)."""
        self.history = history
        self.wants.attach(history)
        self.runs.attach(history)

    def expect_new(self, events: list[ev.Event]) -> None:
        """Before folding ``events`` read back from the log: the want and run ids they
        create are known absent from history while they are folded, without asking it.
        The log creates an id once (the reconciler emits ``WantCreated`` or
        ``JobRunQueued`` only for an id it has nowhere), so an id a later event creates
        was in no table before; the fold still refuses one it holds in memory. (Asking
        the store cost ~13 us a want id, 0.15-0.25 s of a 10M-event start.)"""
        wants = [e.payload.want.want_id for e in events if type(e.payload) is ev.WantCreated]
        runs = [e.payload.job_run_id for e in events if type(e.payload) is ev.JobRunQueued]
        _expect_absent(self.wants, wants)
        _expect_absent(self.runs, runs)

    def pending_records(self) -> int:
        return len(self.wants.pending) + len(self.runs.pending)

    def flush_history(self) -> int:
        """Move the finished records out of memory into the history store (the shell calls
        this after a commit; a row is a cache of the log, rewritten by a replay)."""
        wants, runs = self.wants.pending, self.runs.pending
        rows = self.wants.take_pending() + self.runs.take_pending()
        if rows:
            try:
                self.history.put(rows)
            except BaseException:  # kept for the next flush (newer changes win)
                self.wants.pending = {**wants, **self.wants.pending}
                self.runs.pending = {**runs, **self.runs.pending}
                raise
        return len(rows)

    def flush_for_snapshot(self) -> None:
        """Flush, and mark the store complete up to this state (a snapshot of it follows)."""
        self.flush_history()
        self.history.mark(self.last_sequence)

    # ---- queries -------------------------------------------------------------------
    def partition(self, ref: PartitionRef) -> PartitionRecord:
        record = self.partitions.get(ref)
        if record is None:
            record = self.partitions[ref] = PartitionRecord(ref)
        return record

    def is_live(self, ref: PartitionRef) -> bool:
        record = self.partitions.get(ref)
        return record is not None and record.status is PartitionStatus.LIVE

    def job_of(self, ref: PartitionRef) -> str | None:
        """The local job that builds ``ref``, or None (upstream-provided or unbuildable)."""
        if ref not in self._route_cache:
            route = self.graph.route(ref)
            self._route_cache[ref] = route.job.name if route.job else None
        return self._route_cache[ref]

    def deadline_of(self, ref: PartitionRef) -> float:
        record = self.partitions.get(ref)
        if record is None or not record.active_wants:
            return NO_DEADLINE
        return min(self.wants[w].want.sla_deadline for w in record.active_wants)

    def active_wants(self) -> list[WantRecord]:
        return [w for w in self.wants.hot.values() if w.active]

    def wants_on(self, refs: AbstractSet[str], status: WantStatus) -> list[WantRecord]:
        """The wants in ``status`` for any of ``refs``, in the order they were made."""
        found: list[WantRecord] = []
        chosen = frozenset(refs)
        for start in range(0, len(chosen), 500):  # bounded statements for the store
            part = frozenset(sorted(chosen)[start : start + 500])
            where = RecordFilter(statuses=frozenset({status.value}), refs=part)
            found.extend(self.wants.scan(where))
        found.sort(key=lambda r: r.order)
        return found

    def partitions_of(self, payload: ev.EventPayload) -> tuple[PartitionRef, ...]:
        """The partitions an event is about, for filtering by partition: a partition
        event's own ref, the outputs of the run a run event is about (its start, its end,
        a retry), the ref of the want a want event is about."""
        if isinstance(
            payload,
            ev.PartitionBuilding | ev.PartitionLive | ev.PartitionFailed | ev.PartitionWaiting,
        ):
            return (payload.partition_ref,)
        if isinstance(payload, ev.WantCreated):
            return (payload.want.partition_ref,)
        if isinstance(payload, ev.JobRunQueued):
            return payload.partition_refs
        if isinstance(
            payload,
            ev.JobRunStarted
            | ev.JobRunSucceeded
            | ev.JobRunFailed
            | ev.JobRunMissingDeps
            | ev.JobRunCanceled,
        ):
            run = self.runs.get(payload.job_run_id)
            return run.partition_refs if run is not None else ev.partition_refs_of(payload)
        if isinstance(payload, ev.ConfigReloaded | ev.ClockStepped):
            return ()
        if isinstance(payload, ev.PartitionsInvalidated):
            return payload.partition_refs
        want = self.wants.get(payload.want_id)
        return (want.want.partition_ref,) if want is not None else ()

    def use_graph(self, graph: GraphSpec) -> None:
        """Route by ``graph`` from now on (a config reload): the route cache and the ready
        queues are rebuilt; records, statuses and timers are history and stay."""
        self.graph = graph
        self._route_cache = {}
        queued = [entry[-1] for queue in self.ready.values() for entry in queue]
        # an external's refs are routed again too: a job may build them now, or no one
        queued += sorted(ref for refs in self.awaiting_external.values() for ref in refs)
        self.ready = defaultdict(list)
        self.awaiting_external = defaultdict(set)
        for ref in dict.fromkeys(queued):
            part = self.partitions.get(ref)
            if part is not None and part.active_wants and part.status in _QUEUED:
                self._enqueue(part)

    # ---- the fold ------------------------------------------------------------------
    def apply(self, event: ev.Event) -> None:
        payload = event.payload
        now = event.timestamp
        handler = _HANDLERS[type(payload)]
        self._seq = event.sequence
        handler(self, payload, now, event.sequence)
        if event.sequence:
            self.last_sequence = event.sequence

    def _set_want(self, record: WantRecord, status: WantStatus, now: float) -> None:
        if record.status is status:
            return
        check_want(record.status, status)
        was_active = record.status in ACTIVE_WANT_STATUSES
        self.want_counts[record.status] -= 1
        self.want_counts[status] += 1
        record.status = status
        self.active_want_count += (status in ACTIVE_WANT_STATUSES) - was_active
        record.updated_at = now
        if status.terminal:
            record.finished_at = now
            self.partition(record.want.partition_ref).discard_active_want(record.want.want_id)
            self.wants.retire(record.want.want_id, self._seq)

    def _check_partition(self, part: PartitionRecord, status: PartitionStatus) -> None:
        # tests/core: check every want's change before changing anything, so that an
        # illegal event leaves the state as it was (it used to change the partition first).
        want_status = _WANT_STATUS_OF_PARTITION[status]
        for want_id in part.active_wants:
            old = self.wants[want_id].status
            if old is not want_status:
                check_want(old, want_status)

    def _set_partition(self, part: PartitionRecord, status: PartitionStatus, now: float) -> None:
        self._check_partition(part, status)
        if status is not PartitionStatus.WAITING:
            self.hint_waiting.discard(part.ref)
        part.status = status
        part.updated_at = now
        want_status = _WANT_STATUS_OF_PARTITION[status]
        for want_id in part.active_wants:
            self._set_want(self.wants[want_id], want_status, now)
        if status is PartitionStatus.ABSENT and part.active_wants:
            self._enqueue(part)

    def _enqueue(self, part: PartitionRecord) -> None:
        job = self.job_of(part.ref)
        if job is None:
            external = self.graph.route(part.ref).external
            if external is not None:
                self.awaiting_external[external.name].add(part.ref)
            else:
                self.orphaned.append(part.ref)
            return
        self._ready_counter += 1
        rank = self._fair_rank(part)
        heapq.heappush(
            self.ready[job], (self.deadline_of(part.ref), rank, self._ready_counter, part.ref)
        )

    def _fair_rank(self, part: PartitionRecord) -> int:
        """Virtual-time fair queuing between roots: a root's next partition ranks after
        its previous one, but never before the clock (partitions dispatched so far), so a
        root that arrives late takes turns with a long backfill instead of waiting for all
        of it, and a backfill is not starved by a stream of new roots either."""
        roots = {self.wants[w].want.root_want_id for w in part.active_wants}
        if not roots:
            return self.dispatched_count
        clock = self.dispatched_count
        # a next rank behind the clock is the clock (so dropping it changes nothing)
        root = min(roots, key=lambda r: (max(self.root_next_rank.get(r, 0), clock), r))
        rank = max(self.root_next_rank.get(root, 0), clock)
        self.root_next_rank[root] = rank + 1
        return rank

    def _activate(self, record: WantRecord, now: float, *, new: bool) -> None:
        """A want became active (created or reopened): attach it to its partition."""
        want = record.want
        part = self.partition(want.partition_ref)
        if not new:
            # tests/core: refuse an illegal reopen (of a satisfied, expired or active want)
            # before touching the partition; it used to join active_wants first.
            status = (
                PartitionStatus.ABSENT if part.status is PartitionStatus.FAILED else part.status
            )
            check_want(record.status, _WANT_STATUS_OF_PARTITION[status])
            if record.status is WantStatus.SATISFIED and part.status is PartitionStatus.LIVE:
                # a satisfied want reopens only once its partition was invalidated
                raise IllegalTransition(
                    f"want {want.want_id} is satisfied and {part.ref} is live: nothing to reopen"
                )
        if part.status is PartitionStatus.FAILED:
            part.failures = 0
            part.message = ""
            part.status = PartitionStatus.ABSENT
        part.add_active_want(want.want_id)
        target = _WANT_STATUS_OF_PARTITION[part.status]
        if new:
            check_want(None, target)
            record.status = target
            self.want_counts[target] += 1
            self.active_want_count += target in ACTIVE_WANT_STATUSES
        else:
            self.wants.revive(want.want_id, record)
            self._set_want(record, target, now)
        record.message = ""
        self.unbuildable.discard(want.want_id)
        # tests/core: a partition in backoff is enqueued too. Its retry timer may have fired
        # while no want was active (and then nothing enqueued it); without this a new want
        # on it stayed "retrying" forever. Enqueuing early is harmless: dispatch skips a
        # partition whose retry_at is still ahead, and the pending timer enqueues it again.
        if part.status in (PartitionStatus.ABSENT, PartitionStatus.BACKOFF):
            self._enqueue(part)
        if want.ttl_seconds:
            heapq.heappush(self.ttl_timers, (want.expires_at, want.want_id))
        if want.sla_seconds and not record.sla_missed:
            heapq.heappush(self.sla_timers, (want.sla_deadline, want.want_id))

    def _clear_waiting(self, part: PartitionRecord) -> None:
        self.hint_waiting.discard(part.ref)
        for dep in part.waiting_on:
            self.waiters[dep].discard(part.ref)
        part.waiting_on = _NO_REFS

    def _finish_run(self, run: JobRunRecord, status: JobRunStatus, now: float) -> None:
        check_run(run.status, status)
        run.status = status
        run.finished_at = now
        self.running_by_job[run.job_name].discard(run.job_run_id)
        self.runs.retire(run.job_run_id, self._seq)

    def _count_finished(self, run: JobRunRecord) -> None:
        """A run's outcome and duration into its job's figures (after its times are final)."""
        stats = self.run_stats.get(run.job_name)
        if stats is None:
            stats = self.run_stats[run.job_name] = RunStats()
        stats.outcomes[run.status] = stats.outcomes.get(run.status, 0) + 1
        if run.status is not JobRunStatus.CANCELED and run.started_at:
            duration = run.duration_seconds
            stats.duration_count += 1
            stats.duration_sum += duration
            for i, bound in enumerate(DURATION_BUCKETS):
                if duration <= bound:
                    stats.buckets[i] += 1
                    break

    def want_for_update(self, want_id: WantId) -> WantRecord | None:
        """A want the event being folded changes (it may be history)."""
        return self.wants.for_update(want_id, self._seq)

    def _note_run_event(self, run_want_ids: tuple[WantId, ...], seq: int) -> None:
        """A run's event is on the timeline of each want it was queued for."""
        for want_id in run_want_ids:
            record = self.want_for_update(want_id)
            if record is not None:
                record.events.append(seq)


def _want_created(state: BuildState, e: ev.WantCreated, now: float, seq: int) -> None:
    want = e.want
    if want.want_id in state.wants:
        raise IllegalTransition(f"want {want.want_id} already exists")
    record = WantRecord(want, WantStatus.PENDING, created_at=now, updated_at=now)
    state.wants.add(want.want_id, record)
    record.events.append(seq)
    if want.parent_want_id is not None:
        parent = state.want_for_update(want.parent_want_id)
        if parent is not None:
            parent.children.append(want.want_id)
    state._activate(record, now, new=True)


def _want_reopened(state: BuildState, e: ev.WantReopened, now: float, seq: int) -> None:
    record = state.wants[e.want_id]
    state._activate(record, now, new=False)  # tests/core: checks first, so it goes first
    record.events.append(seq)
    record.finished_at = 0.0
    if e.parent_want_id is not None:
        parent = state.want_for_update(e.parent_want_id)
        if parent is not None and e.want_id not in parent.children:
            parent.children.append(e.want_id)


def _want_terminal(
    state: BuildState, want_id: WantId, status: WantStatus, message: str, now: float, seq: int
) -> None:
    record = state.want_for_update(want_id)
    if record is None:
        raise IllegalTransition(f"no want {want_id}")
    # tests/core: a want already in ``status`` (WantSatisfied twice) is illegal too, not a
    # silent no-op that records the event and overwrites the message; check before changing.
    check_want(record.status, status)
    state._set_want(record, status, now)
    record.events.append(seq)
    record.message = message


def _want_canceled(state: BuildState, e: ev.WantCanceled, now: float, seq: int) -> None:
    _want_terminal(state, e.want_id, WantStatus.CANCELED, e.reason, now, seq)


def _want_expired(state: BuildState, e: ev.WantExpired, now: float, seq: int) -> None:
    _want_terminal(state, e.want_id, WantStatus.EXPIRED, "past its TTL", now, seq)


def _want_satisfied(state: BuildState, e: ev.WantSatisfied, now: float, seq: int) -> None:
    _want_terminal(state, e.want_id, WantStatus.SATISFIED, "", now, seq)
    runs = state.wants[e.want_id].job_run_ids
    if e.job_run_id is not None and e.job_run_id not in runs:
        runs.append(e.job_run_id)  # a want on a run's partition since it was queued


def _want_failed(state: BuildState, e: ev.WantFailed, now: float, seq: int) -> None:
    status = (
        WantStatus.UPSTREAM_FAILED
        if e.reason is ev.WantFailureReason.UPSTREAM_FAILED
        else WantStatus.FAILED
    )
    _want_terminal(state, e.want_id, status, e.message, now, seq)
    if e.reason is ev.WantFailureReason.UNBUILDABLE:
        state.unbuildable.add(e.want_id)


def _config_reloaded(state: BuildState, e: ev.ConfigReloaded, now: float, seq: int) -> None:
    """History only: routing follows the graph the state is given (``use_graph``)."""


def _clock_stepped(state: BuildState, e: ev.ClockStepped, now: float, seq: int) -> None:
    """Back-offs still waiting (``retry_at`` ahead of the step's moment) wait ``seconds``
    more; the timers follow. ``now`` is the event's timestamp, after the step."""
    before = now - e.seconds
    moved = False
    for ref in {ref for _, ref in state.retry_timers}:  # a ref may have several entries
        part = state.partitions.get(ref)
        if part is not None and part.status is PartitionStatus.BACKOFF and part.retry_at > before:
            part.retry_at += e.seconds
            moved = True
    if moved:
        state.retry_timers = [
            (state.partitions[ref].retry_at, ref)
            for _, ref in state.retry_timers
            if ref in state.partitions
        ]
        heapq.heapify(state.retry_timers)


def _sla_missed(state: BuildState, e: ev.SlaMissed, now: float, seq: int) -> None:
    record = state.want_for_update(e.want_id)
    if record is None:
        raise IllegalTransition(f"no want {e.want_id} to have missed its SLA")
    record.events.append(seq)
    if not record.sla_missed:
        state.sla_violations.append(e.want_id)
    record.sla_missed = True
    record.sla_missed_at = now
    record.sla_blame_ref = e.blame_ref
    record.sla_blame = e.blame


def _run_queued(state: BuildState, e: ev.JobRunQueued, now: float, seq: int) -> None:
    if e.job_run_id in state.runs:
        raise IllegalTransition(f"job run {e.job_run_id} already exists")
    check_run(None, JobRunStatus.QUEUED)
    state.runs.add(
        e.job_run_id,
        JobRunRecord(
            e.job_run_id,
            e.job_name,
            e.partition_refs,
            e.want_ids,
            JobRunStatus.QUEUED,
            now,
            job_version=e.job_version,
        ),
    )
    state.run_count += 1
    state.running_by_job[e.job_name].add(e.job_run_id)
    for want_id in e.want_ids:
        record = state.want_for_update(want_id)
        if record is not None:
            record.job_run_ids.append(e.job_run_id)
    state._note_run_event(e.want_ids, seq)


def _run_started(state: BuildState, e: ev.JobRunStarted, now: float, seq: int) -> None:
    run = state.runs[e.job_run_id]
    check_run(run.status, JobRunStatus.RUNNING)
    run.status = JobRunStatus.RUNNING
    run.started_at = e.started_at or now
    run.pid = e.pid
    state._note_run_event(run.want_ids, seq)


def _started_at(run: JobRunRecord, now: float, duration: float) -> float:
    """When a finished run began: its start event's time, unless the run's own measured
    duration says it began earlier (the controller may record a start together with the
    run's result, in one commit)."""
    measured = now - duration
    return min(run.started_at, measured) if run.started_at else measured


def _building_parts(state: BuildState, run: JobRunRecord) -> list[PartitionRecord]:
    parts = (state.partition(ref) for ref in run.partition_refs)
    return [
        p for p in parts if p.status is PartitionStatus.BUILDING and p.job_run_id == run.job_run_id
    ]


def _run_succeeded(state: BuildState, e: ev.JobRunSucceeded, now: float, seq: int) -> None:
    run = state.runs[e.job_run_id]
    started_at = _started_at(run, now, e.duration_seconds)
    state._finish_run(run, JobRunStatus.SUCCEEDED, now)  # tests/core: check before changing
    state._note_run_event(run.want_ids, seq)
    run.started_at = started_at
    state._count_finished(run)
    durations = state.job_durations[run.job_name]
    durations.append(e.duration_seconds)
    if len(durations) > 50:
        del durations[:-50]


def _run_failed(state: BuildState, e: ev.JobRunFailed, now: float, seq: int) -> None:
    run = state.runs[e.job_run_id]
    state._finish_run(run, JobRunStatus.FAILED, now)
    state._note_run_event(run.want_ids, seq)
    run.exit_code = e.exit_code
    run.failure_kind = e.kind
    run.message = e.message
    state._count_finished(run)
    for part in _building_parts(state, run):
        part.message = e.message
        if e.retry_at:
            if e.kind is not ev.FailureKind.LOST:
                part.failures += 1
            part.retry_at = e.retry_at
            state._set_partition(part, PartitionStatus.BACKOFF, now)
            heapq.heappush(state.retry_timers, (e.retry_at, part.ref))
        # without a retry the reconciler follows with PartitionFailed for each partition


def _run_missing_deps(state: BuildState, e: ev.JobRunMissingDeps, now: float, seq: int) -> None:
    run = state.runs[e.job_run_id]
    started_at = _started_at(run, now, e.duration_seconds)
    state._finish_run(run, JobRunStatus.MISSING_DEPS, now)  # tests/core: check first
    state._note_run_event(run.want_ids, seq)
    run.started_at = started_at
    run.missing = e.missing
    state._count_finished(run)
    missing_refs = (ref for item in e.missing for ref in item.missing_refs)
    observe(state.observed_needs, run.job_name, missing_refs, state.graph, now)
    by_output = {m.partition_ref: m.missing_refs for m in e.missing}
    for part in _building_parts(state, run):
        missing = [r for r in by_output.get(part.ref, ()) if not state.is_live(r)]
        if missing:
            part.waiting_on = set(missing)
            for dep in missing:
                state.waiters[dep].add(part.ref)
            state._set_partition(part, PartitionStatus.WAITING, now)
        else:
            state._set_partition(part, PartitionStatus.ABSENT, now)


def _run_canceled(state: BuildState, e: ev.JobRunCanceled, now: float, seq: int) -> None:
    run = state.runs[e.job_run_id]
    state._finish_run(run, JobRunStatus.CANCELED, now)
    state._note_run_event(run.want_ids, seq)
    run.message = e.reason
    state._count_finished(run)
    for part in _building_parts(state, run):
        state._set_partition(part, PartitionStatus.ABSENT, now)


def _partition_building(state: BuildState, e: ev.PartitionBuilding, now: float, seq: int) -> None:
    part = state.partition(e.partition_ref)
    state._check_partition(part, PartitionStatus.BUILDING)  # tests/core: check first
    part.job_run_id = e.job_run_id
    part.message = ""
    state.dispatched_count += 1
    if state.dispatched_count % _PRUNE_RANKS_EVERY == 0:
        # a root's next rank at or behind the clock counts as none (``_fair_rank`` takes
        # the max with the clock): dropped, else the table grows with every root ever seen
        clock = state.dispatched_count
        state.root_next_rank = {r: n for r, n in state.root_next_rank.items() if n > clock}
    state._set_partition(part, PartitionStatus.BUILDING, now)


def _partition_live(state: BuildState, e: ev.PartitionLive, now: float, seq: int) -> None:
    part = state.partition(e.partition_ref)
    if e.job_run_id is not None:
        part.job_run_id = e.job_run_id
    part.job_version = e.job_version
    part.upstream = e.upstream or (f"external {e.external}" if e.external else "")
    if e.upstream and e.upstream_sequence > state.upstream_cursors.get(e.upstream, 0):
        state.upstream_cursors[e.upstream] = e.upstream_sequence
    part.message = ""
    if e.external:
        state.awaiting_external[e.external].discard(part.ref)
    state._clear_waiting(part)
    part.status = PartitionStatus.LIVE
    part.updated_at = now
    for waiter_ref in sorted(state.waiters.pop(e.partition_ref, set())):
        waiter = state.partition(waiter_ref)
        waiter.discard_waiting_on(e.partition_ref)
        if waiter.status is PartitionStatus.WAITING and not waiter.waiting_on:
            state._set_partition(waiter, PartitionStatus.ABSENT, now)


def _partition_failed(state: BuildState, e: ev.PartitionFailed, now: float, seq: int) -> None:
    part = state.partition(e.partition_ref)
    if e.retry_at:  # one output of a batch failed retryably: back off, as _run_failed does
        state._set_partition(part, PartitionStatus.BACKOFF, now)  # checks before changing
        part.message = e.message
        part.failures += 1
        part.retry_at = e.retry_at
        heapq.heappush(state.retry_timers, (e.retry_at, part.ref))
        return
    state._clear_waiting(part)
    part.message = e.message
    part.status = PartitionStatus.FAILED
    part.updated_at = now


def _partition_waiting(state: BuildState, e: ev.PartitionWaiting, now: float, seq: int) -> None:
    part = state.partition(e.partition_ref)
    if not e.waiting_on:  # released: it goes to its job, whose discovery decides
        if part.ref not in state.hint_waiting or part.status is not PartitionStatus.WAITING:
            raise IllegalTransition(f"partition {part.ref} does not wait on hinted inputs")
        state._check_partition(part, PartitionStatus.ABSENT)
        state._clear_waiting(part)
        state._set_partition(part, PartitionStatus.ABSENT, now)
        return
    # tests/core: check first. Only an absent partition (wanted, not yet run) waits on its
    # hints; the reconciler names only inputs that are not live.
    if part.status is not PartitionStatus.ABSENT:
        raise IllegalTransition(
            f"partition {part.ref} cannot wait on hinted inputs: it is {part.status.value}"
        )
    waiting = {ref for ref in e.waiting_on if not state.is_live(ref)}
    if not waiting or part.ref in waiting:
        raise IllegalTransition(f"partition {part.ref} cannot wait on {sorted(e.waiting_on)}")
    state._check_partition(part, PartitionStatus.WAITING)
    observe(state.observed_needs, e.job_name, e.waiting_on, state.graph, now)
    state.hinted_inputs[part.ref] = state.hinted_inputs.get(part.ref, frozenset()) | waiting
    part.waiting_on = waiting
    for dep in waiting:
        state.waiters[dep].add(part.ref)
    state._set_partition(part, PartitionStatus.WAITING, now)
    state.hint_waiting.add(part.ref)


def _partitions_invalidated(
    state: BuildState, e: ev.PartitionsInvalidated, now: float, seq: int
) -> None:
    # check all before changing any: an illegal event leaves the state as it was
    for ref in e.partition_refs:
        part = state.partitions.get(ref)
        if part is None or part.status is not PartitionStatus.LIVE:
            status = part.status.value if part is not None else "unknown"
            raise IllegalTransition(f"cannot invalidate {ref}: it is {status}, not live")
    for ref in e.partition_refs:
        part = state.partitions[ref]
        part.status = PartitionStatus.ABSENT
        part.message = f"invalidated by {e.requested_by or 'unknown'}: {e.reason or 'no reason'}"
        part.failures = 0
        part.updated_at = now
        part.upstream = ""
        if part.active_wants:  # none should be (a live partition's wants are satisfied)
            state._enqueue(part)


_Handler = Callable[[BuildState, Any, float, int], None]

_HANDLERS: dict[type, _Handler] = {
    ev.WantCreated: _want_created,
    ev.WantReopened: _want_reopened,
    ev.WantCanceled: _want_canceled,
    ev.WantExpired: _want_expired,
    ev.WantSatisfied: _want_satisfied,
    ev.WantFailed: _want_failed,
    ev.SlaMissed: _sla_missed,
    ev.JobRunQueued: _run_queued,
    ev.JobRunStarted: _run_started,
    ev.JobRunSucceeded: _run_succeeded,
    ev.JobRunFailed: _run_failed,
    ev.JobRunMissingDeps: _run_missing_deps,
    ev.JobRunCanceled: _run_canceled,
    ev.PartitionBuilding: _partition_building,
    ev.PartitionLive: _partition_live,
    ev.PartitionFailed: _partition_failed,
    ev.PartitionWaiting: _partition_waiting,
    ev.PartitionsInvalidated: _partitions_invalidated,
    ev.ConfigReloaded: _config_reloaded,
    ev.ClockStepped: _clock_stepped,
}


def canonical(state: BuildState) -> dict[str, object]:
    """The state of record as plain data, for comparing a replay with an incremental fold."""
    return {
        "wants": {
            k: (w.status.value, w.message, w.sla_missed, tuple(w.children), tuple(w.job_run_ids))
            for k, w in sorted(merged_items(state.wants))
        },
        "partitions": {
            k: (
                p.status.value,
                p.job_run_id,
                tuple(sorted(p.waiting_on)),
                p.failures,
                p.retry_at,
                p.message,
                tuple(sorted(p.active_wants)),
            )
            for k, p in sorted(state.partitions.items())
        },
        "runs": {
            k: (r.status.value, r.partition_refs, r.want_ids, r.message, r.missing)
            for k, r in sorted(merged_items(state.runs))
        },
        "waiters": {k: tuple(sorted(v)) for k, v in sorted(state.waiters.items()) if v},
        "running": {k: tuple(sorted(v)) for k, v in sorted(state.running_by_job.items()) if v},
        "active_want_count": state.active_want_count,
        "upstream_cursors": dict(sorted(state.upstream_cursors.items())),
        "hinted_inputs": {k: tuple(sorted(v)) for k, v in sorted(state.hinted_inputs.items())},
        "hint_waiting": tuple(sorted(state.hint_waiting)),
    }


__all__ = [
    "BuildState",
    "JobRunRecord",
    "PartitionRecord",
    "PartitionStatus",
    "WantRecord",
    "WantSource",
    "canonical",
]
