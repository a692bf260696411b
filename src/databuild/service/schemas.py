"""Pydantic models of the HTTP API: the only place pydantic describes our data.

They mirror the API messages of ``databuild.proto`` field for field (names are the proto
field names; enums travel as short lowercase names) so the served OpenAPI document is the
proto contract in JSON. Used by the routers for validation and response models; no logic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WantSourceName = Literal["cli", "api", "dashboard", "scheduled", "derived", "upstream_graph"]
WantStatusName = Literal[
    "pending",
    "building",
    "waiting",
    "retrying",
    "satisfied",
    "failed",
    "upstream_failed",
    "expired",
    "canceled",
]
PartitionStatusName = Literal["absent", "building", "waiting", "backoff", "live", "failed"]
JobRunStatusName = Literal["queued", "running", "succeeded", "failed", "missing_deps", "canceled"]
FailureKindName = Literal[
    "", "exit_nonzero", "timeout", "spawn_error", "bad_result", "permanent", "lost", "no_resources"
]

MAX_REFS_PER_REQUEST = 10_000
MAX_SECONDS = 100 * 365 * 86_400


class CreateWantsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partition_refs: list[str] = Field(default=[], max_length=MAX_REFS_PER_REQUEST)
    data_timestamp: int | None = Field(
        default=None, ge=0, le=4_102_444_800, description="seconds since the epoch (UTC)"
    )
    data_date: str | None = Field(
        default=None, max_length=64, description="YYYY-MM-DD or ISO 8601; instead of data_timestamp"
    )
    ttl_seconds: int = Field(default=0, ge=0, le=MAX_SECONDS)
    sla_seconds: int = Field(default=0, ge=0, le=MAX_SECONDS)
    source: Literal["cli", "api", "dashboard", "scheduled", "upstream_graph"] = "api"
    partition_pattern: str = Field(
        default="", max_length=512, description="a backfill: one want per partition of the range"
    )
    from_date: str | None = Field(default=None, max_length=64, description="YYYY-MM-DD, included")
    to_date: str | None = Field(default=None, max_length=64, description="YYYY-MM-DD, included")
    step: Literal["day", "week", "month"] = "day"


class BackfillStatus(BaseModel):
    """A backfill's progress: its wants (and the wants they caused) counted by status."""

    backfill_id: str
    wants: int  # the backfill's own wants, one per partition
    by_status: dict[str, int]
    derived_wants: int  # wants created for missing inputs on the backfill's behalf
    done: bool  # every one of its wants is terminal


class WantView(BaseModel):
    want_id: str
    root_want_id: str
    parent_want_id: str
    partition_ref: str
    data_timestamp: int
    ttl_seconds: int
    sla_seconds: int
    source: WantSourceName
    status: WantStatusName
    message: str
    created_at: float
    updated_at: float
    finished_at: float
    sla_deadline: float
    expires_at: float
    sla_missed: bool
    waiting_on: list[str]
    job_run_ids: list[str]
    child_want_ids: list[str]


class WantNotice(BaseModel):
    """A create request that named an existing want but asked another SLA or TTL."""

    want_id: str
    partition_ref: str
    field: str = Field(description="sla_seconds or ttl_seconds")
    asked: int
    stands: int
    message: str


class CreateWantsResponse(BaseModel):
    wants: list[WantView]
    notices: list[WantNotice] = Field(
        default_factory=list, description="what the request asked that the existing wants differ in"
    )
    backfill: BackfillStatus | None = Field(
        default=None, description="a backfill request: its id and progress (wants is then empty)"
    )


class ListWantsResponse(BaseModel):
    wants: list[WantView]
    next_cursor: str


class BuildEvent(BaseModel):
    """One BEL event: ``type`` names the payload, found under the key of the same name."""

    model_config = ConfigDict(extra="allow")

    sequence: int
    timestamp: float
    type: str


class MissingDeps(BaseModel):
    partition_ref: str
    missing_refs: list[str]


class JobRunView(BaseModel):
    job_run_id: str
    job_name: str
    partition_refs: list[str]
    want_ids: list[str]
    status: JobRunStatusName
    queued_at: float
    started_at: float
    finished_at: float
    duration_seconds: float
    pid: int
    exit_code: int
    failure_kind: FailureKindName
    message: str
    missing: list[MissingDeps]


