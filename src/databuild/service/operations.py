"""The service's operations, whatever carries the request: HTTP or the CLI in process.

The FastAPI routes (``api``, ``app``) and the job gateway (``gateway``) call these, and so
does ``databuild build`` when it runs the graph host in its own process (no HTTP between
the command and its own service). Each takes the graph host and validated arguments, calls
one controller method or one view, and returns a schema model; errors are DataBuildErrors.
Input is checked here (refs through ``parse_ref``, with the index of the bad one), so every
transport answers the same. Must not parse HTTP nor hold logic that the core or the views
already have.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence

from databuild import __version__
from databuild.codec import event_to_dict
from databuild.core import backfill
from databuild.core.data_time import default_data_timestamp, format_timestamp, parse_data_date
from databuild.core.errors import InvalidInput, NotFound, ServiceError
from databuild.core.events import EVENT_TYPE_NAMES, Event, event_type_name
from databuild.core.federation import PatternSet
from databuild.core.history import RecordFilter
from databuild.core.model import WantId, WantRequest, WantSource, WantStatus
from databuild.core.refs import PartitionPattern, PartitionRef, parse_ref
from databuild.core.state import BuildState
from databuild.runtime.controller import Controller, Invalidation
from databuild.service import schemas, views
from databuild.service.host import GraphHost

MAX_WAIT_SECONDS = 60.0


def controller_of(host: GraphHost) -> Controller:
    controller = host.controller
    if controller is None and host.role == "standby":
        raise ServiceError(
            "this service is a standby of the shared Build Event Log and no leader is known "
            "to forward the change to; try again in a few seconds"
        )
    if controller is None:
        raise ServiceError(
            "this is a read-only view of the graph; start `databuild serve` to make changes"
        )
    return controller


async def create_wants(
    host: GraphHost, body: schemas.CreateWantsRequest
) -> schemas.CreateWantsResponse:
    """Create wants (idempotent: the same request returns the same want ids). A request for
    a want that exists with another SLA or TTL is answered with a notice naming what stands;
    one for a new want that would expire at once is refused, and nothing is created."""
    controller = controller_of(host)
    now = host.clock.now()
    if body.partition_pattern:
        return await _create_backfill(host, controller, body, now)
    if body.from_date is not None or body.to_date is not None:
        raise InvalidInput("from_date and to_date go with partition_pattern (a backfill)")
    if not body.partition_refs:
        raise InvalidInput("give partition_refs (at least one) or a partition_pattern with a range")
    if body.data_timestamp is not None and body.data_date:
        raise InvalidInput("give data_timestamp or data_date, not both")
    explicit = parse_data_date(body.data_date) if body.data_date else body.data_timestamp
    requests = []
    for index, raw in enumerate(body.partition_refs):
        try:
            ref = parse_ref(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"partition_refs[{index}]: {exc}") from None
        stamp = explicit if explicit is not None else default_data_timestamp(ref, now)
        requests.append(
            WantRequest(ref, stamp, WantSource(body.source), body.ttl_seconds, body.sla_seconds)
        )
    state = controller.state
    existing = {
        r.want_id: state.wants[r.want_id].want for r in requests if r.want_id in state.wants
    }
    for index, request in enumerate(requests):
        if request.want_id not in existing:
            _refuse_expired_at_once(index, request, now, from_ref=explicit is None)
    ids = await controller.create_wants(requests)
    state = controller.state
    notices = [
        notice
        for request in requests
        if request.want_id in existing
        for notice in views.reask_notices(existing[request.want_id], request)
    ]
    return schemas.CreateWantsResponse(
        wants=[views.want_view(state, state.wants[i]) for i in ids], notices=notices
    )


async def _create_backfill(
    host: GraphHost, controller: Controller, body: schemas.CreateWantsRequest, now: float
) -> schemas.CreateWantsResponse:
    """A backfill: one want per partition of the range, each with its own data timestamp,
    all rooted at the backfill id, created in one step (one append to the log)."""
    if body.partition_refs:
        raise InvalidInput("give partition_refs or partition_pattern, not both")
    if body.data_timestamp is not None or body.data_date:
        raise InvalidInput(
            "a backfill gives each want the date of its partition: drop data_timestamp/data_date"
        )
    spec = backfill.parse_backfill(
        body.partition_pattern, body.from_date, body.to_date, body.step, names="from_date"
    )
    requests = backfill.requests(spec, WantSource(body.source), body.ttl_seconds, body.sla_seconds)
    for index, request in enumerate(requests):
        if request.want_id not in controller.state.wants:
            _refuse_expired_at_once(index, request, now, from_ref=True)
    await controller.create_wants(requests)
    return schemas.CreateWantsResponse(wants=[], backfill=backfill_status(host, spec.backfill_id))


def backfill_status(host: GraphHost, backfill_id: str) -> schemas.BackfillStatus:
    """A backfill's wants counted by status, and the wants created on their behalf."""
    counts: Counter[str] = Counter()
    derived = 0
    for record in host.state.wants.scan(RecordFilter(root=backfill_id)):
        if record.want.parent_want_id is None:
            counts[record.status.value] += 1
        else:
            derived += 1
    total = sum(counts.values())
    if not total:
        raise NotFound(f"no backfill with id {backfill_id!r}")
    active = sum(n for status, n in counts.items() if not WantStatus(status).terminal)
    return schemas.BackfillStatus(
        backfill_id=backfill_id,
        wants=total,
        by_status=dict(sorted(counts.items())),
        derived_wants=derived,
        done=active == 0,
    )


