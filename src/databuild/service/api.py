"""The routes of ``/api/v1``: HTTP handlers over the operations (writes, long-polls) and
the views (reads).

Each handler declares its HTTP parameters (FastAPI validates them and documents them in the
OpenAPI document), calls one operation or one view, and returns a schema model. Errors are
DataBuildErrors, turned into 4xx JSON by the app's handlers. Must not hold logic that the
operations, the views or the core already have.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from databuild.codec import event_to_dict
from databuild.core.errors import InvalidInput, NotFound
from databuild.core.events import Event
from databuild.core.federation import PatternSet
from databuild.core.lineage import observed_edges
from databuild.core.model import JobRunId
from databuild.core.refs import parse_ref
from databuild.executors.protocol import LOG_FILE_NAME
from databuild.service import operations, schemas, views
from databuild.service.host import GraphHost
from databuild.service.operations import MAX_WAIT_SECONDS

router = APIRouter(prefix="/api/v1")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse},
    404: {"model": schemas.ErrorResponse},
    422: {"model": schemas.ErrorResponse},
}
# For routes whose success is not JSON: FastAPI would document their errors under the
# route's own media type, but errors are always JSON.
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, description in ((404, "Not Found"), (422, "Unprocessable Entity"))
}
MAX_LOG_CHUNK = 1 << 20
# the default answer: the whole bounded log (the executor keeps about 2 MiB of a run's output)
MAX_LOG_WHOLE = 64 << 20
KEEPALIVE_ENV = "DATABUILD_SSE_KEEPALIVE_SECONDS"
# a client that reads nothing for this long is dropped rather than let its writes pile up
_SEND_TIMEOUT = 30.0
_ENCODED_KEPT = 20_000  # encoded events kept per host for the stream's followers
MAX_INT64 = (1 << 63) - 1  # sequences and offsets: beyond it SQLite and seek() overflow


def host_of(request: Request) -> GraphHost:
    host: GraphHost = request.app.state.host
    return host


@router.post("/wants", response_model=schemas.CreateWantsResponse, responses=_ERRORS)
async def create_wants(
    body: schemas.CreateWantsRequest, request: Request
) -> schemas.CreateWantsResponse:
    """Create wants (idempotent: the same request returns the same want ids)."""
    return await operations.create_wants(host_of(request), body)


@router.get("/wants", response_model=schemas.ListWantsResponse, responses=_ERRORS)
async def list_wants(
    request: Request,
    status: Annotated[
        str | None, Query(max_length=200, description="comma-separated; 'active' for all active")
    ] = None,
    prefix: Annotated[str | None, Query(max_length=512)] = None,
    root_want_id: Annotated[str | None, Query(max_length=64)] = None,
    source: Annotated[str | None, Query(max_length=32)] = None,
    cursor: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=views.MAX_LIMIT)] = views.DEFAULT_LIMIT,
) -> schemas.ListWantsResponse:
    """List wants, oldest first, filtered by status, partition prefix, root want and source."""
    return views.list_wants(
        host_of(request).state,
        status=status,
        prefix=prefix,
        root_want_id=root_want_id,
        source=source,
        cursor=cursor,
        limit=limit,
    )


@router.get("/wants/{want_id}", response_model=schemas.WantDetail, responses=_ERRORS)
async def get_want(want_id: str, request: Request) -> schemas.WantDetail:
    """One want: status, timeline of its events, child wants and job runs."""
    return await operations.want_detail(host_of(request), want_id)


@router.delete("/wants/{want_id}", response_model=schemas.WantView, responses=_ERRORS)
async def cancel_want(want_id: str, request: Request) -> schemas.WantView:
    """Cancel a want: work that only it needed stops; work other wants need goes on."""
    return await operations.cancel_want(host_of(request), want_id)


@router.get("/backfills/{backfill_id}", response_model=schemas.BackfillStatus, responses=_ERRORS)
async def get_backfill(backfill_id: str, request: Request) -> schemas.BackfillStatus:
    """A backfill's progress: its wants counted by status."""
    return operations.backfill_status(host_of(request), backfill_id)


