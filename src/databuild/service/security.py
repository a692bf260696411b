"""Who may talk to the service: Host and Origin checks, bearer tokens, body size limits.

An ASGI middleware in front of every route. On loopback, the Host header must name a
loopback host (defeats DNS rebinding) and a browser's cross-site Origin may not write (a
web page cannot drive a local service). Beyond loopback a token is required to start and
every write must carry it. Bodies over the limit are refused: by their Content-Length, or
as soon as the bytes read pass it (write bodies are read here, bounded, before the app).
It never logs the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from databuild.core.errors import InvalidInput

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20
# The request line and headers: uvicorn (h11) buffers up to this much, then answers a plain
# 400 and closes. Set explicitly so that the limit does not depend on how TCP splits the
# request (h11's own default is 16 KiB of buffered, incomplete data).
MAX_HEAD_BYTES = 1 << 20
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    bind_host: str
    token: str | None  # None: no token configured
    allowed_hosts: frozenset[str] = frozenset()  # extra Host names allowed beyond loopback

    def __post_init__(self) -> None:
        if not is_loopback(self.bind_host) and not self.token:
            raise InvalidInput(
                f"refusing to listen on {self.bind_host}: beyond loopback a bearer token is "
                "required; set it in the environment variable named by [service] token_env "
                "(default DATABUILD_TOKEN)"
            )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.bind_host)


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._problem(scope, headers)
        if problem is not None:
            status, message = problem
            await _reply(send, status, message)
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(send, 400, "Content-Length is not a number")
                return
            if int(length) > MAX_BODY_BYTES:
                await _reply(send, 413, f"request body over {MAX_BODY_BYTES} bytes")
                return
        if scope["method"] in _WRITE_METHODS:
            # Read the whole (bounded) body here: a body over the limit sent without a
            # Content-Length must be a 413, and the app's body parser would turn any error
            # raised from ``receive`` into a 400.
            body = await _read_body(receive)
            if body is None:
                await _reply(send, 413, f"request body over {MAX_BODY_BYTES} bytes")
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        policy = self.policy
        host = _host_name(headers.get("host", ""))
        if policy.loopback and not is_loopback(host) and host not in policy.allowed_hosts:
            return 421, f"Host {host!r} is not allowed: this service answers on loopback only"
        method = scope["method"]
        if method in _WRITE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin != "null":
                origin_host = _host_name(origin.split("://", 1)[-1])
                if origin_host != host and not (is_loopback(origin_host) and is_loopback(host)):
                    return 403, f"cross-site write from Origin {origin!r} refused"
            elif origin == "null":
                return 403, "writes from an opaque Origin are refused"
            fetch_site = headers.get("sec-fetch-site")
            if fetch_site == "cross-site":
                return 403, "cross-site write refused"
            if policy.token is not None:
                given = headers.get("authorization", "")
                expected = f"Bearer {policy.token}"
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    return 401, "writes need the header 'Authorization: Bearer <token>'"
        return None


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None once it passes the limit (the rest is not read)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app sees an empty body
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands the app the body read above, then whatever the server sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