def _refuse_expired_at_once(index: int, request: WantRequest, now: float, from_ref: bool) -> None:
    """A TTL counts from the data date: a new want whose data date plus TTL is past would
    expire the moment it is created and never be worked on; say so instead of making it."""
    if not request.ttl_seconds:
        return
    expires_at = request.data_timestamp + request.ttl_seconds
    if expires_at > now:
        return
    date = format_timestamp(request.data_timestamp).removesuffix(" 00:00:00 UTC")
    whence = " (from the ref)" if from_ref else ""
    raise InvalidInput(
        f"partition_refs[{index}] {request.partition_ref}: a TTL of "
        f"{views.duration_text(request.ttl_seconds)} counts from the data date {date}{whence}, "
        f"so this want would have expired at {format_timestamp(expires_at)}, before now "
        f"({format_timestamp(now)}); ask with a TTL of at least "
        f"{math.ceil((now + 1 - request.data_timestamp) / 86400)}d, no TTL, or a later "
        "data date (CLI: --ttl, --data-date; API: ttl_seconds, data_date)"
    )


def want(host: GraphHost, want_id: str) -> schemas.WantView:
    state = host.state
    record = state.wants.get(WantId(want_id))
    if record is None:
        raise NotFound(f"no want with id {want_id!r}")
    return with_upstream_note(host, views.want_view(state, record))


def with_upstream_note(host: GraphHost, view: schemas.WantView) -> schemas.WantView:
    """An active want on an upstream graph's partition says what that graph does with the
    want forwarded to it: ``waiting on upstream graph NAME: want ID STATUS``."""
    if view.status in ("satisfied", "failed", "upstream_failed", "expired", "canceled"):
        return view
    route = host.config.graph.route(view.partition_ref)
    follower = host.followers.get(route.upstream.name) if route.upstream else None
    if follower is not None:
        view.message = follower.note(PartitionRef(view.partition_ref))
    return view


async def want_detail(host: GraphHost, want_id: str) -> schemas.WantDetail:
    """One want: status, timeline of its events, child wants and job runs."""
    state = host.state
    record = state.wants.get(WantId(want_id))
    if record is None:
        raise NotFound(f"no want with id {want_id!r}")
    sequences = list(record.events)
    timeline = await asyncio.to_thread(_read_sequences, host, sequences)
    return schemas.WantDetail(
        want=with_upstream_note(host, views.want_view(state, record)),
        timeline=[schemas.BuildEvent.model_validate(event_to_dict(e)) for e in timeline],
        children=[views.want_view(state, state.wants[c]) for c in record.children],
        job_runs=[views.job_run_view(state.runs[r]) for r in record.job_run_ids if r in state.runs],
    )


