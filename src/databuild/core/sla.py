"""SLA answers as pure functions of the folded state: who holds a want up, will it be late.

Called by the reconciler (``blame`` when an SLA timer fires, to record in ``SlaMissed``
why the want is late), by the service's SLA routes and by the dashboard. Everything here
reads a ``BuildState`` and takes ``now`` as a parameter; it never changes the state,
reads the clock or does I/O.

*Blame* walks the want's chain (its partition, then what that waits on, transitively, that
is not live) and names the partition that holds it up most: a failed job first, then a
job in retry back-off, an unbuildable partition, a cycle, an external partition not yet
live (``waiting on external NAME: <ref>``), an upstream graph, a queued
partition, a running one.

*Prediction* (``predict``): predicted finish = ``now`` + the sum, over the partitions still
ahead in the want's chain, of the expected duration of the job that builds each. It is
deliberately conservative: partitions ahead are assumed to run one after another. The
expected duration of a job is the median of its recorded successful runs (the last 50,
``BuildState.job_durations``); before any is recorded, its ``expected_duration`` hint from
``databuild.toml``; else ``DEFAULT_JOB_SECONDS``. A running partition counts only what is
left of its expected duration; one in retry back-off adds the wait until its retry. A
partition an upstream graph provides counts 0: this graph cannot predict another's work.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from enum import StrEnum

from databuild.core.data_time import format_timestamp
from databuild.core.externals import waiting_text
from databuild.core.lifecycle import PartitionStatus
from databuild.core.model import NO_DEADLINE, WantId, WantStatus
from databuild.core.refs import PartitionRef
from databuild.core.state import BuildState, PartitionRecord

DEFAULT_JOB_SECONDS = 60.0
"""The expected duration of a job with no recorded run and no ``expected_duration`` hint."""


class BlameReason(StrEnum):
    """Why a partition holds a want up, most severe first (``SEVERITY`` order)."""

    JOB_FAILED = "job_failed"  # its job failed for good (the want failed)
    RETRYING = "retrying"  # its job failed; a retry is scheduled
    UNBUILDABLE = "unbuildable"  # no job builds it and no upstream graph provides it
    CYCLE = "cycle"  # it waits (transitively) on itself
    EXTERNAL = "external"  # waiting on an external partition to be declared live
    UPSTREAM_GRAPH = "upstream_graph"  # waiting on an upstream graph to provide it
    QUEUED = "queued"  # ready, waiting for a run slot of its job
    RUNNING = "running"  # its job is running now
    EXPIRED = "expired"  # the want passed its TTL before its partition was built
    NOT_HELD = "not_held"  # nothing holds it up (its partition is live)


SEVERITY: tuple[BlameReason, ...] = tuple(BlameReason)


@dataclass(frozen=True, slots=True)
class Blame:
    ref: PartitionRef
    reason: BlameReason
    text: str  # one line for people; recorded in ``SlaMissed.blame``


@dataclass(frozen=True, slots=True)
class AheadItem:
    """One partition still ahead of a want, and what it is expected to cost."""

    ref: PartitionRef
    job_name: str  # "" for a partition an upstream graph provides
    status: PartitionStatus
    expected_seconds: float  # what is left of it, from ``now``


@dataclass(frozen=True, slots=True)
class Prediction:
    want_id: WantId
    deadline: float  # NO_DEADLINE without an SLA
    predicted_finish: float
    ahead: tuple[AheadItem, ...]

    @property
    def at_risk(self) -> bool:
        return self.deadline != NO_DEADLINE and self.predicted_finish > self.deadline

    @property
    def slack_seconds(self) -> float:
        """Deadline minus predicted finish: negative when predicted late."""
        return self.deadline - self.predicted_finish


# ---- blame ---------------------------------------------------------------------------
def blame(state: BuildState, want_id: WantId) -> Blame:
    """Which partition in the want's chain holds it up, and why."""
    record = state.wants[want_id]
    ref = record.want.partition_ref
    if record.status is WantStatus.EXPIRED:
        return Blame(ref, BlameReason.EXPIRED, "the want expired (past its TTL) unbuilt")
    leaves: list[Blame] = []
    seen: set[PartitionRef] = set()
    # each entry carries the path to it: a cycle is a ref met again on its own path, not
    # one met again through another path (a diamond: two inputs that wait on one ref)
    stack: list[tuple[PartitionRef, tuple[PartitionRef, ...]]] = [(ref, ())]
    while stack:
        current, path = stack.pop()
        if current in path:
            leaves.append(Blame(path[-1], BlameReason.CYCLE, "waiting on its own inputs (cycle)"))
            continue
        if current in seen:
            continue
        seen.add(current)
        part = state.partitions.get(current)
        if part is None or part.status is not PartitionStatus.WAITING:
            leaves.append(_leaf(state, current, part))
            continue
        pending = sorted((r for r in part.waiting_on if not state.is_live(r)), reverse=True)
        if not pending:
            leaves.append(_leaf(state, current, None))
            continue
        stack.extend((r, (*path, current)) for r in pending)
    return min(leaves, key=lambda b: (SEVERITY.index(b.reason), b.ref))


