"""``POST /api/v1/partitions/live`` and the check runner against a real ``databuild serve``.

A calendar copy with externals: ``drop`` (no check), and three whose check commands fail
in each way a check can (non-zero exit, hanging past its timeout, too much output). The
route is idempotent, refuses refs that are no external's (422, nothing made live) and needs
the token like every write; failing checks are counted in ``/metrics`` and retried, and the
service goes on serving.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .graphs import create_wants, json_of, wait_for_want, want_of

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]
TOKEN = "externals-test-token"
HANG_GUARD_SECONDS = 120.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}

EXTERNALS = """
[externals.drop]
partitions = ["drop/{name}"]

[externals.exits]
partitions = ["exits/{name}"]
check = ["python", "-c", "import sys; sys.exit('the vendor API said no')"]
check_interval = 0.1
check_interval_max = 0.2

[externals.hangs]
partitions = ["hangs/{name}"]
check = ["python", "-c", "import time; time.sleep(600)"]
check_interval = 0.1
check_interval_max = 0.2
check_timeout = 0.3

[externals.babbles]
partitions = ["babbles/{name}"]
check = ["python", "-c", "import sys; sys.stdout.write('x' * 3_000_000)"]
check_interval = 0.1
check_interval_max = 0.2
"""


@pytest.fixture(scope="module")
def url(
    calendar_factory: Callable[[], Path], launch_service: Launcher, job_env: dict[str, str]
) -> Iterator[str]:
    directory = calendar_factory()
    config = directory / "databuild.toml"
    config.write_text(config.read_text() + EXTERNALS)
    proc, found = launch_service(directory, env={**job_env, "DATABUILD_TOKEN": TOKEN})
    yield found
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30, headers=AUTH) as c:
        yield c


def live(client: httpx.Client, *refs: str, **kwargs: Any) -> httpx.Response:
    return client.post("/api/v1/partitions/live", json={"partition_refs": list(refs)}, **kwargs)


def test_a_want_on_an_external_waits_until_declared_live(client: httpx.Client) -> None:
    (want,) = create_wants(client, "drop/a")
    assert want["status"] == "pending"
    assert want_of(client, want["want_id"])["message"] == "waiting on external drop: drop/a"
    answer = json_of(live(client, "drop/a"))
    (part,) = answer["partitions"]
    assert (part["partition_ref"], part["status"], part["upstream"]) == (
        "drop/a",
        "live",
        "external drop",
    )
    assert wait_for_want(client, want["want_id"])["status"] == "satisfied"
    again = live(client, "drop/a")  # idempotent
    assert again.status_code == 200 and again.json()["partitions"][0]["status"] == "live"
    # an external partition declared live before anyone wants it: a want is satisfied at once
    assert live(client, "drop/early").status_code == 200
    (early,) = create_wants(client, "drop/early")
    assert early["status"] == "satisfied"


def test_refs_no_external_declares_are_refused_and_none_is_made_live(
    client: httpx.Client,
) -> None:
    for refs, words in (
        (["drop/b", "daily/date=2024-01-01"], "'daily/date=2024-01-01' is not an external"),
        (["nosuch/x"], "no job builds partition 'nosuch/x'"),
        (["drop/b", ""], "partition_refs[1]"),
    ):
        response = live(client, *refs)
        assert response.status_code == 422, response.text
        assert words in response.json()["error"]
    assert client.get("/api/v1/partitions/drop/b").json()["status"] == "absent"
    empty = client.post("/api/v1/partitions/live", json={"partition_refs": []})
    assert empty.status_code == 422
    assert client.post("/api/v1/partitions/live", json={}).status_code == 422


def test_declaring_live_needs_the_token(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        response = live(anonymous, "drop/c")
        assert response.status_code == 401
        wrong = live(anonymous, "drop/c", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/api/v1/partitions/drop/c").json()["status"] == "absent"


def metric(text: str, name: str, external: str) -> float:
    found = re.search(rf'^{name}{{external="{external}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


def test_failing_checks_are_counted_retried_and_harmless(client: httpx.Client) -> None:
    wants = create_wants(client, "exits/x", "hangs/x", "babbles/x")
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while True:  # each check fails at least twice (so it was retried)
        text = client.get("/metrics").text
        failures = {
            name: metric(text, "databuild_external_check_failures_total", name)
            for name in ("exits", "hangs", "babbles")
        }
        if all(count >= 2 for count in failures.values()):
            break
        assert time.monotonic() < deadline, f"checks did not fail twice each: {failures}"
        client.get("/api/v1/events", params={"after": 0, "limit": 1, "wait": 0.2})
        time.sleep(0.1)
    for name in ("exits", "hangs", "babbles"):
        assert metric(text, "databuild_external_refs_waiting", name) == 1
        assert metric(text, "databuild_external_refs_found_total", name) == 0
        runs = metric(text, "databuild_external_checks_total", name)
        assert runs >= failures[name]
    # the service is fine and the wants still wait (not failed)
    assert client.get("/healthz").json()["status"] == "ok"
    for want in wants:
        assert want_of(client, want["want_id"])["status"] == "pending"
    # declared live by hand, the check stops being run for it
    assert live(client, "exits/x").status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "databuild_external_refs_waiting", "exits") == 0
