"""Every fact the Build Event Log records, as frozen dataclasses.

Field names are the proto field names in ``databuild.proto`` (the schema of record); the
codec converts between the two. An ``Event`` is a payload plus the envelope the log gives
it (a global sequence number and the time it was appended). Pure data; no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from databuild.core.model import JobRunId, Want, WantId
from databuild.core.pickling import positional_pickle
from databuild.core.refs import PartitionRef


class FailureKind(StrEnum):
    """Why a job run failed; decides whether it is retried."""

    EXIT_NONZERO = "exit_nonzero"  # retryable
    TIMEOUT = "timeout"  # retryable
    SPAWN_ERROR = "spawn_error"  # permanent: the command could not be started
    BAD_RESULT = "bad_result"  # permanent: the job's structured result was malformed
    PERMANENT = "permanent"  # permanent: the job said so
    LOST = "lost"  # the service stopped while it ran; retried at once, not counted
    # retryable: the service ran out of file descriptors, processes or memory to start it
    NO_RESOURCES = "no_resources"

    @property
    def retryable(self) -> bool:
        return self in (
            FailureKind.EXIT_NONZERO,
            FailureKind.TIMEOUT,
            FailureKind.LOST,
            FailureKind.NO_RESOURCES,
        )


class WantFailureReason(StrEnum):
    JOB_FAILED = "job_failed"
    UPSTREAM_FAILED = "upstream_failed"
    UNBUILDABLE = "unbuildable"
    DEPENDENCY_CYCLE = "dependency_cycle"


@dataclass(frozen=True, slots=True)
class WantCreated:
    want: Want


@dataclass(frozen=True, slots=True)
class WantReopened:
    """A failed or canceled want asked for again: it becomes active with fresh retries."""

    want_id: WantId
    parent_want_id: WantId | None


@dataclass(frozen=True, slots=True)
class WantCanceled:
    want_id: WantId
    reason: str


@dataclass(frozen=True, slots=True)
class WantExpired:
    want_id: WantId


@dataclass(frozen=True, slots=True)
class WantSatisfied:
    want_id: WantId
    job_run_id: JobRunId | None  # None: the partition was live already


@dataclass(frozen=True, slots=True)
class WantFailed:
    want_id: WantId
    reason: WantFailureReason
    message: str
    upstream_ref: PartitionRef | None = None


@dataclass(frozen=True, slots=True)
class SlaMissed:
    want_id: WantId
    deadline: float
    blame_ref: PartitionRef
    blame: str


@dataclass(frozen=True, slots=True)
class JobRunQueued:
    job_run_id: JobRunId
    job_name: str
    partition_refs: tuple[PartitionRef, ...]
    want_ids: tuple[WantId, ...]
    job_version: str = ""  # the job's ``version`` in the config the run was dispatched under


@dataclass(frozen=True, slots=True)
class JobRunStarted:
    job_run_id: JobRunId
    pid: int
    started_at: float = 0.0  # when the service learned of the start; 0: the event's time


@dataclass(frozen=True, slots=True)
class JobRunSucceeded:
    job_run_id: JobRunId
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class JobRunFailed:
    job_run_id: JobRunId
    kind: FailureKind
    message: str
    exit_code: int
    duration_seconds: float
    retry_at: float  # 0: no retry; the partitions fail


@positional_pickle
@dataclass(frozen=True, slots=True)
class MissingDeps:
    """One output partition and the inputs it lacks."""

    partition_ref: PartitionRef
    missing_refs: tuple[PartitionRef, ...]


@dataclass(frozen=True, slots=True)
class JobRunMissingDeps:
    job_run_id: JobRunId
    missing: tuple[MissingDeps, ...]
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class JobRunCanceled:
    job_run_id: JobRunId
    reason: str


@dataclass(frozen=True, slots=True)
class PartitionBuilding:
    partition_ref: PartitionRef
    job_run_id: JobRunId


@dataclass(frozen=True, slots=True)
class PartitionLive:
    partition_ref: PartitionRef
    job_run_id: JobRunId | None  # None: made live by an upstream graph or as an external
    upstream: str = ""
    external: str = ""  # the external's name, when declared live (by hand or its check)
    job_version: str = ""  # the version of the job whose run built it ("" none declared)
    # the upstream's event sequence it was learned from: the follower's durable cursor
    upstream_sequence: int = 0


@dataclass(frozen=True, slots=True)
class PartitionFailed:
    """``retry_at`` 0: the partition failed for good (its wants fail next). Otherwise one
    output of a run failed on its own, retryably (a per-output ``failed`` entry of the job's
    result), and it is in backoff until then; the run's other outputs go their own way."""

    partition_ref: PartitionRef
    job_run_id: JobRunId | None
    message: str
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PartitionWaiting:
    """Before dispatching ``partition_ref``, the reconciler found inputs its job's ``inputs``
    hints name not live: the partition waits on them (child wants ask for them) as if a run
    had reported them missing, and the job runs once they are live. With no ``waiting_on``,
    the wait is released: a run's report closed a cycle through it, so the partition goes
    to its job without waiting (hints are advisory; its discovery decides)."""

    partition_ref: PartitionRef
    job_name: str
    waiting_on: tuple[PartitionRef, ...]