@router.get("/partitions", response_model=schemas.ListPartitionsResponse, responses=_ERRORS)
async def list_partitions(
    request: Request,
    ref: Annotated[list[str], Query(max_length=1000, description="exactly these partitions")] = [],  # noqa: B006
    prefix: Annotated[str | None, Query(max_length=512)] = None,
    status: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str, Query(max_length=600)] = "",
    limit: Annotated[int, Query(ge=1, le=views.MAX_LIMIT)] = views.DEFAULT_LIMIT,
    stale: Annotated[
        bool, Query(description="only live partitions built by another job version")
    ] = False,
) -> schemas.ListPartitionsResponse:
    """Partitions and their state; with ``ref=`` (repeatable), exactly those (jobs use this)."""
    refs = operations.valid_refs(ref, "ref")
    return views.list_partitions(
        host_of(request).state,
        refs=refs,
        prefix=prefix,
        status=status,
        cursor=cursor,
        limit=limit,
        stale=stale,
    )


@router.post("/partitions/live", response_model=schemas.PartitionsLiveResponse, responses=_ERRORS)
async def partitions_live(
    body: schemas.PartitionsLiveRequest, request: Request
) -> schemas.PartitionsLiveResponse:
    """Declare external partitions live (idempotent): the wants waiting on them go on."""
    return await operations.partitions_live(host_of(request), body)


@router.post(
    "/partitions/invalidate",
    response_model=schemas.InvalidatePartitionsResponse,
    responses=_ERRORS,
)
async def invalidate_partitions(
    body: schemas.InvalidatePartitionsRequest, request: Request
) -> schemas.InvalidatePartitionsResponse:
    """Invalidate live partitions that turned out wrong (with ``downstream``: and every
    partition built from them), or a job's partitions built by an older version; the
    client wants on them are reopened and rebuilt. Recorded with who asked and why."""
    return await operations.invalidate_partitions(host_of(request), body, "api")


@router.get("/partitions/{ref:path}", response_model=schemas.PartitionView, responses=_ERRORS)
async def get_partition(ref: str, request: Request) -> schemas.PartitionView:
    """One partition (the ref may contain '/')."""
    valid = parse_ref(ref)
    state = host_of(request).state
    found = views.list_partitions(state, refs=[valid], prefix=None, status=None, cursor="", limit=1)
    return found.partitions[0]


@router.get("/job-runs", response_model=schemas.ListJobRunsResponse, responses=_ERRORS)
async def list_job_runs(
    request: Request,
    job: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=views.MAX_LIMIT)] = views.DEFAULT_LIMIT,
) -> schemas.ListJobRunsResponse:
    """Job runs, newest first."""
    return views.list_job_runs(
        host_of(request).state, job=job, status=status, cursor=cursor, limit=limit
    )


@router.get("/job-runs/{job_run_id}", response_model=schemas.JobRunView, responses=_ERRORS)
async def get_job_run(job_run_id: str, request: Request) -> schemas.JobRunView:
    run = host_of(request).state.runs.get(JobRunId(job_run_id))
    if run is None:
        raise NotFound(f"no job run with id {job_run_id!r}")
    return views.job_run_view(run)


@router.get(
    "/job-runs/{job_run_id}/log",
    response_class=PlainTextResponse,
    responses={**_JSON_ERRORS, 200: {"content": {"text/plain": {}}}},
)
async def get_job_run_log(
    job_run_id: str,
    request: Request,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_LOG_CHUNK, description="bytes; default: the whole log from offset"),
    ] = None,
) -> PlainTextResponse:
    """The run's captured stdout+stderr (bounded), from ``offset`` bytes: the whole log by
    default, else ``limit`` bytes. ``X-Log-More: true`` says more follows ``X-Log-Next-Offset``."""
    host = host_of(request)
    if job_run_id not in host.state.runs:
        raise NotFound(f"no job run with id {job_run_id!r}")
    path = host.config.runs_dir / job_run_id / LOG_FILE_NAME
    data, size = await asyncio.to_thread(_read_chunk, path, offset, limit or MAX_LOG_WHOLE)
    next_offset = offset + len(data)
    return PlainTextResponse(
        data.decode("utf-8", errors="replace"),
        headers={
            "X-Log-Next-Offset": str(next_offset),
            "X-Log-Size": str(size),
            "X-Log-More": "true" if next_offset < size else "false",
        },
    )


