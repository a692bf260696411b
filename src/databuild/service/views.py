"""Read queries shared by the API routers and the CLI: state -> API views.

Everything here reads the folded ``BuildState`` (the read model) and returns the pydantic
views of ``schemas``. Filters and cursor pagination live here once, so every router is
thin. Must not change state or touch the log (the timeline's events are passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from databuild.core import sla, versions
from databuild.core.data_time import format_timestamp
from databuild.core.errors import InvalidInput
from databuild.core.history import RecordFilter, RecordMap
from databuild.core.lineage import ObservedNeed
from databuild.core.model import NO_DEADLINE, GraphSpec, Want, WantRequest
from databuild.core.refs import PartitionRef
from databuild.core.state import BuildState, JobRunRecord, PartitionRecord, WantRecord
from databuild.service import schemas

if TYPE_CHECKING:
    from databuild.runtime.upstreams import UpstreamStatus

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def want_view(state: BuildState, record: WantRecord) -> schemas.WantView:
    want = record.want
    part = state.partitions.get(want.partition_ref)
    waiting: list[str] = sorted(part.waiting_on) if part is not None and record.active else []
    message = record.message
    if record.active and not message:
        # held up by a partition from outside the graph: say which (``core.externals``)
        held = sla.blame(state, want.want_id)
        if held.reason is sla.BlameReason.EXTERNAL:
            message = held.text
    return schemas.WantView(
        want_id=want.want_id,
        root_want_id=want.root_want_id,
        parent_want_id=want.parent_want_id or "",
        partition_ref=want.partition_ref,
        data_timestamp=want.data_timestamp,
        ttl_seconds=want.ttl_seconds,
        sla_seconds=want.sla_seconds,
        source=want.source.value,
        status=record.status.value,
        message=message,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
        sla_deadline=0.0 if want.sla_deadline == NO_DEADLINE else want.sla_deadline,
        expires_at=0.0 if want.expires_at == NO_DEADLINE else want.expires_at,
        sla_missed=record.sla_missed,
        waiting_on=waiting,
        job_run_ids=list(record.job_run_ids),
        child_want_ids=list(record.children),
    )


def duration_text(seconds: int) -> str:
    """``30h`` -> ``1d6h``: how the CLI's ``--sla``/``--ttl`` would write it; 0 is ``none``."""
    if seconds <= 0:
        return "none"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def reask_notices(existing: Want, request: WantRequest) -> list[schemas.WantNotice]:
    """What a create request asked that differs from the want it names, which exists:
    the want's SLA and TTL are those it was created with (the first stands)."""
    notices = []
    for name, label, asked, stands, deadline in (
        ("sla_seconds", "SLA", request.sla_seconds, existing.sla_seconds, existing.sla_deadline),
        ("ttl_seconds", "TTL", request.ttl_seconds, existing.ttl_seconds, existing.expires_at),
    ):
        if asked == stands:
            continue
        until = "" if deadline == NO_DEADLINE else f" ({format_timestamp(deadline)})"
        notices.append(
            schemas.WantNotice(
                want_id=existing.want_id,
                partition_ref=existing.partition_ref,
                field=name,
                asked=asked,
                stands=stands,
                message=(
                    f"want {existing.want_id} for {existing.partition_ref} already exists with "
                    f"{label} {duration_text(stands)}{until}; you asked {duration_text(asked)}: "
                    "the first stands (a want keeps the SLA and TTL it was created with)"
                ),
            )
        )
    return notices


def partition_view(state: BuildState, part: PartitionRecord) -> schemas.PartitionView:
    return schemas.PartitionView(
        partition_ref=part.ref,
        status=part.status.value,
        job_run_id=part.job_run_id or "",
        waiting_on=sorted(part.waiting_on),
        message=part.message,
        updated_at=part.updated_at,
        failures=part.failures,
        retry_at=part.retry_at,
        want_ids=sorted(part.active_wants),
        upstream=part.upstream,
        job_name=state.job_of(part.ref) or "",
        job_version=part.job_version,
        stale=versions.is_stale(state, part),
    )


def job_run_view(run: JobRunRecord) -> schemas.JobRunView:
    return schemas.JobRunView(
        job_run_id=run.job_run_id,
        job_name=run.job_name,
        partition_refs=list(run.partition_refs),
        want_ids=list(run.want_ids),
        status=run.status.value,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=run.duration_seconds,
        pid=run.pid,
        exit_code=run.exit_code,
        failure_kind=run.failure_kind.value if run.failure_kind else "",
        message=run.message,
        missing=[
            schemas.MissingDeps(partition_ref=m.partition_ref, missing_refs=list(m.missing_refs))
            for m in run.missing
        ],
    )


