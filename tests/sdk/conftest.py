"""Fixtures for SDK tests: a stub of the graph service's liveness query, and a clean job
environment (no DATABUILD_* variables from whoever runs the tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from databuild import sdk

PROTOCOL_VARIABLES = (
    "DATABUILD_RUN_ID",
    "DATABUILD_JOB_NAME",
    "DATABUILD_RESULT_PATH",
    "DATABUILD_GRAPH_URL",
    "DATABUILD_LIVE_INPUTS",
)


@dataclass
class LivenessStub:
    """Answers ``GET /api/v1/partitions?ref=...`` from ``statuses`` (unknown refs are
    absent). ``answer_with`` replaces the answer with (HTTP status, body) for tests of
    broken services. ``queries`` records the refs of each request, in order."""

    url: str = ""
    statuses: dict[str, str] = field(default_factory=dict)
    queries: list[list[str]] = field(default_factory=list)
    request_lines: list[str] = field(default_factory=list)
    answer_with: tuple[int, bytes] | None = None


def _handler(stub: LivenessStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.request_lines.append(self.path)
            url = urlsplit(self.path)
            if url.path != "/api/v1/partitions":
                self._send(404, b'{"detail": "not found"}')
                return
            refs = parse_qs(url.query, keep_blank_values=True).get("ref", [])
            stub.queries.append(refs)
            if stub.answer_with is not None:
                self._send(*stub.answer_with)
                return
            partitions = [
                {"partition_ref": ref, "status": stub.statuses.get(ref, "absent")} for ref in refs
            ]
            # Compact separators, as the real service's JSON responses use.
            body = json.dumps({"partitions": partitions}, separators=(",", ":"))
            self._send(200, body.encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def liveness() -> Iterator[LivenessStub]:
    stub = LivenessStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_protocol_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROTOCOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fresh_answers() -> None:
    """Each test is a run of its own: the SDK's per-run liveness answers start empty."""
    sdk._answers.clear()
