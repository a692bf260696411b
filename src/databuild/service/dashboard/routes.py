"""The dashboard's pages: each reads the folded state through the views and renders HTML.

Query parameters are read by hand (not by FastAPI), so that bad input is an HTML page with
a 4xx saying what is wrong, never a JSON 422 nor a 500. Lists are paginated with the
views' cursors; no page loads everything. Must not change state (writes go through the
API, from static/dashboard.js).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from databuild.core import sla
from databuild.core.errors import DataBuildError, IllegalTransition, InvalidInput, NotFound
from databuild.core.events import EVENT_TYPE_NAMES
from databuild.core.history import RecordFilter
from databuild.core.lifecycle import JobRunStatus, PartitionStatus
from databuild.core.lineage import observed_edges
from databuild.core.model import JobRunId, WantId, WantSource, WantStatus
from databuild.core.refs import parse_ref
from databuild.core.state import BuildState, WantRecord
from databuild.service import operations, schemas, views
from databuild.service.dashboard.svg import graph_svg
from databuild.service.host import GraphHost
from databuild.service.security import ASGIApp, Message, Receive, Scope, Send
from databuild.service.sla_routes import held_up_by, warm_upstream_blames

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PAGE_LIMIT = 50
OVERVIEW_ITEMS = 10
TREE_MAX_NODES = 300

MAX_PARAM = 512

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# FastAPI's own /docs and /redoc pages load their scripts from a CDN: left as they are
_NO_CSP_PATHS = ("/docs", "/redoc")

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "svg"], default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _time(value: float) -> Markup:
    """A timestamp as UTC text in a <time> element; the page's script shows local time."""
    if not value:
        return Markup("—")
    moment = datetime.fromtimestamp(value, UTC)
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, text, text)


def _seconds(value: float) -> str:
    if value < 0:
        return "-" + _seconds(-value)
    if value < 60:
        return f"{value:.1f}s"
    return views.duration_text(round(value))


def _event_text(event: schemas.BuildEvent) -> str:
    """One line about an event's payload: its message, blame or reason, if it has one."""
    payload = (event.model_extra or {}).get(event.type)
    if not isinstance(payload, dict):
        return ""
    for key in ("message", "blame", "reason", "job_run_id"):
        value = payload.get(key)
        if value:
            return str(value)
    return ""


_env.filters["event_text"] = _event_text
_env.filters["time"] = _time
_env.filters["seconds"] = _seconds
_env.filters["duration"] = views.duration_text


class BadPage(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _host(request: Request) -> GraphHost:
    host: GraphHost = request.app.state.host
    return host


def _param(request: Request, name: str, max_len: int = MAX_PARAM) -> str | None:
    values = request.query_params.getlist(name)
    if not values or values[-1] == "":
        return None
    value = values[-1]
    if len(value) > max_len:
        raise BadPage(422, f"query parameter {name!r} is longer than {max_len} characters")
    return value


def _choice(request: Request, name: str, allowed: Iterable[str]) -> str | None:
    """A comma-separated list of known values (e.g. statuses)."""
    value = _param(request, name, 200)
    if value is None:
        return None
    known = set(allowed)
    bad = [v for v in value.split(",") if v not in known]
    if bad:
        raise BadPage(422, f"{name} {bad[0]!r} is not one of: {', '.join(sorted(known))}")
    return value


def _limit(request: Request) -> int:
    raw = _param(request, "limit", 10)
    if raw is None:
        return PAGE_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= views.MAX_LIMIT:
        raise BadPage(422, f"limit must be a whole number from 1 to {views.MAX_LIMIT}, not {raw!r}")
    return int(raw)


def _status_of(exc: DataBuildError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, IllegalTransition):
        return 409
    return 503


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    host = _host(request)
    body = _env.get_template(template).render(
        graph_name=host.config.graph.name,
        last_sequence=host.state.last_sequence,
        event_types=",".join(sorted(EVENT_TYPE_NAMES)),
        read_only=host.controller is None and host.role != "standby",  # a standby forwards
        path=request.url.path,
        page_url=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        **context,
    )
    return HTMLResponse(body, status_code=status)


def _page(request: Request, template: str, build: Any) -> HTMLResponse:
    """Render ``template`` with what ``build()`` returns; bad input is a 4xx page."""
    try:
        context = build()
    except BadPage as exc:
        return _render(request, "error.html", exc.status, message=str(exc))
    except DataBuildError as exc:
        return _render(request, "error.html", _status_of(exc), message=str(exc))
    return _render(request, template, **context)


def _next_url(request: Request, cursor: str, name: str = "cursor") -> str:
    if not cursor:
        return ""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != name]
    params.append((name, cursor))
    return f"{request.url.path}?{urlencode(params)}"


