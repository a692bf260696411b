"""The domain values: wants, job specs, the graph, ids and statuses.

Frozen, slotted dataclasses; ids are NewTypes derived from natural keys so that the same
request always names the same want. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

from databuild.core.errors import InvalidInput
from databuild.core.pickling import positional_pickle
from databuild.core.refs import PartitionPattern, PartitionRef

WantId = NewType("WantId", str)
JobRunId = NewType("JobRunId", str)

NO_DEADLINE = float("inf")


class WantSource(StrEnum):
    CLI = "cli"
    API = "api"
    DASHBOARD = "dashboard"
    SCHEDULED = "scheduled"
    DERIVED = "derived"
    UPSTREAM_GRAPH = "upstream_graph"


class WantStatus(StrEnum):
    """Where a want stands. The first four are active; the rest are terminal."""

    PENDING = "pending"  # wanted, waiting for a run slot
    BUILDING = "building"  # a run is building its partition
    WAITING = "waiting"  # its partition waits on missing upstream partitions
    RETRYING = "retrying"  # a run failed; the next attempt is scheduled
    SATISFIED = "satisfied"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    EXPIRED = "expired"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_WANT_STATUSES


TERMINAL_WANT_STATUSES = frozenset(
    {
        WantStatus.SATISFIED,
        WantStatus.FAILED,
        WantStatus.UPSTREAM_FAILED,
        WantStatus.EXPIRED,
        WantStatus.CANCELED,
    }
)


def want_id_for(ref: PartitionRef, data_timestamp: int, source: WantSource) -> WantId:
    """hash(partition_ref, data_timestamp, source): asking twice names one want."""
    key = f"{ref}\x1f{data_timestamp}\x1f{source.value}".encode()
    return WantId("w" + hashlib.sha256(key).hexdigest()[:23])


def job_run_id_for(sequence: int) -> JobRunId:
    return JobRunId(f"r{sequence:08d}")


@positional_pickle
@dataclass(frozen=True, slots=True)
class Want:
    want_id: WantId
    root_want_id: WantId
    parent_want_id: WantId | None
    partition_ref: PartitionRef
    data_timestamp: int  # seconds since the epoch, UTC: the business time of the data
    ttl_seconds: int  # 0 = never expires; measured from data_timestamp
    sla_seconds: int  # 0 = no SLA; measured from data_timestamp
    source: WantSource

    @property
    def sla_deadline(self) -> float:
        return float(self.data_timestamp + self.sla_seconds) if self.sla_seconds else NO_DEADLINE

    @property
    def expires_at(self) -> float:
        return float(self.data_timestamp + self.ttl_seconds) if self.ttl_seconds else NO_DEADLINE


@dataclass(frozen=True, slots=True)
class WantRequest:
    """What a client asks for; the core turns it into a Want (or reopens an old one)."""

    partition_ref: PartitionRef
    data_timestamp: int
    source: WantSource
    ttl_seconds: int = 0
    sla_seconds: int = 0
    root_want_id: WantId | None = None  # a backfill's id: the set this want belongs to

    def __post_init__(self) -> None:
        if self.data_timestamp < 0:
            raise InvalidInput("data_timestamp must not be negative")
        if self.ttl_seconds < 0:
            raise InvalidInput("ttl_seconds must not be negative")
        if self.sla_seconds < 0:
            raise InvalidInput("sla_seconds must not be negative")

    @property
    def want_id(self) -> WantId:
        return want_id_for(self.partition_ref, self.data_timestamp, self.source)


@dataclass(frozen=True, slots=True)
class RunResources:
    """What one run of a job needs from a cluster executor (``[jobs.NAME.resources]``).

    The local process pool ignores it; the Ray executor asks Ray for exactly this, so a run
    waits for a node that has it free. ``memory_bytes`` 0 reserves no memory."""

    num_cpus: float = 1.0
    memory_bytes: int = 0
    custom: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as the graph sees it: what it builds and how it likes to be run."""

    name: str
    outputs: tuple[PartitionPattern, ...]
    command: tuple[str, ...]
    max_batch: int = 1
    concurrency: int = 1
    timeout_seconds: float = 3600.0
    retries: int = 2
    retry_backoff_seconds: float = 1.0
    retry_backoff_max_seconds: float = 300.0
    env: tuple[tuple[str, str], ...] = ()
    expected_seconds: float = 0.0  # a hint for SLA prediction before runs are recorded
    warm: bool = False  # a Python script run in a reused interpreter (same job protocol)
    version: str = ""  # recorded on each partition a run builds; "" none declared
    resources: RunResources = RunResources()
    # input hints: patterns over the outputs' fields naming inputs wanted before a run
    # (``core.hints``); advisory, the run's discovery stays the source of truth
    inputs: tuple[PartitionPattern, ...] = ()

    def builds(self, ref: str) -> bool:
        return any(p.match(ref) is not None for p in self.outputs)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Another graph that provides partitions matching ``partitions``."""

    name: str
    url: str
    partitions: tuple[PartitionPattern, ...]
    token_env: str = ""  # the environment variable holding its bearer token ("" = none)

    def provides(self, ref: str) -> bool:
        return any(p.match(ref) is not None for p in self.partitions)


@dataclass(frozen=True, slots=True)
class ExternalSpec:
    """Partitions no job builds (files a vendor lands, another team's tables): wants on them
    wait until they are declared live, by hand or by the optional ``check`` command, which
    the service runs on the refs waiting (``runtime.externals``)."""

    name: str
    partitions: tuple[PartitionPattern, ...]
    check: tuple[str, ...] = ()  # argv; empty: only `databuild partition live` makes them live
    check_interval_seconds: float = 60.0
    check_interval_max_seconds: float = 3600.0
    check_timeout_seconds: float = 60.0

    def provides(self, ref: str) -> bool:
        return any(p.match(ref) is not None for p in self.partitions)


@dataclass(frozen=True, slots=True)
class Route:
    """Who makes a partition: a local job, an upstream graph, the outside world (an
    external), or nobody (with why)."""

    job: JobSpec | None = None
    upstream: UpstreamSpec | None = None
    problem: str = ""
    external: ExternalSpec | None = None


@dataclass(frozen=True, slots=True)
class GraphSpec:
    name: str
    jobs: tuple[JobSpec, ...]
    upstreams: tuple[UpstreamSpec, ...] = ()
    externals: tuple[ExternalSpec, ...] = ()
    _by_name: dict[str, JobSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [j.name for j in self.jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInput(f"job names must be unique; repeated: {', '.join(duplicates)}")
        self._by_name.update({j.name: j for j in self.jobs})

    def job(self, name: str) -> JobSpec:
        return self._by_name[name]

    def route(self, ref: str) -> Route:
        jobs = [j for j in self.jobs if j.builds(ref)]
        upstreams = [u for u in self.upstreams if u.provides(ref)]
        externals = [x for x in self.externals if x.provides(ref)]
        if len(jobs) + len(upstreams) + len(externals) > 1:
            owners = (
                [f"job {j.name!r}" for j in jobs]
                + [f"upstream {u.name!r}" for u in upstreams]
                + [f"external {x.name!r}" for x in externals]
            )
            return Route(
                problem=f"partition {ref!r} is ambiguous: {' and '.join(owners)} all match it"
            )
        if jobs:
            return Route(job=jobs[0])
        if upstreams:
            return Route(upstream=upstreams[0])
        if externals:
            return Route(external=externals[0])
        patterns = ", ".join(p.template for j in self.jobs for p in j.outputs) or "none"
        return Route(
            problem=f"no job builds partition {ref!r}, no upstream graph provides it and "
            f"it is declared no external (job output patterns: {patterns})"
        )