def _leaf(state: BuildState, ref: PartitionRef, part: PartitionRecord | None) -> Blame:
    status = part.status if part is not None else PartitionStatus.ABSENT
    if part is not None and status is PartitionStatus.BUILDING:
        return Blame(ref, BlameReason.RUNNING, f"running in job run {part.job_run_id}")
    if part is not None and status is PartitionStatus.BACKOFF:
        return Blame(
            ref,
            BlameReason.RETRYING,
            f"job failed ({part.message}); retry scheduled at {format_timestamp(part.retry_at)}",
        )
    if part is not None and status is PartitionStatus.FAILED:
        return Blame(ref, BlameReason.JOB_FAILED, f"failed: {part.message}")
    if status is PartitionStatus.LIVE:
        return Blame(ref, BlameReason.NOT_HELD, "live")
    route = state.graph.route(ref)
    if route.external is not None:
        return Blame(ref, BlameReason.EXTERNAL, waiting_text(route.external.name, ref))
    if route.upstream is not None:
        return Blame(
            ref, BlameReason.UPSTREAM_GRAPH, f"waiting on upstream graph {route.upstream.name!r}"
        )
    if route.job is not None:
        running = len(state.running_by_job[route.job.name])
        text = (
            f"queued behind {running} running run(s) of job {route.job.name!r} "
            f"(concurrency {route.job.concurrency})"
            if running
            else f"queued for job {route.job.name!r}, not started yet"
        )
        return Blame(ref, BlameReason.QUEUED, text)
    return Blame(ref, BlameReason.UNBUILDABLE, route.problem)


# ---- prediction ----------------------------------------------------------------------
def expected_job_seconds(state: BuildState, job_name: str) -> float:
    """Median of recorded successful runs; else the job's hint; else the default."""
    recorded = state.job_durations.get(job_name)
    if recorded:
        return float(statistics.median(recorded))
    hint = state.graph.job(job_name).expected_seconds
    return hint if hint > 0 else DEFAULT_JOB_SECONDS


def partitions_ahead(state: BuildState, want_id: WantId) -> list[PartitionRef]:
    """The want's partition and, transitively, what it waits on, that is not live."""
    out: list[PartitionRef] = []
    seen: set[PartitionRef] = set()
    stack = [state.wants[want_id].want.partition_ref]
    while stack:
        ref = stack.pop()
        if ref in seen or state.is_live(ref):
            continue
        seen.add(ref)
        out.append(ref)
        part = state.partitions.get(ref)
        if part is not None:
            stack.extend(sorted(part.waiting_on, reverse=True))
    return out


def _remaining(state: BuildState, ref: PartitionRef, now: float) -> AheadItem:
    part = state.partitions.get(ref)
    status = part.status if part is not None else PartitionStatus.ABSENT
    job_name = state.job_of(ref)
    if job_name is None:
        return AheadItem(ref, "", status, 0.0)
    expected = expected_job_seconds(state, job_name)
    if part is not None and status is PartitionStatus.BUILDING and part.job_run_id:
        run = state.runs.get(part.job_run_id)
        if run is not None:
            began = run.started_at or run.queued_at
            expected = max(0.0, expected - max(0.0, now - began))
    elif part is not None and status is PartitionStatus.BACKOFF:
        expected += max(0.0, part.retry_at - now)
    return AheadItem(ref, job_name, status, expected)


def predict(state: BuildState, want_id: WantId, now: float) -> Prediction:
    """When the want is predicted to be satisfied (see the module docstring)."""
    record = state.wants[want_id]
    ahead = tuple(_remaining(state, ref, now) for ref in partitions_ahead(state, want_id))
    finish = now + sum(item.expected_seconds for item in ahead)
    return Prediction(want_id, record.want.sla_deadline, finish, ahead)


def at_risk(state: BuildState, now: float) -> list[Prediction]:
    """Active wants, not yet past their SLA, predicted to miss it; earliest deadline first.

    Bounded by the wants whose SLA timer is still pending (``state.sla_timers``), not by
    every want ever made; each costs the length of its chain.
    """
    out: list[Prediction] = []
    seen: set[WantId] = set()
    for _, want_id in state.sla_timers:
        if want_id in seen:
            continue
        seen.add(want_id)
        record = state.wants.get(want_id)
        if record is None or not record.active or record.sla_missed:
            continue
        prediction = predict(state, want_id, now)
        if prediction.at_risk:
            out.append(prediction)
    out.sort(key=lambda p: (p.deadline, p.want_id))
    return out