# --- overview -------------------------------------------------------------------------


def _recent_failures(state: BuildState) -> list[schemas.JobRunView]:
    out: list[schemas.JobRunView] = []
    failed = RecordFilter(statuses=frozenset({JobRunStatus.FAILED.value}))
    for run in state.runs.scan(failed, descending=True, limit=OVERVIEW_ITEMS):
        out.append(views.job_run_view(run))
    return out


def _violations(host: GraphHost, want_ids: Iterable[WantId]) -> list[dict[str, Any]]:
    state = host.state
    out = []
    for want_id in want_ids:
        record = state.wants[want_id]
        now_blame = held_up_by(host, want_id)
        out.append(
            {
                "want": views.want_view(state, record),
                "missed_at": record.sla_missed_at,
                "blame_ref": record.sla_blame_ref,
                "blame": record.sla_blame,
                "current": now_blame,
            }
        )
    return out


def _at_risk(host: GraphHost, limit: int) -> tuple[list[dict[str, Any]], int]:
    state = host.state
    predictions = sla.at_risk(state, host.clock.now())
    return [
        {
            "want": views.want_view(state, state.wants[p.want_id]),
            "deadline": p.deadline,
            "predicted_finish": p.predicted_finish,
            "slack": p.slack_seconds,
            "blame": held_up_by(host, p.want_id),
        }
        for p in predictions[:limit]
    ], len(predictions)


_ACTIVE_STATUSES = frozenset({"pending", "building", "waiting", "retrying"})


async def _warm_sla_blames(host: GraphHost) -> None:
    """With upstream graphs, fetch their blame for the late and at-risk wants a page may
    show (bounded: at most a page of each), before the page is rendered without I/O."""
    if not host.followers:
        return
    state = host.state
    late = [w for w in state.sla_violations[-views.MAX_LIMIT :] if state.wants[w].active]
    risky = [p.want_id for p in sla.at_risk(state, host.clock.now())[: views.MAX_LIMIT]]
    await warm_upstream_blames(host, [*late, *risky])


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    host = _host(request)
    await _warm_sla_blames(host)

    def build() -> dict[str, Any]:
        state = host.state
        counts = {s.value: n for s, n in state.want_counts.items()}
        running = [
            views.job_run_view(state.runs[run_id])
            for run_ids in state.running_by_job.values()
            for run_id in run_ids
            if run_id in state.runs
        ]
        missed = state.sla_violations
        at_risk, at_risk_total = _at_risk(host, OVERVIEW_ITEMS)
        graph = views.graph_view(host.config.graph)
        return {
            "counts": [(s.value, counts.get(s.value, 0)) for s in WantStatus],
            "total_wants": len(state.wants),
            "running": sorted(running, key=lambda r: r.started_at)[:100],
            "running_total": len(running),
            "violations": _violations(host, reversed(missed[-OVERVIEW_ITEMS:])),
            "violations_total": len(missed),
            "at_risk": at_risk,
            "at_risk_total": at_risk_total,
            "failures": _recent_failures(state),
            "upstreams": graph.upstreams,
        }

    return _page(request, "overview.html", build)


