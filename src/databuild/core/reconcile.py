"""The reconciler: decisions of SPEC §2 as a pure function of (state, input, now).

Each input (a want request, a cancel, a run report, a clock tick) yields new events, which
are folded into the state at once (so later decisions in the same step see them) and
queued in ``outbox`` for the runtime to append to the log in one transaction, and effects
(start this run, kill that one) for the runtime to carry out *after* that append commits.

Decisions are level-based: they look at the state around a partition, not at the event
that woke it, so a missed or duplicated wake-up does no harm. Cost per input is
proportional to what it touches, never to the number of active wants. No I/O, no clock.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from databuild.core import events as ev
from databuild.core import externals, hints, sla
from databuild.core.errors import NotFound
from databuild.core.lifecycle import JobRunStatus, PartitionStatus
from databuild.core.model import (
    GraphSpec,
    JobRunId,
    JobSpec,
    Want,
    WantId,
    WantRequest,
    WantSource,
    WantStatus,
    job_run_id_for,
    want_id_for,
)
from databuild.core.outcomes import (
    OutputFailed,
    RunFailed,
    RunFinishedReport,
    RunMissingDeps,
    RunPartial,
    RunStartedReport,
    RunSucceeded,
)
from databuild.core.refs import PartitionRef
from databuild.core.retry import decide_retry
from databuild.core.state import BuildState, PartitionRecord, WantRecord

_REOPENABLE = frozenset({WantStatus.FAILED, WantStatus.UPSTREAM_FAILED, WantStatus.CANCELED})
_RETRIED_AFTER_RELOAD = frozenset({WantStatus.FAILED, WantStatus.UPSTREAM_FAILED})
_ORPHAN_STATUSES = frozenset({PartitionStatus.ABSENT, PartitionStatus.BACKOFF})


@dataclass(frozen=True, slots=True)
class StartRun:
    job_run_id: JobRunId
    job_name: str
    partition_refs: tuple[PartitionRef, ...]


@dataclass(frozen=True, slots=True)
class KillRun:
    job_run_id: JobRunId
    reason: str


@dataclass(frozen=True, slots=True)
class KillOrphan:
    """A run a previous service process started: make sure it is dead before retrying."""

    job_run_id: JobRunId
    pid: int


Effect = StartRun | KillRun | KillOrphan


@dataclass(frozen=True, slots=True)
class ReloadSummary:
    """What a config reload changed, and the root wants it retried."""

    jobs_added: tuple[str, ...]
    jobs_changed: tuple[str, ...]
    jobs_removed: tuple[str, ...]
    wants_retried: tuple[WantId, ...]


class Reconciler:
    """Owns a ``BuildState``; turns inputs into events (folded and queued) and effects."""

    def __init__(self, graph: GraphSpec, state: BuildState | None = None) -> None:
        self.graph = graph
        self.state = state if state is not None else BuildState(graph)
        self.outbox: list[ev.Event] = []
        self.effects: list[Effect] = []
        # jobs a reload removed: their in-flight runs finish under the spec they started with
        self._retired: dict[str, JobSpec] = {}

    # ---- plumbing ------------------------------------------------------------------
    def _emit(self, payload: ev.EventPayload, now: float) -> None:
        # The log assigns consecutive sequences under its single writer, so the next one is
        # known here; the runtime checks that the log agrees.
        event = ev.Event(self.state.last_sequence + 1, now, payload)
        self.state.apply(event)
        self.outbox.append(event)

    def take(self) -> tuple[list[ev.Event], list[Effect]]:
        """Events to append (in order, one transaction) and effects to carry out after."""
        events, effects = self.outbox, self.effects
        self.outbox, self.effects = [], []
        return events, effects

    def load(self, events: list[ev.Event]) -> None:
        """Fold events read back from the log (a restart). The keys the events make are
        looked up in history once for the whole batch, not one lookup each."""
        self.state.expect_new(events)
        try:
            for event in events:
                self.state.apply(event)
        finally:
            self.state.wants.absent.clear()
            self.state.runs.absent.clear()

    # ---- wants ---------------------------------------------------------------------
    def request_want(self, request: WantRequest, now: float) -> WantId:
        """Create (or reopen) the want a client asks for. Idempotent: same request, same id."""
        want_id = request.want_id
        record = self.state.wants.get(want_id)
        if record is None:
            want = Want(
                want_id=want_id,
                root_want_id=request.root_want_id or want_id,
                parent_want_id=None,
                partition_ref=request.partition_ref,
                data_timestamp=request.data_timestamp,
                ttl_seconds=request.ttl_seconds,
                sla_seconds=request.sla_seconds,
                source=request.source,
            )
            self._emit(ev.WantCreated(want), now)
        elif self._reopenable(record):
            self._emit(ev.WantReopened(want_id, None), now)
        else:
            return want_id
        self._examine_new(want_id, now)
        return want_id

    def _reopenable(self, record: WantRecord) -> bool:
        """Failed, upstream-failed and canceled wants reopen when asked again; a satisfied
        one too once its partition is no longer live (it was invalidated)."""
        if record.status in _REOPENABLE:
            return True
        return record.status is WantStatus.SATISFIED and not self.state.is_live(
            record.want.partition_ref
        )

    def invalidate(
        self, refs: tuple[PartitionRef, ...], reason: str, requested_by: str, now: float
    ) -> tuple[tuple[PartitionRef, ...], tuple[WantId, ...]]:
        """Make live ``refs`` absent (one ``PartitionsInvalidated``; ``core.invalidation``
        decides the set) and reopen, in the same step, the satisfied wants asked for them
        by a client (not derived ones: a rebuild discovers those again) that have not
        expired. Returns the refs and the reopened want ids."""
        if not refs:
            return (), ()
        self._emit(ev.PartitionsInvalidated(refs, reason, requested_by), now)
        reopen = sorted(
            record.want.want_id
            for record in self.state.wants_on(set(refs), WantStatus.SATISFIED)
            if record.want.source is not WantSource.DERIVED and record.want.expires_at > now
        )
        for want_id in reopen:
            self._emit(ev.WantReopened(want_id, None), now)
            self._examine_new(want_id, now)
        return refs, tuple(reopen)

    def _examine_new(self, want_id: WantId, now: float) -> None:
        record = self.state.wants[want_id]
        want = record.want
        if want.expires_at <= now:
            self._emit(ev.WantExpired(want_id), now)
            return
        part = self.state.partition(want.partition_ref)
        if part.status is PartitionStatus.LIVE:
            self._emit(ev.WantSatisfied(want_id, None), now)
            return
        route = self.graph.route(want.partition_ref)
        if route.problem:
            self._emit(ev.PartitionFailed(part.ref, None, route.problem), now)
            self._fail_partition_wants(part, ev.WantFailureReason.UNBUILDABLE, route.problem, now)
            self._cascade_upstream_failure(part.ref, route.problem, now)
            return
        # tests/core: the partition already waits on missing inputs (a run reported them for
        # an earlier want, since canceled or expired, whose child wants were released). Ask
        # for those inputs on this want's behalf, or it would wait on them forever.
        if part.status is PartitionStatus.WAITING:
            for dep in sorted(part.waiting_on):
                self._want_child(want, dep, now)
                if self.state.partition(part.ref).status is not PartitionStatus.WAITING:
                    break  # a child failed at once (unbuildable) and failed this want too

    def cancel_want(self, want_id: WantId, reason: str, now: float) -> WantStatus:
        record = self.state.wants.get(want_id)
        if record is None:
            raise NotFound(f"no want with id {want_id!r}")
        if record.active:
            ref = record.want.partition_ref
            self._emit(ev.WantCanceled(want_id, reason or "canceled"), now)
            if not self.state.partition(ref).active_wants and any(
                self.state.partition(w).active_wants for w in self.state.waiters.get(ref, ())
            ):
                # A derived want canceled by hand while other wants still wait on its
                # partition: nothing will build it now, so they fail (upstream-failed,
                # naming the cancel; asking again reopens them) instead of waiting for ever.
                self._cascade_upstream_failure(
                    ref, f"its want {want_id} was canceled ({reason or 'canceled'})", now
                )
            self._release(ref, f"no longer needed: want {want_id} canceled", now)
        return record.status

    def _needed(self, ref: PartitionRef) -> bool:
        part = self.state.partitions.get(ref)
        if part is None or not part.active_wants:
            return False
        wants = self.state.wants
        if any(wants[w].want.source is not WantSource.DERIVED for w in part.active_wants):
            return True
        return any(self.state.partition(p).active_wants for p in self.state.waiters.get(ref, ()))

    def _release(self, ref: PartitionRef, reason: str, now: float) -> None:
        """Stop work on ``ref`` and what it waits on, where nothing else still needs it."""
        stack = [ref]
        seen: set[PartitionRef] = set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            part = self.state.partition(current)
            if self._needed(current):
                continue
            for want_id in sorted(part.active_wants):
                self._emit(ev.WantCanceled(want_id, reason), now)
            if part.status is PartitionStatus.BUILDING and part.job_run_id is not None:
                run = self.state.runs[part.job_run_id]
                if not run.status.terminal and not any(
                    self.state.partition(r).active_wants for r in run.partition_refs
                ):
                    self._emit(ev.JobRunCanceled(run.job_run_id, reason), now)
                    self._stop_run(run.job_run_id, reason)
            stack.extend(sorted(part.waiting_on))

    def _stop_run(self, run_id: JobRunId, reason: str) -> None:
        """A run canceled: kill it, or, if it was dispatched in this same step (its start
        not yet taken), never start it (tests/core: a hint wait that failed at once later
        in one dispatch pass released a run queued earlier in it)."""
        for index, effect in enumerate(self.effects):
            if isinstance(effect, StartRun) and effect.job_run_id == run_id:
                del self.effects[index]
                return
        self.effects.append(KillRun(run_id, reason))

    # ---- run reports ---------------------------------------------------------------
    def run_started(self, report: RunStartedReport, now: float) -> None:
        run = self.state.runs.get(report.job_run_id)
        if run is not None and run.status is JobRunStatus.QUEUED:
            at = min(report.at, now) if report.at else now
            self._emit(ev.JobRunStarted(report.job_run_id, report.pid, at), now)

    def run_finished(self, report: RunFinishedReport, now: float) -> None:
        run = self.state.runs.get(report.job_run_id)
        if run is None or run.status.terminal:
            return  # canceled or lost meanwhile: its outcome no longer counts
        outcome = report.outcome
        if isinstance(outcome, RunMissingDeps | RunPartial):
            problem = _missing_problem(run.partition_refs, outcome)
            if problem:
                code = outcome.exit_code if isinstance(outcome, RunPartial) else 0
                outcome = RunFailed(
                    ev.FailureKind.BAD_RESULT, problem, code, outcome.duration_seconds
                )
        if isinstance(outcome, RunSucceeded):
            self._succeeded(run.job_run_id, outcome, now)
        elif isinstance(outcome, RunMissingDeps):
            self._missing(run.job_run_id, outcome, now)
        elif isinstance(outcome, RunPartial):
            self._partial(run.job_run_id, outcome, now)
        else:
            self._failed(run.job_run_id, outcome, now)

    def _succeeded(self, run_id: JobRunId, outcome: RunSucceeded, now: float) -> None:
        run = self.state.runs[run_id]
        self._emit(ev.JobRunSucceeded(run_id, outcome.duration_seconds), now)
        for ref in run.partition_refs:
            self._make_live(ref, run_id, "", now)

    def _make_live(
        self,
        ref: PartitionRef,
        run_id: JobRunId | None,
        upstream: str,
        now: float,
        external: str = "",
        upstream_sequence: int = 0,
    ) -> None:
        part = self.state.partition(ref)
        if part.status is PartitionStatus.LIVE:
            return
        version = self.state.runs[run_id].job_version if run_id is not None else ""
        self._emit(
            ev.PartitionLive(ref, run_id, upstream, external, version, upstream_sequence), now
        )
        for want_id in sorted(part.active_wants):
            self._emit(ev.WantSatisfied(want_id, run_id), now)

    def partition_live_upstream(
        self, ref: PartitionRef, upstream: str, now: float, upstream_sequence: int = 0
    ) -> None:
        """An upstream graph reports ``ref`` live (cross-graph coordination), learned from
        its event ``upstream_sequence`` (recorded: the follower's cursor). Once live
        here, hearing it again records nothing (the runtime passes only refs the upstream
        provides: ``core.federation.provided_by``)."""
        self._make_live(ref, None, upstream, now, upstream_sequence=upstream_sequence)

    def upstream_failed(self, ref: PartitionRef, upstream: str, message: str, now: float) -> None:
        """The want forwarded to ``upstream`` for ``ref`` failed, expired or was canceled
        there: the local wants on ``ref`` (and those waiting on it) fail as
        upstream-failed, with the upstream's message. Nothing when none is active."""
        part = self.state.partition(ref)
        if part.status is PartitionStatus.LIVE or not part.active_wants:
            return
        text = f"upstream graph {upstream}: {message}"
        self._emit(ev.PartitionFailed(ref, None, text), now)
        self._fail_partition_wants(part, ev.WantFailureReason.UPSTREAM_FAILED, text, now, ref)
        self._cascade_upstream_failure(ref, text, now)

    def externals_live(self, refs: tuple[PartitionRef, ...], now: float) -> None:
        """Declare external partitions live (by hand, or their check found them): the wants
        waiting on them are woken in this same step. Idempotent: a live one stays as it
        is. Refs that are not an external's are refused (InvalidInput), and then none is
        made live."""
        names = externals.check_live_refs(self.graph, refs)
        for ref, name in zip(refs, names, strict=True):
            self._make_live(ref, None, "", now, external=name)

    def _missing(self, run_id: JobRunId, outcome: RunMissingDeps, now: float) -> None:
        # what the batch built goes live first, while the run still holds it: only the
        # outputs that lack inputs (and those it named nowhere) run again
        for ref in outcome.built:
            part = self.state.partition(ref)
            if part.status is PartitionStatus.BUILDING and part.job_run_id == run_id:
                self._make_live(ref, run_id, "", now)
        self._emit(ev.JobRunMissingDeps(run_id, outcome.missing, outcome.duration_seconds), now)
        for item in outcome.missing:
            part = self.state.partition(item.partition_ref)
            if part.status is not PartitionStatus.WAITING:
                continue
            cycle = self._cycle(part)
            # tests/core: a cycle through hint waits is broken by releasing them, but the
            # report may have closed several at once (one per input): look again until
            # none is left, or one is left that no hint makes (a real cycle: it fails)
            while cycle and self._release_hint_waits(cycle, now):
                cycle = self._cycle(part)
            if cycle:
                message = "dependency cycle: " + " -> ".join(cycle)
                self._emit(ev.PartitionFailed(part.ref, run_id, message), now)
                self._fail_partition_wants(
                    part, ev.WantFailureReason.DEPENDENCY_CYCLE, message, now
                )
                self._cascade_upstream_failure(part.ref, message, now)
                continue
            self._want_inputs(part, now)

    def _want_inputs(self, part: PartitionRecord, now: float) -> None:
        """Each input a waiting partition lacks becomes a child want of each of its active
        wants: for inputs a run reported missing and for those its job's hints name alike."""
        for want_id in sorted(part.active_wants):
            parent = self.state.wants[want_id].want
            for dep in sorted(part.waiting_on):
                self._want_child(parent, dep, now)
                if self.state.partition(part.ref).status is not PartitionStatus.WAITING:
                    break  # a child failed at once (unbuildable) and failed this too
            if self.state.partition(part.ref).status is not PartitionStatus.WAITING:
                break

    def _want_child(self, parent: Want, dep: PartitionRef, now: float) -> None:
        child_id = want_id_for(dep, parent.data_timestamp, WantSource.DERIVED)
        existing = self.state.wants.get(child_id)
        if existing is None:
            child = Want(
                want_id=child_id,
                root_want_id=parent.root_want_id,
                parent_want_id=parent.want_id,
                partition_ref=dep,
                data_timestamp=parent.data_timestamp,
                # tests/core: a child want does not expire on its own. Its id leaves out the
                # TTL, so it is shared by every parent with this data_timestamp; inheriting
                # the first parent's TTL made it expire (for good: expired is final) while a
                # longer-lived parent still waited on it, which then waited forever. It is
                # released (canceled, reopenable) by _release when no active want needs it.
                ttl_seconds=0,
                sla_seconds=parent.sla_seconds,
                source=WantSource.DERIVED,
            )
            self._emit(ev.WantCreated(child), now)
        elif self._reopenable(existing):
            self._emit(ev.WantReopened(child_id, parent.want_id), now)
        else:
            return
        self._examine_new(child_id, now)

    def _cycle(self, part: PartitionRecord) -> list[str]:
        """A path dep -> ... -> part through waiting edges, if ``part`` now waits on itself."""
        target = part.ref
        return self._waiting_path([(dep, [target, dep]) for dep in sorted(part.waiting_on)], target)

    def _waiting_path(
        self, stack: list[tuple[PartitionRef, list[str]]], target: PartitionRef
    ) -> list[str]:
        """Depth first along waiting edges from ``stack`` (ref, path so far): the path to
        ``target``, or [] when none leads there."""
        seen: set[PartitionRef] = set()
        while stack:
            ref, path = stack.pop()
            if ref == target:
                return path
            if ref in seen:
                continue
            seen.add(ref)
            node = self.state.partitions.get(ref)
            if node is not None:
                stack.extend((d, [*path, d]) for d in sorted(node.waiting_on))
        return []

    def _wait_for_hints(self, job: JobSpec, ref: PartitionRef, now: float) -> bool:
        """About to dispatch ``ref``: if its job's input hints name inputs that are not
        live, ``ref`` waits on them instead (``PartitionWaiting``, then child wants exactly
        as for inputs a run reported missing) and True is returned: do not dispatch it now.

        Only a partition that has not run yet (absent) waits on hints; a retry after a
        failure goes straight to the job, whose discovery decides. A hinted input whose
        want chain leads back to ``ref`` (a cycle of hints), and one that failed, are
        ignored, so that the job runs and its discovery decides: a real cycle is then
        reported and fails as one, and a failed input the job reads is asked for again."""
        part = self.state.partition(ref)
        if not job.inputs or part.status is not PartitionStatus.ABSENT:
            return False
        deps = tuple(
            dep
            for dep in hints.resolve(job, ref)
            if self._worth_waiting_on(dep) and not self._leads_back(dep, part)
        )
        if not deps:
            return False
        self._emit(ev.PartitionWaiting(ref, job.name, deps), now)
        self._want_inputs(self.state.partition(ref), now)
        if self.state.partition(ref).status is not PartitionStatus.WAITING:
            # a hinted input nothing builds failed it at once: the inputs asked for in this
            # step that nothing else needs are released, or they would build (and, through
            # their own discovery, ask for ``ref`` again) for no one
            for dep in deps:
                self._release(dep, f"no longer needed: {ref} failed", now)
        return True

    def _release_hint_waits(self, cycle: list[str], now: float) -> bool:
        """A run's report closed ``cycle``: if partitions on it wait only because of hints,
        they stop waiting (``PartitionWaiting`` with no inputs) and go to their jobs, whose
        discovery decides: a hint never makes a cycle that discovery alone would not. True
        if one was released (the cycle is then broken)."""
        released = False
        for ref in dict.fromkeys(PartitionRef(r) for r in cycle[1:-1]):
            if ref in self.state.hint_waiting:
                job = self.state.job_of(ref) or ""
                self._emit(ev.PartitionWaiting(ref, job, ()), now)
                released = True
        return released

    def _worth_waiting_on(self, dep: PartitionRef) -> bool:
        """Not live, and not failed: a hinted input that failed is not asked for again by
        a hint (that would reopen it, and a failing input would be retried for ever); the
        job runs, and its discovery reopens the input if the job really reads it."""
        node = self.state.partitions.get(dep)
        return node is None or node.status not in (PartitionStatus.LIVE, PartitionStatus.FAILED)

    def _leads_back(self, dep: PartitionRef, part: PartitionRecord) -> bool:
        """Would ``part`` waiting on ``dep`` close a cycle? Yes when ``dep`` waits
        (transitively) on ``part``, or when a want of ``dep`` is an ancestor of a want of
        ``part`` (whatever state ``dep`` is in now: building, backing off, failed)."""
        if self._waiting_path([(dep, [dep])], part.ref):
            return True
        wants = self.state.wants
        for want_id in part.active_wants:
            parent_id = wants[want_id].want.parent_want_id
            visited: set[WantId] = set()
            while parent_id is not None and parent_id not in visited and parent_id in wants:
                visited.add(parent_id)
                parent = wants[parent_id].want
                if parent.partition_ref == dep:
                    return True
                parent_id = parent.parent_want_id
        return False

    def _failed(self, run_id: JobRunId, outcome: RunFailed, now: float) -> None:
        run = self.state.runs[run_id]
        job = self._job_spec(run.job_name)
        failures = max((self.state.partition(r).failures for r in run.partition_refs), default=0)
        decision = decide_retry(job, outcome.kind, failures, now)
        self._emit(
            ev.JobRunFailed(
                run_id,
                outcome.kind,
                outcome.message,
                outcome.exit_code,
                outcome.duration_seconds,
                decision.retry_at,
            ),
            now,
        )
        if not decision.give_up:
            return
        attempts = failures + 1
        for ref in run.partition_refs:
            part = self.state.partition(ref)
            if part.status is not PartitionStatus.BUILDING or part.job_run_id != run_id:
                continue
            message = f"job {job.name} failed after {attempts} attempt(s): {outcome.message}"
            self._emit(ev.PartitionFailed(ref, run_id, message), now)
            self._fail_partition_wants(part, ev.WantFailureReason.JOB_FAILED, message, now)
            self._cascade_upstream_failure(ref, message, now)

    def _partial(self, run_id: JobRunId, outcome: RunPartial, now: float) -> None:
        """Each output its own outcome. The per-output events come first, while the run
        still holds its partitions, so that the run's own ending (missing dependencies, or
        failed) then applies to what is left: the outputs that lack inputs, or nothing."""
        run = self.state.runs[run_id]
        job = self.graph.job(run.job_name)
        failed = {f.partition_ref: f for f in outcome.failed}
        missing = {m.partition_ref for m in outcome.missing}
        retried: set[PartitionRef] = set()
        for ref in run.partition_refs:
            part = self.state.partition(ref)
            if part.status is not PartitionStatus.BUILDING or part.job_run_id != run_id:
                continue
            if ref in failed:
                if self._output_failed(run_id, job.name, part, failed[ref], now):
                    retried.add(ref)
            elif ref not in missing:
                self._make_live(ref, run_id, "", now)
        if outcome.missing:
            self._missing(run_id, RunMissingDeps(outcome.missing, outcome.duration_seconds), now)
            return
        permanent = all(not f.kind.retryable for f in outcome.failed)
        kind = ev.FailureKind.PERMANENT if permanent else ev.FailureKind.EXIT_NONZERO
        self._emit(
            ev.JobRunFailed(
                run_id,
                kind,
                _partial_message(len(run.partition_refs), outcome.failed, retried),
                outcome.exit_code,
                outcome.duration_seconds,
                0.0,  # each failed output was retried, or not, on its own above
            ),
            now,
        )

    def _output_failed(
        self, run_id: JobRunId, job_name: str, part: PartitionRecord, f: OutputFailed, now: float
    ) -> bool:
        """One output failed: back it off or fail it (and what waits on it). True: retried."""
        decision = decide_retry(self.graph.job(job_name), f.kind, part.failures, now)
        if not decision.give_up:
            self._emit(ev.PartitionFailed(part.ref, run_id, f.message, decision.retry_at), now)
            return True
        attempts = part.failures + 1
        message = f"job {job_name} failed after {attempts} attempt(s): {f.message}"
        self._emit(ev.PartitionFailed(part.ref, run_id, message), now)
        self._fail_partition_wants(part, ev.WantFailureReason.JOB_FAILED, message, now)
        self._cascade_upstream_failure(part.ref, message, now)
        return False

    def _fail_partition_wants(
        self,
        part: PartitionRecord,
        reason: ev.WantFailureReason,
        message: str,
        now: float,
        upstream: PartitionRef | None = None,
    ) -> None:
        for want_id in sorted(part.active_wants):
            self._emit(ev.WantFailed(want_id, reason, message, upstream), now)

    def _cascade_upstream_failure(self, failed: PartitionRef, message: str, now: float) -> None:
        """Every partition waiting (transitively) on ``failed`` fails as upstream-failed."""
        stack = [failed]
        while stack:
            ref = stack.pop()
            for waiter_ref in sorted(self.state.waiters.get(ref, set()).copy()):
                waiter = self.state.partition(waiter_ref)
                if waiter.status is not PartitionStatus.WAITING:
                    continue
                text = f"upstream partition {failed} failed: {message}"
                self._emit(ev.PartitionFailed(waiter_ref, None, text), now)
                self._fail_partition_wants(
                    waiter, ev.WantFailureReason.UPSTREAM_FAILED, text, now, failed
                )
                stack.append(waiter_ref)

    def _job_spec(self, name: str) -> JobSpec:
        """The spec a run of job ``name`` is judged by: the current one, else the one it had
        before a reload removed it, else (a job no configuration since the restart has) a
        spec without retries; a lost run of it is still retried at once and so re-routed."""
        try:
            return self.graph.job(name)
        except KeyError:
            return self._retired.get(name) or JobSpec(name, (), ("",), retries=0)

    # ---- configuration -------------------------------------------------------------
    def reload(self, graph: GraphSpec, config_digest: str, now: float) -> ReloadSummary:
        """Route by ``graph`` from now on. New and changed jobs apply to the runs dispatched
        from now on; runs in flight finish under their old spec. Partitions now owned by no
        one fail as unbuildable (``_fail_orphans``, at the next tick); root wants that failed
        only because no job built a partition that one builds now are reopened."""
        old_jobs = {j.name: j for j in self.graph.jobs}
        new_jobs = {j.name: j for j in graph.jobs}
        added = tuple(n for n in new_jobs if n not in old_jobs)
        changed = tuple(n for n in new_jobs if n in old_jobs and new_jobs[n] != old_jobs[n])
        removed = tuple(n for n in old_jobs if n not in new_jobs)
        self._retired.update((n, old_jobs[n]) for n in removed)
        for name in new_jobs:
            self._retired.pop(name, None)
        self.graph = graph
        self.state.use_graph(graph)
        self._emit(ev.ConfigReloaded(config_digest, added, changed, removed), now)
        return ReloadSummary(added, changed, removed, self._retry_unbuildable(now))

    def _retry_unbuildable(self, now: float) -> tuple[WantId, ...]:
        wants = self.state.wants
        roots: dict[WantId, None] = {}
        for want_id in sorted(self.state.unbuildable):
            want = wants[want_id].want
            if not self.graph.route(want.partition_ref).problem:
                roots[want.root_want_id] = None
        retried: list[WantId] = []
        for root_id in roots:
            root = wants.get(root_id)
            if root is None or root.status not in _RETRIED_AFTER_RELOAD:
                continue
            if root.want.expires_at <= now:
                continue  # past its TTL: reopening would only expire it again
            self._emit(ev.WantReopened(root_id, None), now)
            self._examine_new(root_id, now)
            retried.append(root_id)
        return tuple(retried)

    def _fail_orphans(self, now: float) -> None:
        """Partitions made ready that no local job builds: those no upstream provides either
        (a reload removed their job) fail as unbuildable instead of waiting for ever."""
        state = self.state
        while state.orphaned:
            ref = state.orphaned.pop()
            part = state.partitions.get(ref)
            if part is None or not part.active_wants or part.status not in _ORPHAN_STATUSES:
                continue
            problem = self.graph.route(ref).problem
            if not problem:
                continue  # an upstream graph's partition: it waits for the upstream
            self._emit(ev.PartitionFailed(ref, None, problem), now)
            self._fail_partition_wants(part, ev.WantFailureReason.UNBUILDABLE, problem, now)
            self._cascade_upstream_failure(ref, problem, now)

    # ---- restart -------------------------------------------------------------------
    def recover(self, now: float) -> None:
        """After a restart: runs in flight under the old process are killed and retried."""
        for run in list(self.state.runs.hot.values()):  # a run not finished is in memory
            if run.status.terminal:
                continue
            if run.pid:
                self.effects.append(KillOrphan(run.job_run_id, run.pid))
            self._failed(
                run.job_run_id,
                RunFailed(
                    ev.FailureKind.LOST,
                    "the service stopped while this run was in flight; retried",
                    -1,
                    0.0,
                ),
                now,
            )

    # ---- time and dispatch ---------------------------------------------------------
    def clock_stepped(self, seconds: float, now: float) -> bool:
        """The wall clock leapt ``seconds`` ahead of the time that passed: retry back-offs
        still waiting move later by as much (one ``ClockStepped``, only if there is one to
        move). True if recorded."""
        if seconds <= 0:
            return False
        before = now - seconds
        waiting = any(
            (part := self.state.partitions.get(ref)) is not None
            and part.status is PartitionStatus.BACKOFF
            and part.retry_at > before
            for _, ref in self.state.retry_timers
        )
        if waiting:
            self._emit(ev.ClockStepped(seconds), now)
        return waiting

    def tick(self, now: float, free_slots: int) -> None:
        """Fire due timers (retry, TTL, SLA), then dispatch ready partitions by deadline."""
        self._fire_timers(now)
        self._fail_orphans(now)
        self._dispatch(now, free_slots)
        # waits on hinted inputs in dispatch may have made child wants: the timers they bring
        # (an SLA deadline already past) fire in this tick too, as a run's missing inputs'
        # would; nothing they fire is dispatchable (no retry timer is due)
        self._fire_timers(now)
        self._fail_orphans(now)

    def next_wakeup(self) -> float | None:
        """When ``tick`` next has timed work to do (None: only new inputs can make work)."""
        heads = [
            h[0][0]
            for h in (self.state.retry_timers, self.state.ttl_timers, self.state.sla_timers)
            if h
        ]
        return min(heads) if heads else None

    def _fire_timers(self, now: float) -> None:
        state = self.state
        while state.retry_timers and state.retry_timers[0][0] <= now:
            _, ref = heapq.heappop(state.retry_timers)
            part = state.partition(ref)
            if part.status is PartitionStatus.BACKOFF and part.retry_at <= now:
                state._enqueue(part)
        while state.ttl_timers and state.ttl_timers[0][0] <= now:
            _, want_id = heapq.heappop(state.ttl_timers)
            record = state.wants[want_id]
            if record.active and record.want.expires_at <= now:
                self._emit(ev.WantExpired(want_id), now)
                self._release(
                    record.want.partition_ref, f"no longer needed: want {want_id} expired", now
                )
        while state.sla_timers and state.sla_timers[0][0] <= now:
            _, want_id = heapq.heappop(state.sla_timers)
            record = state.wants[want_id]
            deadline = record.want.sla_deadline
            # on time: satisfied by the deadline; canceled wants have no SLA left to miss.
            # (A want satisfied after its deadline, before this tick, still missed it.)
            on_time = record.status is WantStatus.SATISFIED and record.finished_at <= deadline
            exempt = on_time or record.status is WantStatus.CANCELED
            if not exempt and not record.sla_missed and deadline <= now:
                blame_ref, blame = self.blame(want_id)
                self._emit(ev.SlaMissed(want_id, deadline, blame_ref, blame), now)

    def _dispatchable(self, ref: PartitionRef, now: float) -> bool:
        part = self.state.partitions.get(ref)
        if part is None or not part.active_wants:
            return False
        if part.status is PartitionStatus.ABSENT:
            return True
        return part.status is PartitionStatus.BACKOFF and part.retry_at <= now

    def _dispatch(self, now: float, free_slots: int) -> None:
        state = self.state
        while free_slots > 0:
            best: tuple[float, str] | None = None
            for job_name, queue in state.ready.items():
                while queue and not self._dispatchable(queue[0][-1], now):
                    heapq.heappop(queue)
                if not queue:
                    continue
                job = self.graph.job(job_name)
                if len(state.running_by_job[job_name]) >= job.concurrency:
                    continue
                if best is None or queue[0][0] < best[0]:
                    best = (queue[0][0], job_name)
            if best is None:
                return
            job = self.graph.job(best[1])
            queue = state.ready[job.name]
            # Spread what is ready over the slots this job can use now, so that a long
            # queue keeps every slot busy instead of filling one batch and leaving the rest
            # idle; never more than the job's max_batch. (len(queue) may count stale
            # entries: it only sizes the batch.)
            slots = min(free_slots, job.concurrency - len(state.running_by_job[job.name]))
            size = min(job.max_batch, -(-len(queue) // max(1, slots)))
            batch: list[PartitionRef] = []
            chosen: set[PartitionRef] = set()
            while queue and len(batch) < size:
                ref = heapq.heappop(queue)[-1]
                if ref in chosen or not self._dispatchable(ref, now):
                    continue
                if self._wait_for_hints(job, ref, now):
                    continue  # it waits on hinted inputs; their wants are made
                batch.append(ref)
                chosen.add(ref)
            if not batch:
                continue
            run_id = job_run_id_for(state.run_count + 1)
            want_ids = tuple(w for ref in batch for w in sorted(state.partition(ref).active_wants))
            self._emit(ev.JobRunQueued(run_id, job.name, tuple(batch), want_ids, job.version), now)
            for ref in batch:
                self._emit(ev.PartitionBuilding(ref, run_id), now)
            self.effects.append(StartRun(run_id, job.name, tuple(batch)))
            free_slots -= 1

    # ---- explanations --------------------------------------------------------------
    def blame(self, want_id: WantId) -> tuple[PartitionRef, str]:
        """Which partition in the want's chain holds it up, and why (``core.sla.blame``)."""
        found = sla.blame(self.state, want_id)
        return found.ref, found.text


def _partial_message(
    requested: int, failed: tuple[OutputFailed, ...], retried: set[PartitionRef]
) -> str:
    shown = "; ".join(
        f"{f.partition_ref}: {f.message}" + (" (will retry)" if f.partition_ref in retried else "")
        for f in failed[:3]
    )
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return f"{len(failed)} of {requested} outputs failed: {shown}{more}"


def _missing_problem(
    requested: tuple[PartitionRef, ...], outcome: RunMissingDeps | RunPartial
) -> str:
    if isinstance(outcome, RunPartial):
        if not outcome.failed:
            return "the job reported per-output failures but named none"
        for f in outcome.failed:
            if f.partition_ref not in requested:
                return (
                    f"the job reported a failure of {f.partition_ref!r}, "
                    f"which it was not asked to build (asked: {', '.join(requested)})"
                )
        if {m.partition_ref for m in outcome.missing} & {f.partition_ref for f in outcome.failed}:
            return "the job reported an output both as failed and as missing inputs"
    elif not outcome.missing:
        return "the job reported missing dependencies but named none"
    for item in outcome.missing:
        if item.partition_ref not in requested:
            return (
                f"the job reported missing inputs for {item.partition_ref!r}, "
                f"which it was not asked to build (asked: {', '.join(requested)})"
            )
        if not item.missing_refs:
            return f"the job reported output {item.partition_ref!r} as blocked but named no input"
    if isinstance(outcome, RunMissingDeps):
        blocked = {m.partition_ref for m in outcome.missing}
        for ref in outcome.built:
            if ref not in requested:
                return (
                    f"the job reported {ref!r} as built, which it was not asked to build "
                    f"(asked: {', '.join(requested)})"
                )
            if ref in blocked:
                return f"the job reported {ref!r} both as built and as missing inputs"
    return ""
