"""The service's ASGI entry: the jobs' question answered at once, the rest by the FastAPI app.

Every job asks ``GET /api/v1/partitions?ref=...`` which of its inputs are live, and it asks
while it runs, so the answer is on the critical path of every build. This app answers that
one question (only ``ref`` parameters, all valid) straight from the operations, and hands
every other request, and any such request it cannot answer as it stands (a bad ref, another
parameter), to the FastAPI app of ``app``, which answers it as documented; both call the
same operation, so the body is the same (a contract test compares them).

The FastAPI app (FastAPI and the routes take ~0.2 s to import) is built at once for
``databuild serve`` and on first need for the embedded service of ``databuild build``,
whose own command talks to its host in process and whose jobs only ask the question above:
a build does not wait for it. The security middleware wraps this app, so both paths are
guarded alike. While the host is a standby of a shared log, every request that is not a
read goes to the leader instead (``forwarding``). Nothing here decides or stores anything.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from databuild.core.errors import DataBuildError
from databuild.log.port import SharedEventLog
from databuild.service import operations
from databuild.service.host import GraphHost

if TYPE_CHECKING:  # httpx loads only for a standby
    from databuild.service.forwarding import WriteForwarder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PARTITIONS_PATH = "/api/v1/partitions"
# Answered while the host is still starting (replaying the log): a probe must tell "alive,
# not ready yet" from "down". Every other request gets 503 until the host is ready.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
STARTING_MESSAGE = "the service is starting (replaying the Build Event Log); try again shortly"
MAX_REFS = 1000  # the route's own limit (``Query(max_length=1000)``)


def _full_app(host: GraphHost) -> ASGIApp:
    app_module = importlib.import_module("databuild.service.app")
    app: ASGIApp = app_module.create_app(host, None, manage_host=False)
    return app


class ServiceApp:
    """``eager``: build the FastAPI app now (``databuild serve``); else on first need."""

    def __init__(self, host: GraphHost, *, eager: bool) -> None:
        self.host = host
        self._app: ASGIApp | None = _full_app(host) if eager else None
        self._building: asyncio.Future[ASGIApp] | None = None
        self._forwarder: WriteForwarder | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.host.ready and scope["path"] not in PROBE_PATHS:
            await _send_json(send, 503, {"error": STARTING_MESSAGE}, retry_after=True)
            return
        if (
            scope["type"] == "http"
            and self.host.role == "standby"
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
        ):
            await self._forward(scope, receive, send)
            return
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] == PARTITIONS_PATH
            and await self._answer_partitions(scope, send)
        ):
            return
        app = self._app or await self._build()
        await app(scope, receive, send)

    async def _answer_partitions(self, scope: Scope, send: Send) -> bool:
        # Parsed as Starlette parses it, so both paths see the same refs.
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if not pairs or len(pairs) > MAX_REFS or any(key != "ref" for key, _ in pairs):
            return False
        try:
            answer = operations.partitions_by_ref(self.host, [value for _, value in pairs])
        except DataBuildError:
            return False  # the full app says what is wrong, in its own words
        await _send_body(send, 200, answer.model_dump_json().encode())
        return True

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._forwarder is None:
            from databuild.service.forwarding import WriteForwarder

            shared = self.host.log
            assert isinstance(shared, SharedEventLog)  # only a shared log has standbys
            self._forwarder = WriteForwarder(shared, self.host.advertise_url)
        await self._forwarder(scope, receive, send)

    async def _build(self) -> ASGIApp:
        if self._building is None:
            # The import runs in a thread: jobs' questions go on being answered meanwhile.
            self._building = asyncio.ensure_future(asyncio.to_thread(_full_app, self.host))
        app = await asyncio.shield(self._building)
        self._app = app
        return app


async def _send_json(
    send: Send, status: int, document: dict[str, str], *, retry_after: bool = False
) -> None:
    await _send_body(send, status, json.dumps(document).encode(), retry_after=retry_after)


async def _send_body(send: Send, status: int, body: bytes, *, retry_after: bool = False) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