def _read_chunk(path: object, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to ``limit`` bytes from ``offset`` and the log's size; a chunk that stops before
    the end is cut back to a character boundary, so that pages decode as the whole would."""
    try:
        with open(path, "rb") as handle:  # type: ignore[call-overload]
            size = handle.seek(0, 2)
            handle.seek(offset)
            data: bytes = handle.read(limit)
    except FileNotFoundError:
        return b"", 0
    if offset + len(data) < size:
        data = data[: _utf8_boundary(data)] or data  # never an empty page before the end
    return data, size


def _utf8_boundary(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 character cut at its end (at most 3 bytes)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its character complete?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)


@router.get("/events", response_model=schemas.EventsResponse, responses=_ERRORS)
async def list_events(
    request: Request,
    after: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="return events with a larger sequence")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=views.MAX_LIMIT)] = views.DEFAULT_LIMIT,
    types: Annotated[
        str | None, Query(max_length=1000, description="comma-separated event types")
    ] = None,
    partition: Annotated[
        list[str],
        Query(
            max_length=operations.MAX_PATTERNS,
            description="a partition pattern; repeat it for several (any one matches)",
        ),
    ] = [],  # noqa: B006
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="long-poll seconds")] = 0,
) -> schemas.EventsResponse:
    """The event stream other graphs follow: events after a sequence, filtered; long-poll
    with ``wait``. ``last_sequence`` is where to resume (it may pass filtered-out events)."""
    return await operations.events_page(
        host_of(request), after=after, limit=limit, types=types, partition=partition, wait=wait
    )


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    types: Annotated[str | None, Query(max_length=1000)] = None,
    partition: Annotated[
        list[str],
        Query(
            max_length=operations.MAX_PATTERNS,
            description="a partition pattern; repeat it for several (any one matches)",
        ),
    ] = [],  # noqa: B006
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventSourceResponse:
    """Server-Sent Events; resumable with the Last-Event-ID header (nothing lost or
    repeated). A keep-alive comment goes out every 15 s whatever the filter; a client that
    leaves is noticed at once (no more writes to its socket)."""
    host = host_of(request)
    wanted, pattern = operations.event_filter(types, partition)
    start = after
    if last_event_id:
        if not last_event_id.isdigit() or int(last_event_id) > MAX_INT64:
            raise InvalidInput("Last-Event-ID must be an event sequence number")
        start = int(last_event_id)
    return EventSourceResponse(
        stream(host, start, wanted, pattern),
        ping=keepalive_seconds(),
        ping_message_factory=_keepalive,
        send_timeout=_SEND_TIMEOUT,
    )


def keepalive_seconds() -> float:
    """The keep-alive interval: 15 s, or ``$DATABUILD_SSE_KEEPALIVE_SECONDS`` (tests)."""
    raw = os.environ.get(KEEPALIVE_ENV, "")
    try:
        value = float(raw) if raw else 15.0
    except ValueError:
        value = 15.0
    return value if 0 < value <= 15 else 15.0


def _encoded(host: GraphHost, event: Event) -> bytes:
    """The event as an SSE message, encoded once per host and shared by its followers."""
    cache = host.stream_cache
    found = cache.get(event.sequence)
    if found is None:
        as_dict = event_to_dict(event)
        found = ServerSentEvent(
            data=json.dumps(as_dict, separators=(",", ":")),
            event=str(as_dict["type"]),
            id=str(event.sequence),
        ).encode()
        cache[event.sequence] = found
        if len(cache) > _ENCODED_KEPT:
            del cache[next(iter(cache))]  # the oldest: dicts keep insertion order
    return found


def _keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive")


async def stream(
    host: GraphHost,
    start: int,
    wanted: frozenset[str] | None,
    pattern: PatternSet | None,
) -> AsyncIterator[bytes]:
    """The events after ``start`` that pass the filter, then each new one as it commits.
    Sleeps on the controller's commit signal between commits: an idle stream costs nothing,
    whatever its filter, because the cursor passes the events the filter drops."""
    host.stream_subscriptions += 1
    try:
        cursor = start
        while True:
            events, scanned = await operations.next_events(host, cursor, 500, wanted, pattern)
            if events:  # one write per batch, each event encoded once for all clients
                yield b"".join(_encoded(host, event) for event in events)
            if scanned > cursor:
                cursor = scanned
                continue
            if not host.more_events_may_come:
                return  # read-only host or a stopped controller: no more events will come
            await host.wait_for_events(cursor, 3600.0)
    finally:
        host.stream_subscriptions -= 1


@router.get("/graph", response_model=schemas.GraphView)
async def get_graph(request: Request) -> schemas.GraphView:
    """The graph's jobs, their output patterns, its upstream graphs, the digest of the
    databuild.toml it runs, and the job -> job edges observed in recorded missing inputs."""
    host = host_of(request)
    needs = observed_edges(host.state.observed_needs)
    view = views.graph_view(host.config.graph, host.config.digest, needs)
    for upstream in view.upstreams:
        follower = host.followers.get(upstream.name)
        if follower is not None:
            views.fill_upstream(upstream, follower.status)
    return view
