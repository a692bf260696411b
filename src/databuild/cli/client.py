"""The CLI's HTTP client: finds the service for a graph and talks to it.

Called by the CLI commands only. It resolves which service to use (``--url``, then
``DATABUILD_URL``, then the discovery file the running service wrote for this graph) and
turns every transport or HTTP problem into a DataBuildError whose message says what went
wrong, never a traceback: the service refusing our input (400, 422) is ``InvalidInput``
(the CLI exits 2), anything else (unreachable, 404, 409, 5xx) a ``ServiceError`` (exit 1). It must not format output (that is ``output``'s job).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from databuild.config import GraphConfig
from databuild.core.errors import InvalidInput, ServiceError
from databuild.service.discovery import read_discovery

if TYPE_CHECKING:  # httpx (~25 ms to import) is loaded by the first Client only: a build
    import httpx  # with an embedded service talks to it in process and never needs it

REFUSED_INPUT = frozenset({400, 422})  # the request itself is wrong: a usage error
Params = Mapping[str, str | int | float | list[str]]


def find_service_url(config: GraphConfig | None, explicit: str | None) -> str | None:
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("DATABUILD_URL")
    if env:
        return env.rstrip("/")
    if config is None:
        return None
    record = read_discovery(config)
    if record is None or record.graph != config.name:
        return None
    client = Client(record.url, token=None, timeout=2.0)
    try:
        health = client.get("/healthz")
    except ServiceError:
        return None
    finally:
        client.close()
    return record.url if health.get("graph") == config.name else None


class Client:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self._httpx = httpx
        # Loading the CA bundle costs ~30 ms: only an https URL needs it.
        tls = base_url.lower().startswith("https:")
        self._http = http or httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, verify=tls
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except self._httpx.TimeoutException:
            raise ServiceError(f"the service at {self.base_url} did not answer in time") from None
        except self._httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the service at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error") or response.text)
            except ValueError:
                message = response.text or response.reason_phrase
            if response.status_code in REFUSED_INPUT:
                raise InvalidInput(f"{message} (HTTP {response.status_code})")
            raise ServiceError(f"{message} (HTTP {response.status_code})")
        return response

    def get(
        self, path: str, params: Params | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": params}
        if timeout is not None:
            kwargs["timeout"] = timeout
        data: dict[str, Any] = self._send("GET", path, **kwargs).json()
        return data

    def text(self, path: str, params: Params | None = None) -> tuple[str, dict[str, str]]:
        response = self._send("GET", path, params=params)
        return response.text, dict(response.headers)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = self._send("POST", path, json=body).json()
        return data

    def delete(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = self._send("DELETE", path).json()
        return data

    def pages(
        self, path: str, key: str, params: dict[str, Any], limit: int | None
    ) -> Iterator[dict[str, Any]]:
        """Follow ``next_cursor`` until ``limit`` items (None: all)."""
        cursor = ""
        seen = 0
        while True:
            page = self.get(
                path,
                {
                    **params,
                    "cursor": cursor,
                    "limit": 1000 if limit is None else min(1000, limit - seen),
                },
            )
            for item in page[key]:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor", "")
            if not cursor:
                return