# --- wants ----------------------------------------------------------------------------

_WANT_STATUSES = [s.value for s in WantStatus] + ["active"]


@router.get("/wants", response_class=HTMLResponse)
async def wants(request: Request) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        status = _choice(request, "status", _WANT_STATUSES)
        source = _choice(request, "source", [s.value for s in WantSource])
        prefix = _param(request, "prefix")
        root = _param(request, "root", 64)
        found = views.list_wants(
            host.state,
            status=status,
            prefix=prefix,
            root_want_id=root,
            source=source,
            cursor=_param(request, "cursor", 64) or "",
            limit=_limit(request),
        )
        return {
            "wants": found.wants,
            "next_url": _next_url(request, found.next_cursor),
            "filters": {"status": status or "", "prefix": prefix or "", "source": source or ""},
            "root": root or "",
            "statuses": _WANT_STATUSES,
            "sources": [s.value for s in WantSource],
        }

    return _page(request, "wants.html", build)


def _tree(state: BuildState, root_id: WantId) -> tuple[dict[str, Any] | None, bool]:
    """The want chain from its root: nested dicts of want views, at most TREE_MAX_NODES."""
    budget = [TREE_MAX_NODES]

    def node(want_id: WantId, seen: frozenset[WantId]) -> dict[str, Any] | None:
        record = state.wants.get(want_id)
        if record is None or budget[0] <= 0:
            return None
        budget[0] -= 1
        inner = seen | {want_id}
        children = [node(c, inner) for c in record.children if c not in inner]
        return {"want": record, "children": [c for c in children if c is not None]}

    found = node(root_id, frozenset())
    return found, budget[0] <= 0


@router.get("/wants/{want_id}", response_class=HTMLResponse)
async def want(request: Request, want_id: str) -> HTMLResponse:
    host = _host(request)
    if len(want_id) > 64:
        return _render(request, "error.html", 404, message=f"no want with id {want_id[:64]!r}…")
    try:
        detail = await operations.want_detail(host, want_id)
    except DataBuildError as exc:
        return _render(request, "error.html", _status_of(exc), message=str(exc))
    if detail.want.status in _ACTIVE_STATUSES:
        await warm_upstream_blames(host, [WantId(want_id)])

    def build() -> dict[str, Any]:
        state = host.state
        record: WantRecord = state.wants[WantId(want_id)]
        predicted = 0.0
        if record.active:
            predicted = sla.predict(state, record.want.want_id, host.clock.now()).predicted_finish
        tree, cut = _tree(state, record.want.root_want_id)
        return {
            "detail": detail,
            "w": detail.want,
            "predicted": predicted,
            "active": record.active,
            "blame": held_up_by(host, record.want.want_id) if record.active else None,
            "tree": tree,
            "tree_cut": cut,
            "tree_max": TREE_MAX_NODES,
        }

    return _page(request, "want.html", build)


@router.get("/new", response_class=HTMLResponse)
async def new_want(request: Request) -> HTMLResponse:
    host = _host(request)
    patterns = [p.template for job in host.config.graph.jobs for p in job.outputs]
    return _page(request, "new.html", lambda: {"patterns": patterns})


# --- job runs -------------------------------------------------------------------------


@router.get("/runs", response_class=HTMLResponse)
async def runs(request: Request) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        status = _choice(request, "status", [s.value for s in JobRunStatus])
        job = _param(request, "job", 200)
        found = views.list_job_runs(
            host.state,
            job=job,
            status=status,
            cursor=_param(request, "cursor", 64) or "",
            limit=_limit(request),
        )
        return {
            "runs": found.job_runs,
            "next_url": _next_url(request, found.next_cursor),
            "filters": {"status": status or "", "job": job or ""},
            "statuses": [s.value for s in JobRunStatus],
            "jobs": [j.name for j in host.config.graph.jobs],
        }

    return _page(request, "runs.html", build)


