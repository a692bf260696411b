"""Who may talk to the service: Host and Origin checks, bearer tokens, body size limits.

An ASGI middleware in front of every route. On loopback, the Host header must name a
loopback host (defeats DNS rebinding) and a browser's cross-site Origin may not write (a
web page cannot drive a local service). Beyond loopback a token is required to start and
every write must carry it. Bodies over the limit are refused before they are read whole.
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
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _limited(receive), tracking_send)
        except _BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body over {MAX_BODY_BYTES} bytes")

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


class _BodyTooLarge(Exception):
    pass


def _limited(receive: Receive) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise _BodyTooLarge()
        return message

    return wrapped


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