def _page(items: Iterable[tuple[str, T]], cursor: str, limit: int) -> tuple[list[T], str]:
    """Items are (key, value) in a stable order; the cursor is the last key returned."""
    if limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    out: list[T] = []
    started = cursor == ""
    last = ""
    for key, value in items:
        if not started:
            started = key == cursor
            continue
        if len(out) == limit:
            return out, last
        out.append(value)
        last = key
    if not started:
        raise InvalidInput(f"cursor {cursor!r} is not a cursor this service gave out")
    return out, ""


def list_wants(
    state: BuildState,
    *,
    status: str | None,
    prefix: str | None,
    root_want_id: str | None,
    source: str | None,
    cursor: str,
    limit: int,
) -> schemas.ListWantsResponse:
    statuses: frozenset[str] | None = None
    if status:
        statuses = frozenset(status.split(","))
        if "active" in statuses:
            statuses |= {"pending", "building", "waiting", "retrying"}
    where = RecordFilter(
        statuses=statuses, prefix=prefix or None, root=root_want_id or None, tag=source or None
    )
    page, next_cursor = _scan_page(state.wants, where, cursor, limit, descending=False)
    return schemas.ListWantsResponse(
        wants=[want_view(state, r) for r in page], next_cursor=next_cursor
    )


def _scan_page(
    table: RecordMap[Any, T], where: RecordFilter, cursor: str, limit: int, *, descending: bool
) -> tuple[list[T], str]:
    """One page of a table's records matching ``where``; the cursor is the last key given."""
    if limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if cursor and cursor not in table:
        raise InvalidInput(f"cursor {cursor!r} is not a cursor this service gave out")
    found = list(table.scan(where, after=cursor or None, descending=descending, limit=limit + 1))
    if len(found) <= limit:
        return found, ""
    page = found[:limit]
    return page, table.key_of(page[-1])


def list_partitions(
    state: BuildState,
    *,
    refs: Sequence[str],
    prefix: str | None,
    status: str | None,
    cursor: str,
    limit: int,
    stale: bool = False,
) -> schemas.ListPartitionsResponse:
    if refs:
        views = [
            partition_view(
                state, state.partitions.get(PartitionRef(ref)) or PartitionRecord(PartitionRef(ref))
            )
            for ref in refs
        ]
        return schemas.ListPartitionsResponse(partitions=views, next_cursor="")
    statuses = set(status.split(",")) if status else None
    matching = (
        (p.ref, p)
        for p in state.partitions.values()
        if (prefix is None or p.ref.startswith(prefix))
        and (statuses is None or p.status.value in statuses)
        and (not stale or versions.is_stale(state, p))
    )
    page, next_cursor = _page(matching, cursor, limit)
    return schemas.ListPartitionsResponse(
        partitions=[partition_view(state, p) for p in page], next_cursor=next_cursor
    )


def list_job_runs(
    state: BuildState, *, job: str | None, status: str | None, cursor: str, limit: int
) -> schemas.ListJobRunsResponse:
    statuses = frozenset(status.split(",")) if status else None
    where = RecordFilter(statuses=statuses, tag=job)
    page, next_cursor = _scan_page(state.runs, where, cursor, limit, descending=True)
    return schemas.ListJobRunsResponse(
        job_runs=[job_run_view(r) for r in page], next_cursor=next_cursor
    )


def graph_view(
    graph: GraphSpec, config_digest: str = "", needs: Iterable[ObservedNeed] = ()
) -> schemas.GraphView:
    return schemas.GraphView(
        name=graph.name,
        config_digest=config_digest,
        observed_edges=[
            schemas.ObservedEdgeView(
                job=n.key.job,
                owner_kind=n.key.owner_kind.value,
                owner=n.key.owner,
                pattern=n.key.pattern,
                count=n.count,
                first_seen=n.first_seen,
                last_seen=n.last_seen,
                example_ref=n.example_ref,
            )
            for n in needs
        ],
        jobs=[
            schemas.JobView(
                name=j.name,
                outputs=[p.template for p in j.outputs],
                command=list(j.command),
                max_batch=j.max_batch,
                concurrency=j.concurrency,
                timeout_seconds=j.timeout_seconds,
                retries=j.retries,
            )
            for j in graph.jobs
        ],
        upstreams=[
            schemas.UpstreamView(
                name=u.name, url=u.url, partitions=[p.template for p in u.partitions]
            )
            for u in graph.upstreams
        ],
    )


def fill_upstream(view: schemas.UpstreamView, status: UpstreamStatus) -> None:
    """The follower's state into the graph view of its upstream."""
    view.following = True
    view.connected = status.connected
    view.cursor = status.cursor
    view.lag = status.lag
    view.upstream_graph = status.upstream_graph
    view.last_error = status.last_error
    view.last_error_at = status.last_error_at
    view.reconnects = status.reconnects
    view.relists = status.relists
    view.transport = status.transport
    view.forwarded_wants = sum(
        1
        for f in status.forwarded.values()
        if f.status not in ("satisfied", "failed", "upstream_failed", "expired", "canceled")
    )
