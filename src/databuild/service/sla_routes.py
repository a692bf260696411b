"""The SLA routes of ``/api/v1``: late wants (violations) and wants predicted late (at-risk).

Thin handlers over ``core.sla`` and the folded state; mounted by ``create_app``. Filters
(partition prefix, source, root want, roots only) and cursor pagination behave like the
other lists. Costs: violations walk ``BuildState.sla_violations`` (only wants that missed);
at-risk predicts every active want whose SLA timer is pending (one pass over that set,
each the length of its chain) per request. Must not change state or touch the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from databuild.core import sla
from databuild.core.errors import InvalidInput, NotFound
from databuild.core.model import WantId, WantSource
from databuild.core.state import WantRecord
from databuild.service import schemas, views
from databuild.service.host import GraphHost

T = TypeVar("T")

router = APIRouter(prefix="/api/v1/sla")

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": schemas.ErrorResponse},
    422: {"model": schemas.ErrorResponse},
}


class BlameView(BaseModel):
    partition_ref: str
    reason: str  # a core.sla.BlameReason value
    text: str


class SlaViolation(BaseModel):
    want: schemas.WantView
    deadline: float
    missed_at: float
    blame_ref: str  # what held it up at the deadline (recorded in the SlaMissed event)
    blame: str
    current_blame: BlameView  # what holds it up now (``not_held`` once satisfied)


class ListSlaViolationsResponse(BaseModel):
    violations: list[SlaViolation]
    next_cursor: str


class AheadView(BaseModel):
    partition_ref: str
    job_name: str
    status: str
    expected_seconds: float


class AtRiskWant(BaseModel):
    want: schemas.WantView
    deadline: float
    predicted_finish: float
    slack_seconds: float  # negative: predicted this many seconds late
    ahead: list[AheadView]
    blame: BlameView


class ListAtRiskResponse(BaseModel):
    at_risk: list[AtRiskWant]
    now: float
    next_cursor: str


def _host(request: Request) -> GraphHost:
    host: GraphHost = request.app.state.host
    return host


async def warm_upstream_blames(host: GraphHost, want_ids: Iterable[WantId]) -> None:
    """Ask the upstream graphs, at once, for the blame of every want among ``want_ids``
    that one of them holds up, so that ``held_up_by`` (no I/O) can show it."""
    if not host.followers:
        return
    asks = []
    for want_id in want_ids:
        found = sla.blame(host.state, want_id)
        if found.reason is sla.BlameReason.UPSTREAM_GRAPH:
            for follower in host.followers.values():
                if follower.spec.provides(found.ref):
                    asks.append(follower.upstream_blame(found.ref))
    await asyncio.gather(*asks)


def held_up_by(host: GraphHost, want_id: WantId) -> BlameView:
    """The want's blame now. One held up by an upstream graph follows the chain into it:
    the upstream's own blame of the want forwarded there (``upstream graph ingest: job
    failed (…) … on raw/date=…``), which in turn follows that graph's upstreams; as fetched
    by ``warm_upstream_blames``, else the local line (``waiting on upstream graph …``)."""
    found = sla.blame(host.state, want_id)
    view = BlameView(partition_ref=found.ref, reason=found.reason.value, text=found.text)
    if found.reason is not sla.BlameReason.UPSTREAM_GRAPH:
        return view
    for name, follower in host.followers.items():
        if not follower.spec.provides(found.ref):
            continue
        upstream = follower.cached_blame(found.ref)
        if upstream is None:  # not forwarded yet, or the upstream does not answer
            return BlameView(
                partition_ref=found.ref, reason=found.reason.value, text=follower.note(found.ref)
            )
        ref, reason, text = upstream
        where = "" if ref in text else f" on {ref}"  # a deeper graph's text names it already
        return BlameView(
            partition_ref=ref, reason=reason, text=f"upstream graph {name}: {text}{where}"
        )
    return view


def _filters(
    prefix: str | None, source: str | None, root_want_id: str | None, roots_only: bool
) -> Callable[[WantRecord], bool]:
    if source is not None and source not in {s.value for s in WantSource}:
        raise InvalidInput(
            f"unknown source {source!r}; known: {', '.join(s.value for s in WantSource)}"
        )

    def keep(record: WantRecord) -> bool:
        want = record.want
        return (
            (prefix is None or want.partition_ref.startswith(prefix))
            and (source is None or want.source.value == source)
            and (root_want_id is None or want.root_want_id == root_want_id)
            and (not roots_only or want.want_id == want.root_want_id)
        )

    return keep


def _page(items: Iterable[tuple[str, T]], cursor: str, limit: int) -> tuple[list[T], str]:
    """Items in a stable order with sortable keys; resume after ``cursor`` (the last key
    returned), so a cursor stays valid when the item it names leaves the list."""
    out: list[T] = []
    last = ""
    for key, value in items:
        if cursor and key <= cursor:
            continue
        if len(out) == limit:
            return out, last
        out.append(value)
        last = key
    return out, ""


Prefix = Annotated[str | None, Query(max_length=512, description="partition ref prefix")]
Source = Annotated[str | None, Query(max_length=32)]
RootWant = Annotated[str | None, Query(max_length=64)]
RootsOnly = Annotated[bool, Query(description="only root wants (not derived ones)")]
Cursor = Annotated[str, Query(max_length=128)]
Limit = Annotated[int, Query(ge=1, le=views.MAX_LIMIT)]


@router.get("/violations", response_model=ListSlaViolationsResponse, responses=_ERRORS)
async def list_violations(
    request: Request,
    prefix: Prefix = None,
    source: Source = None,
    root_want_id: RootWant = None,
    roots_only: RootsOnly = False,
    cursor: Cursor = "",
    limit: Limit = views.DEFAULT_LIMIT,
) -> ListSlaViolationsResponse:
    """Wants that missed their SLA, in the order they missed it, with the blame."""
    host = _host(request)
    state = host.state
    keep = _filters(prefix, source, root_want_id, roots_only)
    if cursor and not cursor.isdigit():
        raise InvalidInput(f"cursor {cursor!r} is not a cursor this service gave out")

    def matching() -> Iterator[tuple[str, WantRecord]]:
        for index, want_id in enumerate(state.sla_violations):
            record = state.wants[want_id]
            if keep(record):
                yield f"{index:012d}", record

    page, next_cursor = _page(matching(), cursor.zfill(12) if cursor else "", limit)
    await warm_upstream_blames(host, (r.want.want_id for r in page))
    return ListSlaViolationsResponse(
        violations=[
            SlaViolation(
                want=views.want_view(state, r),
                deadline=r.want.sla_deadline,
                missed_at=r.sla_missed_at,
                blame_ref=r.sla_blame_ref,
                blame=r.sla_blame,
                current_blame=held_up_by(host, r.want.want_id),
            )
            for r in page
        ],
        next_cursor=next_cursor,
    )


@router.get("/at-risk", response_model=ListAtRiskResponse, responses=_ERRORS)
async def list_at_risk(
    request: Request,
    prefix: Prefix = None,
    source: Source = None,
    root_want_id: RootWant = None,
    roots_only: RootsOnly = False,
    cursor: Cursor = "",
    limit: Limit = views.DEFAULT_LIMIT,
) -> ListAtRiskResponse:
    """Active wants not yet late whose predicted finish passes their SLA deadline,
    earliest deadline first. Predicted finish = now + expected durations of the jobs
    still ahead in the want's chain (see docs/sla.md)."""
    host = _host(request)
    state = host.state
    now = host.clock.now()
    keep = _filters(prefix, source, root_want_id, roots_only)
    predictions = [p for p in sla.at_risk(state, now) if keep(state.wants[p.want_id])]
    keyed = ((f"{p.deadline:020.3f}:{p.want_id}", p) for p in predictions)
    page, next_cursor = _page(keyed, cursor, limit)
    await warm_upstream_blames(host, (p.want_id for p in page))
    return ListAtRiskResponse(
        at_risk=[
            AtRiskWant(
                want=views.want_view(state, state.wants[p.want_id]),
                deadline=p.deadline,
                predicted_finish=p.predicted_finish,
                slack_seconds=p.slack_seconds,
                ahead=[
                    AheadView(
                        partition_ref=a.ref,
                        job_name=a.job_name,
                        status=a.status.value,
                        expected_seconds=a.expected_seconds,
                    )
                    for a in p.ahead
                ],
                blame=held_up_by(host, p.want_id),
            )
            for p in page
        ],
        now=now,
        next_cursor=next_cursor,
    )


class WantBlame(BaseModel):
    want_id: str
    graph: str
    blame: BlameView


@router.get("/blame/{want_id}", response_model=WantBlame, responses=_ERRORS)
async def want_blame(request: Request, want_id: str) -> WantBlame:
    """What holds the want up now (``not_held`` once it is satisfied), following upstream
    graphs: a downstream graph asks this of the want it forwarded here."""
    host = _host(request)
    record = host.state.wants.get(WantId(want_id))
    if record is None:
        raise NotFound(f"no want {want_id!r}")
    await warm_upstream_blames(host, [record.want.want_id])
    blame = held_up_by(host, record.want.want_id)
    return WantBlame(want_id=want_id, graph=host.config.name, blame=blame)