def _read_sequences(host: GraphHost, sequences: list[int]) -> list[Event]:
    out: list[Event] = []
    for sequence in sequences:
        out.extend(host.log.read(sequence - 1, 1))
    return out


async def cancel_want(host: GraphHost, want_id: str) -> schemas.WantView:
    """Cancel a want: work that only it needed stops; work other wants need goes on."""
    controller = controller_of(host)
    await controller.cancel_want(WantId(want_id), "canceled through the API")
    state = controller.state
    return views.want_view(state, state.wants[WantId(want_id)])


def valid_refs(raw_refs: Sequence[str], name: str) -> list[PartitionRef]:
    """Each ref parsed; the first bad one named with its index (``ref[3]: ...``)."""
    refs: list[PartitionRef] = []
    for index, raw in enumerate(raw_refs):
        try:
            refs.append(parse_ref(raw))
        except InvalidInput as exc:
            raise InvalidInput(f"{name}[{index}]: {exc}") from None
    return refs


async def partitions_live(
    host: GraphHost, body: schemas.PartitionsLiveRequest
) -> schemas.PartitionsLiveResponse:
    """Declare external partitions live (idempotent); the wants waiting on them are woken
    in the same step. A ref that is not an external's is refused, and none is made live."""
    controller = controller_of(host)
    refs = valid_refs(body.partition_refs, "partition_refs")
    await controller.externals_live(refs)
    state = controller.state
    return schemas.PartitionsLiveResponse(
        partitions=[views.partition_view(state, state.partition(r)) for r in refs]
    )


async def invalidate_partitions(
    host: GraphHost, body: schemas.InvalidatePartitionsRequest, default_actor: str
) -> schemas.InvalidatePartitionsResponse:
    """Invalidate live partitions (and, asked, their downstream), or a job's partitions of
    an older version; the client wants on them are reopened and rebuilt."""
    if bool(body.partition_refs) == bool(body.job):
        raise InvalidInput("give partition_refs or job (exactly one of them)")
    if body.job and body.downstream:
        raise InvalidInput("downstream applies to partition_refs, not to job")
    controller = controller_of(host)
    refs = valid_refs(body.partition_refs, "partition_refs")
    result = await controller.invalidate(
        Invalidation(
            refs=tuple(refs),
            downstream=body.downstream,
            job=body.job,
            reason=body.reason,
            requested_by=body.requested_by or default_actor,
        )
    )
    state = controller.state
    return schemas.InvalidatePartitionsResponse(
        partitions=[views.partition_view(state, state.partition(r)) for r in result.partition_refs],
        reopened_want_ids=list(result.reopened_want_ids),
    )


def partitions_by_ref(host: GraphHost, raw_refs: Sequence[str]) -> schemas.ListPartitionsResponse:
    """Exactly these partitions, in the order asked (the question every job asks)."""
    return views.list_partitions(
        host.state,
        refs=valid_refs(raw_refs, "ref"),
        prefix=None,
        status=None,
        cursor="",
        limit=views.DEFAULT_LIMIT,
    )


def event_filter(
    types: str | None, partition: str | Sequence[str] | None
) -> tuple[frozenset[str] | None, PatternSet | None]:
    """The filter of an event query: its types, and its partition pattern(s) (given more
    than once, an event matches when it is about a partition one of them matches)."""
    wanted = None
    if types:
        wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted(wanted - EVENT_TYPE_NAMES)
        if unknown:
            raise InvalidInput(
                f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPE_NAMES))}"
            )
    texts = [partition] if isinstance(partition, str) else list(partition or ())
    if len(texts) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} partition patterns; got {len(texts)}")
    for text in texts:
        if len(text) > 512:
            raise InvalidInput("a partition pattern must be at most 512 characters")
    patterns = tuple(PartitionPattern.compile(t) for t in texts if t)
    return wanted, PatternSet(patterns) if patterns else None


