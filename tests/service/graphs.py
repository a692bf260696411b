"""What the service tests share: extra jobs for a calendar copy, and waiting on wants.

``add_test_jobs`` appends two jobs to a calendar copy's databuild.toml: ``hold`` (its runs
sleep until killed, so a want for ``hold/id=...`` stays active until canceled) and
``flaky`` (its runs fail, with a retry an hour away, so its wants sit in ``retrying``).
Waiting follows the event stream with long-polls; a deadline only guards against a hang.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = frozenset({"satisfied", "failed", "upstream_failed", "expired", "canceled"})
HANG_GUARD_SECONDS = 120.0

TEST_JOBS = """
[executor]
max_parallel = 8

[jobs.hold]
outputs = ["hold/id={id}"]
command = ["python", "-c", "import time; time.sleep(3600)"]
timeout = "2h"

[jobs.flaky]
outputs = ["flaky/id={id}"]
command = ["python", "-c", "import sys; sys.exit('flaky fails on purpose')"]
retries = 3
retry_backoff = "1h"
retry_backoff_max = "1h"
"""


def add_test_jobs(graph_dir: Path) -> None:
    config = graph_dir / "databuild.toml"
    config.write_text(config.read_text() + TEST_JOBS)


def json_of(response: httpx.Response) -> Any:
    assert response.status_code < 500, response.text
    return response.json()


def want_of(client: httpx.Client, want_id: str) -> dict[str, Any]:
    want: dict[str, Any] = json_of(client.get(f"/api/v1/wants/{want_id}"))["want"]
    return want


def wait_for_want(
    client: httpx.Client, want_id: str, statuses: frozenset[str] = TERMINAL
) -> dict[str, Any]:
    """Follow the event stream until the want's status is one of ``statuses``."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    after = int(json_of(client.get("/healthz"))["last_sequence"])
    while True:
        want = want_of(client, want_id)
        if want["status"] in statuses:
            return want
        assert time.monotonic() < deadline, f"want {want_id} stuck in {want['status']}"
        page = json_of(client.get("/api/v1/events", params={"after": after, "wait": 5}))
        after = int(page["last_sequence"])


def create_wants(client: httpx.Client, *refs: str, **fields: Any) -> list[dict[str, Any]]:
    response = client.post("/api/v1/wants", json={"partition_refs": list(refs), **fields})
    assert response.status_code == 200, response.text
    wants: list[dict[str, Any]] = response.json()["wants"]
    return wants


def all_events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every event (after ``after``, filtered as asked), following ``last_sequence``."""
    out: list[dict[str, Any]] = []
    after = int(params.pop("after", 0))
    while True:
        page = json_of(
            client.get("/api/v1/events", params={**params, "after": after, "limit": 1000})
        )
        out.extend(page["events"])
        if not page["events"]:
            return out
        after = int(page["last_sequence"])


def wanted_since(client: httpx.Client, after: int) -> list[str]:
    """The partition refs of wants created after sequence ``after`` by clients (not the
    schedules of the example graph, nor derived wants)."""
    return [
        e["want_created"]["want"]["partition_ref"]
        for e in all_events(client, types="want_created", after=after)
        if e["want_created"]["want"]["source"] not in ("scheduled", "derived")
    ]
