"""A standby's writes, forwarded to the leader of the shared Build Event Log.

Called by the gateway (``gateway.ServiceApp``) for every request that is not a read
(anything but GET, HEAD, OPTIONS) while its host is a standby. It looks up the leader's
advertised URL in the log (``SharedEventLog.current_writer``), sends it the same method,
path, query, headers (``Authorization`` included: the leader checks it again) and body with
httpx, and returns the leader's answer as it is. Forwarding rather than a 307: a client
behind a load balancer may not reach the leader's own address, and a 307 makes every
client follow redirects. No leader known, a leader that does not answer, or a request
that was forwarded already (a loop between misconfigured services) get 503 with a message
that says which. It decides nothing and stores nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from databuild.core.errors import StorageError
from databuild.log.port import SharedEventLog

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READS = frozenset({"GET", "HEAD", "OPTIONS"})
FORWARDED_HEADER = "x-databuild-forwarded-by"
TIMEOUT_SECONDS = 60.0
# Not passed on: they describe one hop, not the request (RFC 9110 section 7.6.1).
_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        # checked here already (the security middleware wraps the gateway); passed on, it
        # would name this replica's address, not the leader's, and read as cross-site
        "origin",
    }
)


class WriteForwarder:
    def __init__(self, event_log: SharedEventLog, own_url: str) -> None:
        self._log = event_log
        self._own_url = own_url
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP
        ]
        if any(k.lower() == FORWARDED_HEADER for k, _ in headers):
            await _error(send, "the request was forwarded to a service that is no leader either")
            return
        try:
            record = await asyncio.to_thread(self._log.current_writer)
        except StorageError as exc:
            await _error(send, f"cannot find the leader: {exc}")
            return
        leader = record.url if record is not None else ""
        if not leader or leader == self._own_url:
            await _error(
                send,
                "this service is a standby of the shared Build Event Log and no leader is "
                "known to forward the change to (it is being elected); try again in a few "
                "seconds",
            )
            return
        body = await _body(receive)
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{leader}{scope.get('root_path', '')}{scope['path']}"
        if query:
            target += f"?{query}"
        headers.append((FORWARDED_HEADER, self._own_url))
        try:
            reply = await self._client.request(
                scope["method"], target, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            await _error(
                send, f"the leader at {leader} did not answer ({exc!s}); try again in a few seconds"
            )
            return
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in reply.headers.multi_items()
            if k.lower() not in _HOP and k.lower() != "content-encoding"
        ]
        out.append((b"content-length", str(len(reply.content)).encode()))
        await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
        await send({"type": "http.response.body", "body": reply.content})

    async def close(self) -> None:
        await self._client.aclose()


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _error(send: Send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