MAX_PATTERNS = 64  # partition patterns one event query may name

_SCAN_PER_CALL = 5_000  # events one in-memory selection looks at before it yields


def event_matches(
    event: Event, types: frozenset[str] | None, pattern: PatternSet | None, state: BuildState
) -> bool:
    """Whether ``event`` passes a stream's filter: its type is one of ``types`` and it is
    about a partition that ``pattern`` matches (runs are about the partitions they build)."""
    if types is not None and event_type_name(event.payload) not in types:
        return False
    return pattern is None or any(
        pattern.match(r) is not None for r in state.partitions_of(event.payload)
    )


def select_events(
    host: GraphHost,
    after: int,
    limit: int,
    types: frozenset[str] | None,
    pattern: PatternSet | None,
) -> tuple[list[Event], int]:
    """Up to ``limit`` matching events after ``after``, read from the log; and the sequence
    scanned up to. The cursor passes events the filter drops: once a read comes back short,
    the log held nothing more that matches up to its head as it was before the read, so
    the cursor moves there, and a filter that matches nothing yet costs one read, not a
    re-read of the same tail for ever (issue 17)."""
    out: list[Event] = []
    cursor = after
    state = host.state
    while len(out) < limit:
        controller = host.controller
        head = controller.last_committed if controller is not None else host.log.last_sequence()
        asked = max(limit, 500)
        chunk = host.log.read(cursor, asked, types)
        for event in chunk:
            cursor = event.sequence
            if event_matches(event, None, pattern, state):
                out.append(event)
                if len(out) == limit:
                    return out, cursor
        if len(chunk) < asked:
            cursor = max(cursor, head)
            break
    return out, cursor


def recent_events(
    host: GraphHost,
    after: int,
    limit: int,
    types: frozenset[str] | None,
    pattern: PatternSet | None,
) -> tuple[list[Event], int] | None:
    """As ``select_events``, from the controller's newest committed events in memory (no
    read, no thread); None when they do not reach back to ``after``. Scans at most a few
    thousand events per call so the event loop is never held long."""
    controller = host.controller
    if controller is None or after < controller.recent_base:
        return None
    recent, base = controller.recent, controller.recent_base
    state = host.state
    out: list[Event] = []
    cursor = after
    end = min(len(recent), after - base + _SCAN_PER_CALL)
    for index in range(after - base, end):
        event = recent[index]
        cursor = event.sequence
        if event_matches(event, types, pattern, state):
            out.append(event)
            if len(out) == limit:
                break
    return out, cursor


async def next_events(
    host: GraphHost,
    after: int,
    limit: int,
    types: frozenset[str] | None,
    pattern: PatternSet | None,
) -> tuple[list[Event], int]:
    """Matching events after ``after``: from memory when the controller still holds them,
    else from the log on a worker thread. Returns them and the sequence scanned up to."""
    found = recent_events(host, after, limit, types, pattern)
    if found is not None:
        return found
    return await asyncio.to_thread(select_events, host, after, limit, types, pattern)


async def events_page(
    host: GraphHost,
    *,
    after: int,
    limit: int,
    types: str | None = None,
    partition: str | Sequence[str] | None = None,
    wait: float = 0.0,
) -> schemas.EventsResponse:
    """Events after a sequence, filtered; with ``wait``, long-poll until one comes.
    ``last_sequence`` is where to resume (it may pass filtered-out events)."""
    events, scanned = await events_after(host, after, limit, types, partition, wait)
    return schemas.EventsResponse(
        events=[schemas.BuildEvent.model_validate(event_to_dict(e)) for e in events],
        last_sequence=scanned,
    )


