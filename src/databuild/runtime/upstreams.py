"""Upstream followers: the I/O of cross-graph coordination (issue 9; docs/federation.md).

One ``UpstreamFollower`` per ``[upstreams.NAME]`` runs inside ``databuild serve``. It

- asks the upstream's ``/healthz`` who it is and where its log ends, and decides with
  ``core.federation.resume_plan`` whether it can resume after the cursor recorded in this
  graph's Build Event Log, or must relist (``GET /api/v1/partitions?ref=...``);
- follows the upstream's events on its SSE stream ``GET /api/v1/events/stream`` resumed
  with ``Last-Event-ID`` (or, when the upstream offers no stream, the long-poll
  ``GET /api/v1/events?after=&wait=``), filtered server-side to the upstream's partition
  patterns and the event types it needs: each matching event comes the moment it commits
  (no polling interval);
- hands each ``partition_live`` to the controller, which records a local ``PartitionLive``
  naming the upstream and carrying the upstream's sequence in the same append (so the
  cursor is durable exactly when what it learned is: after a kill -9 it resumes from
  there; an event heard again makes nothing, the partition being live already);
- forwards local wants on the upstream's partitions to its ``POST /api/v1/wants`` (source
  ``upstream_graph``; idempotent: the upstream names the want by its ref, data timestamp
  and source), retried until acknowledged; cancels a forwarded want once no local want
  needs it; fails the local wants when the forwarded want fails, expires or is canceled
  in the upstream (checked against the want's current status there);
- on any error (connection refused, timeout, a 5xx, a malformed answer) records it
  (``last_error``, ``connected = False``: /metrics, ``databuild upstreams``) and retries
  with capped exponential back-off with jitter. It never stops the service.

The bearer token (``token_env`` names the environment variable holding it) is sent in the
Authorization header only; it is never logged or recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from databuild.core.federation import (
    LIVE_TYPES,
    backoff,
    follow_types,
    forwards,
    provided_by,
    resume_plan,
    unneeded,
)
from databuild.core.model import UpstreamSpec
from databuild.core.refs import PartitionRef
from databuild.runtime.controller import Controller

log = logging.getLogger("databuild.upstreams")

# The stream sends a keep-alive every 15 s: a read that waits longer is a dead connection.
STREAM_READ_TIMEOUT_SECONDS = 40.0
POLL_WAIT_SECONDS = 25.0  # one long-poll; the upstream answers at once when an event comes
PAGE_LIMIT = 1000
RELIST_CHUNK = 500
_UNSATISFIED = frozenset({"failed", "upstream_failed", "expired", "canceled"})


# Blame through the chain (SLA pages ask per want): bounded, and cached briefly.
BLAME_TIMEOUT_SECONDS = 2.0
BLAME_CACHE_SECONDS = 2.0
BLAME_CACHE_SIZE = 10_000


class UpstreamProtocolError(Exception):
    """The upstream answered something this follower cannot use."""


class UpstreamStarting(Exception):
    """The upstream answers, but is still replaying its log: not followed yet."""


class _NoStream(Exception):
    """The upstream offers no SSE stream: follow it by long-poll."""


@dataclass
class Forwarded:
    want_id: str
    status: str


@dataclass
class UpstreamStatus:
    """What ``databuild upstreams``, ``GET /api/v1/graph`` and /metrics show."""

    name: str
    url: str
    connected: bool = False
    cursor: int = 0
    upstream_graph: str = ""
    upstream_last_sequence: int = 0
    last_error: str = ""
    last_error_at: float = 0.0
    reconnects: int = 0
    relists: int = 0
    events_applied: int = 0
    transport: str = "sse"  # "long-poll" once the upstream turns out to offer no stream
    forwarded: dict[PartitionRef, Forwarded] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return max(0, self.upstream_last_sequence - self.cursor)


class UpstreamFollower:
    def __init__(
        self,
        spec: UpstreamSpec,
        controller: Controller,
        *,
        token: str = "",
        poll_wait: float = POLL_WAIT_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.controller = controller
        self.poll_wait = poll_wait
        self._rng = rng or random.Random()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._headers = headers
        self.status = UpstreamStatus(spec.name, spec.url)
        self._tasks: list[asyncio.Task[None]] = []
        # forwarded want id -> (monotonic time, the upstream's blame or None)
        self._blames: dict[str, tuple[float, tuple[str, str, str] | None]] = {}

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.status.cursor = self.controller.state.upstream_cursors.get(self.spec.name, 0)
        self._tasks = [
            asyncio.create_task(self._follow_forever(), name=f"upstream-{self.spec.name}"),
            asyncio.create_task(self._forward_forever(), name=f"forward-{self.spec.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def note(self, ref: PartitionRef) -> str:
        """The status line of a local want on ``ref``, which this upstream provides."""
        found = self.status.forwarded.get(ref)
        where = f"waiting on upstream graph {self.spec.name}"
        if found is None:
            state = "not yet acknowledged"
            if self.status.last_error and not self.status.connected:
                state += f" (unreachable: {self.status.last_error})"
            return f"{where}: want {state}"
        return f"{where}: want {found.want_id} {found.status}"

    async def upstream_blame(self, ref: PartitionRef) -> tuple[str, str, str] | None:
        """What holds up, in the upstream graph, the want forwarded there for ``ref``: its
        ``(partition_ref, reason, text)`` from the upstream's ``GET /api/v1/sla/blame``
        (which follows its own upstreams in turn). None when nothing was forwarded for
        ``ref`` or the upstream does not answer within ``BLAME_TIMEOUT_SECONDS``; answers
        are kept ``BLAME_CACHE_SECONDS`` so that a page of blames asks once per want."""
        found = self.status.forwarded.get(ref)
        if found is None or not found.want_id:
            return None
        now = time.monotonic()
        cached = self._blames.get(found.want_id)
        if cached is not None and now - cached[0] < BLAME_CACHE_SECONDS:
            return cached[1]
        answer: tuple[str, str, str] | None = None
        try:
            async with httpx.AsyncClient(
                base_url=self.spec.url.rstrip("/"),
                headers=self._headers,
                timeout=BLAME_TIMEOUT_SECONDS,
            ) as client:
                response = await client.get(f"/api/v1/sla/blame/{found.want_id}")
            body = response.json() if response.status_code == 200 else None
            blame = body.get("blame") if isinstance(body, dict) else None
            if isinstance(blame, dict):
                fields = (blame.get("partition_ref"), blame.get("reason"), blame.get("text"))
                if all(isinstance(f, str) for f in fields):
                    answer = (str(fields[0]), str(fields[1]), str(fields[2]))
        except (httpx.HTTPError, ValueError):
            answer = None
        self._blames[found.want_id] = (now, answer)
        if len(self._blames) > BLAME_CACHE_SIZE:
            self._blames.pop(next(iter(self._blames)))
        return answer

    def cached_blame(self, ref: PartitionRef) -> tuple[str, str, str] | None:
        """The upstream's blame for ``ref`` as last fetched by ``upstream_blame`` (kept
        ``BLAME_CACHE_SECONDS``); None if none is known. No I/O: for synchronous pages."""
        found = self.status.forwarded.get(ref)
        cached = self._blames.get(found.want_id) if found is not None else None
        if cached is None or time.monotonic() - cached[0] >= BLAME_CACHE_SECONDS:
            return None
        return cached[1]

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.spec.url.rstrip("/"),
            headers=self._headers,
            timeout=httpx.Timeout(10.0, read=self.poll_wait + 10.0),
        )

    def _failed(self, exc: BaseException) -> None:
        text = _describe(exc)
        if text != self.status.last_error or self.status.connected:
            log.warning("upstream graph %s at %s: %s", self.spec.name, self.spec.url, text)
        self.status.connected = False
        self.status.last_error = text
        self.status.last_error_at = time.time()

    # ---- following -----------------------------------------------------------------
    async def _follow_forever(self) -> None:
        attempt = 0
        known_graph = ""
        while not self.controller.stopping:
            try:
                async with self._client() as client:
                    health = _json_object(await client.get("/healthz"), "/healthz")
                    if health.get("status") == "starting":
                        # replaying its log: its last_sequence (0) is not its log's end,
                        # and taking it for one would look like a reset log (a relist)
                        raise UpstreamStarting("it is starting (replaying its log)")
                    graph = _field(health, "graph", str, "/healthz")
                    last = _field(health, "last_sequence", int, "/healthz")
                    plan = resume_plan(self.status.cursor, graph, last, known_graph)
                    known_graph = graph
                    self.status.upstream_graph = graph
                    self.status.upstream_last_sequence = last
                    if plan.relist:
                        log.warning("upstream graph %s: %s", self.spec.name, plan.why)
                        await self._relist(client)
                        self.status.relists += 1
                    self.status.cursor = plan.after
                    self.status.connected = True
                    self.status.last_error = ""
                    attempt = 0
                    if self.status.transport == "sse":
                        await self._stream(client)  # returns only if SSE is not offered
                    while not self.controller.stopping:
                        await self._poll_once(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is shown and retried; never a crash
                self._failed(exc)
            if self.controller.stopping:
                return
            self.status.reconnects += 1
            await asyncio.sleep(backoff(attempt, self._rng.random()))
            attempt += 1

    def _filter_params(self) -> list[tuple[str, str | int | float | bool | None]]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("types", ",".join(follow_types()))
        ]
        return params + [("partition", p.template) for p in self.spec.partitions]

    async def _stream(self, client: httpx.AsyncClient) -> None:
        """Follow the upstream's SSE stream from the cursor (``Last-Event-ID``), with the
        same server-side filter. Events that arrive together are applied together (one
        append). Returns, switching this follower to the long-poll, only when the upstream
        offers no stream (404/405, or not ``text/event-stream``: an older DataBuild, or a
        proxy that buffers); any other end raises, and the caller reconnects."""
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        headers = {"Last-Event-ID": str(self.status.cursor)}
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_SECONDS)

        async def read() -> None:
            try:
                async with aconnect_sse(
                    client,
                    "GET",
                    "/api/v1/events/stream",
                    params=self._filter_params(),
                    headers=headers,
                    timeout=timeout,
                ) as source:
                    response = source.response
                    kind = response.headers.get("content-type", "")
                    if response.status_code in (404, 405) or (
                        response.is_success and not kind.startswith("text/event-stream")
                    ):
                        raise _NoStream(f"HTTP {response.status_code} {kind}")
                    if not response.is_success:
                        await response.aread()
                        _json_object(response, "/api/v1/events/stream")  # raises, saying why
                    async for message in source.aiter_sse():
                        try:
                            raw = json.loads(message.data)
                        except ValueError:
                            raise UpstreamProtocolError(
                                f"/api/v1/events/stream: not JSON: {message.data!r:.200}"
                            ) from None
                        if not isinstance(raw, dict):
                            raise UpstreamProtocolError("/api/v1/events/stream: not an object")
                        queue.put_nowait(raw)
                raise UpstreamProtocolError("/api/v1/events/stream: the upstream ended it")
            except BaseException as exc:
                queue.put_nowait(exc)

        reader = asyncio.create_task(read(), name=f"upstream-sse-{self.spec.name}")
        try:
            while not self.controller.stopping:
                first = await queue.get()
                batch = [first]
                while not queue.empty() and len(batch) < PAGE_LIMIT:
                    batch.append(queue.get_nowait())
                events = [e for e in batch if isinstance(e, dict)]
                if events:
                    sequences = [e.get("sequence") for e in events]
                    scanned = max((q for q in sequences if isinstance(q, int)), default=0)
                    await self._apply(client, events, scanned, "/api/v1/events/stream")
                ended = next((e for e in batch if isinstance(e, BaseException)), None)
                if isinstance(ended, _NoStream):
                    log.info(
                        "upstream graph %s offers no event stream (%s): long-polling instead",
                        self.spec.name,
                        ended,
                    )
                    self.status.transport = "long-poll"
                    return
                if ended is not None:
                    raise ended
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _poll_once(self, client: httpx.AsyncClient) -> None:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("after", self.status.cursor),
            ("limit", PAGE_LIMIT),
            ("wait", self.poll_wait),
            *self._filter_params(),
        ]
        page = _json_object(await client.get("/api/v1/events", params=params), "/api/v1/events")
        events = _field(page, "events", list, "/api/v1/events")
        scanned = _field(page, "last_sequence", int, "/api/v1/events")
        await self._apply(client, events, scanned, "/api/v1/events")

    async def _apply(
        self, client: httpx.AsyncClient, events: list[Any], scanned: int, where: str
    ) -> None:
        """Make the upstream's live partitions live here (one append, cursor with them),
        and look into the forwarded wants that ended there."""
        live_refs: list[PartitionRef] = []
        live_seqs: list[int] = []
        graph = self.controller.graph
        for raw in events:
            if not isinstance(raw, dict):
                raise UpstreamProtocolError(f"{where}: an event is not an object")
            kind = raw.get("type")
            body = raw.get(str(kind))
            sequence = raw.get("sequence")
            if not isinstance(body, dict) or not isinstance(sequence, int):
                raise UpstreamProtocolError(f"{where}: malformed event {raw!r:.200}")
            if kind in LIVE_TYPES:
                ref = PartitionRef(str(body.get("partition_ref", "")))
                if provided_by(graph, self.spec.name, ref):
                    live_refs.append(ref)
                    live_seqs.append(sequence)
            else:
                await self._maybe_failed(client, str(kind), body)
        if live_refs:
            await self.controller.upstream_live(live_refs, self.spec.name, live_seqs)
            self.status.events_applied += len(live_refs)
            for ref in live_refs:
                found = self.status.forwarded.get(ref)
                if found is not None:
                    found.status = "satisfied"
        if scanned > self.status.cursor:
            self.status.cursor = scanned
        self.status.upstream_last_sequence = max(self.status.upstream_last_sequence, scanned)

    async def _maybe_failed(
        self, client: httpx.AsyncClient, kind: str, body: dict[str, Any]
    ) -> None:
        """A forwarded want ended unsatisfied in the upstream? Confirmed by its status
        there now (an old failure heard again, of a want since reopened, is not one)."""
        want_id = str(body.get("want_id", ""))
        refs = [r for r, f in self.status.forwarded.items() if f.want_id == want_id]
        if not refs:
            return
        answer = _json_object(
            await client.get(f"/api/v1/wants/{want_id}"), f"/api/v1/wants/{want_id}"
        )
        want = answer.get("want", answer)
        status = str(want.get("status", "")) if isinstance(want, dict) else ""
        if status not in _UNSATISFIED:
            return
        if status == "canceled":
            # canceled there by someone else (another downstream sharing the want, a
            # person): while wants here need it, it is asked for again, which reopens it
            for ref in refs:
                self.status.forwarded[ref].status = status
            await self._forward_once(client)
            if all(self.status.forwarded.get(r, Forwarded("", "")).status != status for r in refs):
                return
        message = str(want.get("message", "")) if isinstance(want, dict) else ""
        text = f"want {want_id} {status.replace('_', '-')}" + (f": {message}" if message else "")
        for ref in refs:
            self.status.forwarded[ref].status = status
        await self.controller.upstream_failed(refs, self.spec.name, text)

    async def _relist(self, client: httpx.AsyncClient) -> None:
        """Ask the upstream which of the partitions wanted here are live (a gap)."""
        state = self.controller.state
        refs = [f.ref for f in forwards(state, self.spec)]
        for start in range(0, len(refs), RELIST_CHUNK):
            chunk = refs[start : start + RELIST_CHUNK]
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("ref", str(r)) for r in chunk
            ]
            params.append(("limit", len(chunk)))
            page = _json_object(
                await client.get("/api/v1/partitions", params=params), "/api/v1/partitions"
            )
            found = _field(page, "partitions", list, "/api/v1/partitions")
            live = [
                PartitionRef(str(p.get("partition_ref")))
                for p in found
                if isinstance(p, dict) and p.get("status") == "live"
            ]
            live = [r for r in live if provided_by(self.controller.graph, self.spec.name, r)]
            if live:
                await self.controller.upstream_live(live, self.spec.name)

    # ---- forwarding ----------------------------------------------------------------
    async def _forward_forever(self) -> None:
        attempt = 0
        while not self.controller.stopping:
            try:
                async with self._client() as client:
                    # ``seen`` is read before each look, so that events committed while a
                    # look awaits the upstream are looked at by the next one
                    seen = self.controller.last_committed
                    await self._forward_once(client)  # a full look once per connection
                    attempt = 0
                    while not self.controller.stopping:
                        await self.controller.wait_for_events(seen, 30.0)
                        changed = self._changed_since(seen)
                        seen = self.controller.last_committed
                        await self._forward_once(client, changed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            if self.controller.stopping:
                return
            await asyncio.sleep(backoff(attempt, self._rng.random()))
            attempt += 1

    def _changed_since(self, seen: int) -> list[PartitionRef] | None:
        """The refs of the events committed after ``seen`` that this upstream provides, from
        the controller's recent events in memory; None (look at all) if they are gone."""
        controller = self.controller
        if seen < controller.recent_base:
            return None
        state = controller.state
        refs: list[PartitionRef] = []
        for event in controller.recent[seen - controller.recent_base :]:
            refs.extend(r for r in state.partitions_of(event.payload) if self.spec.provides(r))
        return refs

    async def _forward_once(
        self, client: httpx.AsyncClient, among: list[PartitionRef] | None = None
    ) -> None:
        state = self.controller.state
        forwarded = self.status.forwarded
        for item in forwards(state, self.spec, among):
            known = forwarded.get(item.ref)
            if (
                known is not None
                and known.want_id == item.upstream_want_id
                and known.status not in _UNSATISFIED
            ):
                continue
            body = {
                "partition_refs": [item.ref],
                "data_timestamp": item.data_timestamp,
                "sla_seconds": item.sla_seconds,
                "ttl_seconds": item.ttl_seconds,
                "source": "upstream_graph",
            }
            answer = _json_object(
                await client.post("/api/v1/wants", json=body), "POST /api/v1/wants"
            )
            wants = _field(answer, "wants", list, "POST /api/v1/wants")
            if not wants or not isinstance(wants[0], dict):
                raise UpstreamProtocolError("POST /api/v1/wants: no want in the answer")
            want_id = str(wants[0].get("want_id", ""))
            status = str(wants[0].get("status", ""))
            forwarded[item.ref] = Forwarded(want_id, status)
            if status == "satisfied":
                await self.controller.upstream_live([item.ref], self.spec.name)
            elif status in _UNSATISFIED:
                message = str(wants[0].get("message", ""))
                await self.controller.upstream_failed(
                    [item.ref], self.spec.name, f"want {want_id} {status}: {message}"
                )
        for ref in unneeded(list(forwarded), self.controller.state):
            found = forwarded[ref]
            if found.status not in _UNSATISFIED and found.status != "satisfied":
                response = await client.delete(f"/api/v1/wants/{found.want_id}")
                if response.status_code != 404:
                    _json_object(response, f"DELETE /api/v1/wants/{found.want_id}")
            del forwarded[ref]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {exc}" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:300]


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code in (401, 403):
        raise UpstreamProtocolError(
            f"{what}: HTTP {response.status_code}: the upstream refused this graph's token "
            "(set token_env in [upstreams.NAME] to the variable that holds it)"
        )
    if response.status_code >= 400:
        raise UpstreamProtocolError(f"{what}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError:
        raise UpstreamProtocolError(f"{what}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{what}: the answer is not a JSON object")
    return data


def _field(data: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UpstreamProtocolError(f"{what}: field {name!r} missing or not a {kind.__name__}")
    return value


__all__ = ["UpstreamFollower", "UpstreamProtocolError", "UpstreamStatus"]