@dataclass(frozen=True, slots=True)
class PartitionsInvalidated:
    """Live partitions that turned out wrong become absent again (``databuild partition
    invalidate``): not live to any job or want, rebuilt when wanted (the satisfied wants
    this event names are reopened in the same step). ``partition_refs`` is the whole set
    decided, the downstream partitions included when asked for; ``requested_by`` and
    ``reason`` say who and why."""

    partition_refs: tuple[PartitionRef, ...]
    reason: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    """The service applied a new configuration; new runs use it (in-flight runs finish)."""

    config_digest: str
    jobs_added: tuple[str, ...]
    jobs_changed: tuple[str, ...]
    jobs_removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClockStepped:
    """The wall clock stepped forward by ``seconds`` more than the time that passed: retry
    back-offs still waiting move later by as much (a back-off's length is the point); SLA
    deadlines and TTLs stay, being wall-clock facts."""

    seconds: float


EventPayload = (
    WantCreated
    | WantReopened
    | WantCanceled
    | WantExpired
    | WantSatisfied
    | WantFailed
    | SlaMissed
    | JobRunQueued
    | JobRunStarted
    | JobRunSucceeded
    | JobRunFailed
    | JobRunMissingDeps
    | JobRunCanceled
    | PartitionBuilding
    | PartitionLive
    | PartitionFailed
    | PartitionWaiting
    | PartitionsInvalidated
    | ConfigReloaded
    | ClockStepped
)

PAYLOAD_TYPES: tuple[type[EventPayload], ...] = (
    WantCreated,
    WantReopened,
    WantCanceled,
    WantExpired,
    WantSatisfied,
    WantFailed,
    SlaMissed,
    JobRunQueued,
    JobRunStarted,
    JobRunSucceeded,
    JobRunFailed,
    JobRunMissingDeps,
    JobRunCanceled,
    PartitionBuilding,
    PartitionLive,
    PartitionFailed,
    PartitionWaiting,
    PartitionsInvalidated,
    ConfigReloaded,
    ClockStepped,
)


def event_type_name(payload: EventPayload) -> str:
    """snake_case name of a payload type, as used in filters and the proto oneof."""
    return _SNAKE[type(payload)]


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


_SNAKE: dict[type, str] = {t: _snake(t.__name__) for t in PAYLOAD_TYPES}
EVENT_TYPE_NAMES: frozenset[str] = frozenset(_SNAKE.values())


def partition_refs_of(payload: EventPayload) -> tuple[PartitionRef, ...]:
    """The partitions an event is about (for filtering streams by partition pattern)."""
    if isinstance(payload, WantCreated):
        return (payload.want.partition_ref,)
    if isinstance(payload, PartitionBuilding | PartitionLive | PartitionFailed | PartitionWaiting):
        return (payload.partition_ref,)
    if isinstance(payload, JobRunQueued):
        return payload.partition_refs
    if isinstance(payload, JobRunMissingDeps):
        return tuple(m.partition_ref for m in payload.missing)
    if isinstance(payload, PartitionsInvalidated):
        return payload.partition_refs
    return ()


@dataclass(frozen=True, slots=True)
class Event:
    """A payload as recorded: ``sequence`` is global and gap-free per log, from 1."""

    sequence: int
    timestamp: float
    payload: EventPayload