async def events_after(
    host: GraphHost,
    after: int,
    limit: int,
    types: str | None,
    partition: str | Sequence[str] | None,
    wait: float,
) -> tuple[list[Event], int]:
    """Matching events after ``after`` and the sequence scanned up to; with ``wait``,
    long-poll until one comes (StorageError once the controller has stopped on an error)."""
    wanted, pattern = event_filter(types, partition)
    events, scanned = await next_events(host, after, limit, wanted, pattern)
    if not events and wait > 0 and (host.controller is not None or host.follower is not None):
        # A controller stopped on an error makes no more events: say so rather than have
        # the follower (`databuild build`, another graph) wait on for ever.
        if host.controller is not None:
            host.controller.raise_if_failed()
        await host.wait_for_events(scanned, min(wait, MAX_WAIT_SECONDS))
        if host.controller is not None:
            host.controller.raise_if_failed()
        events, scanned = await next_events(host, scanned, limit, wanted, pattern)
    return events, scanned


def health(host: GraphHost) -> schemas.Health:
    """Liveness: ``failed`` once the controller has stopped on an error (the process then
    exits); ``starting`` while the log is replayed, ``degraded`` while storage is down."""
    controller = host.controller
    failure = controller.failure if controller is not None else None
    if not host.ready and failure is None:
        return schemas.Health(
            status="starting",
            graph=host.config.name,
            version=__version__,
            last_sequence=0,
            active_wants=0,
            running_job_runs=0,
            message="replaying the Build Event Log",
        )
    state = host.state
    # O(jobs), not O(runs + wants): probes and every CLI command's discovery ask this
    running = sum(len(runs) for runs in state.running_by_job.values())
    # degraded: the Build Event Log is unavailable and an append is being retried
    down = controller.storage_down if controller is not None and not failure else ""
    if failure is None:
        failure = host.failure
    return schemas.Health(
        status="failed" if failure else "degraded" if down else "ok",
        role=host.role,
        graph=host.config.name,
        version=__version__,
        last_sequence=controller.last_committed if controller else state.last_sequence,
        active_wants=state.active_want_count,
        running_job_runs=running,
        message=str(failure) if failure else down,
    )


async def readiness(host: GraphHost) -> schemas.Readiness:
    """Whether a load balancer should send this service requests now, and its role. Ready:
    the log is replayed, storage is reachable and the role is known: a leader that writes,
    or a standby that follows the log and knows a leader to forward writes to."""
    controller = host.controller
    failure = host.failure or (controller.failure if controller is not None else None)
    if not host.ready and failure is None:
        return schemas.Readiness(
            ready=False,
            graph=host.config.name,
            role="starting",
            replayed=False,
            storage="ok",
            message="replaying the Build Event Log",
        )
    if host.role == "standby" and controller is None:
        record = await asyncio.to_thread(host.current_writer)
        url = record.url if record is not None else ""
        if failure is not None:
            message = str(failure)
        elif not url:
            message = "no leader is known yet: reads are served, writes refused"
        else:
            message = ""
        return schemas.Readiness(
            ready=not message,
            graph=host.config.name,
            role="standby",
            replayed=True,
            storage="ok",
            leader_url=url,
            message=message,
        )
    if controller is None:
        return schemas.Readiness(
            ready=host.role == "reader" and failure is None,
            graph=host.config.name,
            role="reader" if host.role == "reader" else "starting",
            replayed=host.ready,
            storage="ok",
            message=str(failure) if failure else "",
        )
    storage = str(failure) if failure else controller.storage_down or "ok"
    problems = []
    if storage != "ok":
        problems.append(f"the Build Event Log is unavailable: {storage}")
    elif not host.leading.is_set():
        problems.append("taking over: folding the rest of the log")
    return schemas.Readiness(
        ready=not problems,
        graph=host.config.name,
        role="leader",
        replayed=True,
        storage=storage,
        leader_url=host.advertise_url,
        message="; ".join(problems),
    )