class ListJobRunsResponse(BaseModel):
    job_runs: list[JobRunView]
    next_cursor: str


class WantDetail(BaseModel):
    want: WantView
    timeline: list[BuildEvent]
    children: list[WantView]
    job_runs: list[JobRunView]


class PartitionView(BaseModel):
    partition_ref: str
    status: PartitionStatusName
    job_run_id: str
    waiting_on: list[str]
    message: str
    updated_at: float
    failures: int
    retry_at: float
    want_ids: list[str]
    upstream: str
    job_name: str
    job_version: str
    stale: bool


class PartitionsLiveRequest(BaseModel):
    partition_refs: list[str] = Field(min_length=1, max_length=10_000)


class PartitionsLiveResponse(BaseModel):
    partitions: list[PartitionView]


class InvalidatePartitionsRequest(BaseModel):
    """Either ``partition_refs`` (with ``downstream``: and every partition built from them)
    or ``job`` (its live partitions built by an older version than it declares now)."""

    model_config = ConfigDict(extra="forbid")

    partition_refs: list[str] = Field(default_factory=list, max_length=10_000)
    downstream: bool = False
    job: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=2_000)
    requested_by: str = Field(default="", max_length=200)


class InvalidatePartitionsResponse(BaseModel):
    partitions: list[PartitionView]  # every partition invalidated, downstream included
    reopened_want_ids: list[str]  # satisfied client wants reopened: rebuilt now


class ListPartitionsResponse(BaseModel):
    partitions: list[PartitionView]
    next_cursor: str


class EventsResponse(BaseModel):
    events: list[BuildEvent]
    last_sequence: int


class ErrorResponse(BaseModel):
    error: str


class Health(BaseModel):
    status: Literal["starting", "ok", "degraded", "failed"]
    # leader: writes the log; standby: follows a shared log another service writes
    # (reads served here, writes forwarded); reader: a read-only view
    role: Literal["leader", "standby", "reader"] = "leader"
    graph: str
    version: str
    last_sequence: int
    active_wants: int
    running_job_runs: int
    message: str = ""


class Readiness(BaseModel):
    """``GET /readyz``: whether this service should get traffic now."""

    ready: bool
    graph: str
    role: Literal["starting", "leader", "standby", "reader"]
    replayed: bool  # the Build Event Log is replayed into memory
    storage: str  # "ok", or why the Build Event Log is unreachable
    # the leader's advertised URL, as the shared log records it ("" when none is known)
    leader_url: str = ""
    message: str = ""  # why not ready; "" when ready


class JobView(BaseModel):
    name: str
    outputs: list[str]
    command: list[str]
    max_batch: int
    concurrency: int
    timeout_seconds: float
    retries: int


class UpstreamView(BaseModel):
    name: str
    url: str
    partitions: list[str]
    # the follower's state, when this service follows it (``databuild serve``)
    following: bool = False
    connected: bool = False
    cursor: int = Field(default=0, description="the newest upstream event sequence read")
    lag: int = Field(default=0, description="upstream events not yet read, as last seen")
    upstream_graph: str = ""
    last_error: str = ""
    last_error_at: float = 0.0
    reconnects: int = 0
    relists: int = 0
    forwarded_wants: int = Field(default=0, description="wants forwarded, not yet ended")
    transport: str = Field(
        default="", description="sse, or long-poll when the upstream offers no event stream"
    )


class ObservedEdgeView(BaseModel):
    """Runs of ``job`` were found to lack inputs matching ``pattern`` of ``owner``."""

    job: str
    owner_kind: Literal["job", "upstream", "none"]
    owner: str
    pattern: str
    count: int
    first_seen: float
    last_seen: float
    example_ref: str
    observed: bool = True  # learned from recorded missing dependencies, not declared


class GraphView(BaseModel):
    name: str
    jobs: list[JobView]
    upstreams: list[UpstreamView]
    config_digest: str = ""  # sha256 of the databuild.toml the service runs
    observed_edges: list[ObservedEdgeView] = []