@router.get("/runs/{job_run_id}", response_class=HTMLResponse)
async def run(request: Request, job_run_id: str) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        record = host.state.runs.get(JobRunId(job_run_id))
        if record is None:
            raise NotFound(f"no job run with id {job_run_id[:64]!r}")
        return {"r": views.job_run_view(record)}

    return _page(request, "run.html", build)


# --- partitions -----------------------------------------------------------------------


@router.get("/partitions", response_class=HTMLResponse)
async def partitions(request: Request) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        status = _choice(request, "status", [s.value for s in PartitionStatus])
        prefix = _param(request, "prefix")
        found = views.list_partitions(
            host.state,
            refs=[],
            prefix=prefix,
            status=status,
            cursor=_param(request, "cursor", 600) or "",
            limit=_limit(request),
        )
        return {
            "partitions": found.partitions,
            "next_url": _next_url(request, found.next_cursor),
            "filters": {"status": status or "", "prefix": prefix or ""},
            "statuses": [s.value for s in PartitionStatus],
        }

    return _page(request, "partitions.html", build)


@router.get("/partitions/{ref:path}", response_class=HTMLResponse)
async def partition(request: Request, ref: str) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        if len(ref) > MAX_PARAM:
            raise BadPage(422, f"a partition ref is at most {MAX_PARAM} characters")
        valid = parse_ref(ref)
        state = host.state
        if valid not in state.partitions:
            raise NotFound(f"no partition {ref!r} is known to this graph")
        found = views.list_partitions(
            state, refs=[valid], prefix=None, status=None, cursor="", limit=1
        )
        return {"p": found.partitions[0]}

    return _page(request, "partition.html", build)


# --- SLA and graph --------------------------------------------------------------------


@router.get("/sla", response_class=HTMLResponse)
async def sla_page(request: Request) -> HTMLResponse:
    host = _host(request)
    await _warm_sla_blames(host)

    def build() -> dict[str, Any]:
        state = host.state
        limit = _limit(request)
        raw = _param(request, "cursor", 20) or "0"
        if not raw.isdigit():
            raise BadPage(422, f"cursor {raw!r} is not a cursor this page gave out")
        start = int(raw)
        missed = state.sla_violations
        newest_first = (missed[len(missed) - 1 - i] for i in range(start, len(missed)))
        page = [w for _, w in zip(range(limit), newest_first, strict=False)]
        more = start + limit < len(missed)
        at_risk, at_risk_total = _at_risk(host, views.MAX_LIMIT)
        return {
            "violations": _violations(host, page),
            "violations_total": len(missed),
            "next_url": _next_url(request, str(start + limit) if more else ""),
            "at_risk": at_risk,
            "at_risk_total": at_risk_total,
        }

    return _page(request, "sla.html", build)


def _graph_view(host: GraphHost) -> schemas.GraphView:
    needs = observed_edges(host.state.observed_needs)
    return views.graph_view(host.config.graph, host.config.digest, needs)


@router.get("/graph", response_class=HTMLResponse)
async def graph(request: Request) -> HTMLResponse:
    host = _host(request)

    def build() -> dict[str, Any]:
        view = _graph_view(host)
        return {"g": view, "svg": Markup(graph_svg(view))}

    return _page(request, "graph.html", build)


@router.get("/graph.svg")
async def graph_image(request: Request) -> Response:
    return Response(graph_svg(_graph_view(_host(request))), media_type="image/svg+xml")


# --- headers --------------------------------------------------------------------------


class SecurityHeaders:
    """Adds nosniff to every response, and the CSP (with frame-ancestors 'none') and
    ``X-Frame-Options: DENY`` to every response but FastAPI's /docs and /redoc."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        strict = not path.startswith(_NO_CSP_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if strict:
                    headers.append((b"content-security-policy", CSP.encode()))
                    headers.append((b"x-frame-options", b"DENY"))
                    headers.append((b"referrer-policy", b"same-origin"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
