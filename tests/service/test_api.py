"""Every route of the HTTP API against a real ``databuild serve``, bad input included.

One service per module on a calendar copy (8 days) with two extra jobs (see ``graphs``);
``summary/all`` is built once up front, so runs, logs, partitions and events exist. Every
response goes through a hook that fails the test on any 5xx.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .graphs import (
    add_test_jobs,
    all_events,
    create_wants,
    json_of,
    wait_for_want,
    want_of,
    wanted_since,
)

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]


@dataclass(frozen=True)
class Api:
    url: str
    directory: Path
    summary: dict[str, Any]  # the satisfied want for summary/all


def _no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, (
        f"{response.request.method} {response.request.url} -> {response.status_code}"
    )


def client_for(url: str, timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=timeout, event_hooks={"response": [_no_server_error]})


@pytest.fixture(scope="module")
def api(calendar_factory: Callable[[], Path], launch_service: Launcher) -> Iterator[Api]:
    directory = calendar_factory()
    add_test_jobs(directory)
    proc, url = launch_service(directory)
    with client_for(url) as client:
        (created,) = create_wants(client, "summary/all")
        summary = wait_for_want(client, created["want_id"])
    assert summary["status"] == "satisfied", summary
    yield Api(url, directory, summary)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with client_for(api.url) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


# ---- POST /api/v1/wants --------------------------------------------------------------------
def test_same_request_gives_the_same_want(client: httpx.Client) -> None:
    body = {"partition_refs": ["daily/date=2024-03-01"], "data_date": "2024-03-01"}
    first = json_of(client.post("/api/v1/wants", json=body))["wants"]
    second = json_of(client.post("/api/v1/wants", json=body))["wants"]
    assert [w["want_id"] for w in first] == [w["want_id"] for w in second]
    listed = json_of(client.get("/api/v1/wants", params={"prefix": "daily/date=2024-03-01"}))
    roots = [w for w in listed["wants"] if w["parent_want_id"] == ""]
    assert [w["want_id"] for w in roots] == [first[0]["want_id"]]


def test_one_request_many_refs(client: httpx.Client) -> None:
    refs = ["raw/date=2024-04-01", "raw/date=2024-04-02", "daily/date=2024-04-03"]
    wants = create_wants(client, *refs)
    assert [w["partition_ref"] for w in wants] == refs
    assert len({w["want_id"] for w in wants}) == 3
    for w in wants:
        assert wait_for_want(client, w["want_id"])["status"] == "satisfied"


def test_want_fields_use_proto_names_and_deadlines_count_from_data_time(
    client: httpx.Client,
) -> None:
    (w,) = create_wants(
        client,
        "raw/date=2024-05-01",
        data_date="2024-05-01",
        sla_seconds=3600,
        ttl_seconds=86400 * 365 * 50,
        source="cli",
    )
    assert set(w) >= {
        "want_id",
        "root_want_id",
        "parent_want_id",
        "partition_ref",
        "data_timestamp",
        "ttl_seconds",
        "sla_seconds",
        "source",
        "status",
        "sla_deadline",
        "expires_at",
        "job_run_ids",
        "child_want_ids",
    }
    assert w["data_timestamp"] == 1714521600  # 2024-05-01T00:00:00Z
    assert w["sla_deadline"] == 1714521600 + 3600
    assert w["expires_at"] == 1714521600 + 86400 * 365 * 50
    assert w["source"] == "cli"
    assert w["root_want_id"] == w["want_id"]
    # the same ref with another data time or source is another want
    (other,) = create_wants(client, "raw/date=2024-05-01", data_date="2024-05-02")
    assert other["want_id"] != w["want_id"]


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("daily/date=2024-01-01\x00", "NUL"),
        ("daily/date=2024-01-01\n", ""),
        ("daily/\x1b[31mred", ""),
        ("daily/../../etc/passwd", ".."),
        ("-rf", "'-'"),
        ("", ""),
        ("   ", ""),
        ("daily/date=2024-01-01; rm -rf /", ""),
        ("/abs/path", ""),
        ("x" * 5000, ""),
    ],
)
def test_bad_refs_are_refused_and_nothing_is_written(
    client: httpx.Client, ref: str, says: str
) -> None:
    before = json_of(client.get("/healthz"))["last_sequence"]
    response = client.post("/api/v1/wants", json={"partition_refs": ["raw/date=2024-06-01", ref]})
    if response.status_code == 200:
        # a ref the grammar allows but no job builds fails at once with a clear message
        (_, want) = response.json()["wants"]
        assert want["status"] == "failed" and "no job builds" in want["message"]
        return
    message = error_of(response, 422)
    assert "partition_refs[1]" in message
    assert says in message
    assert wanted_since(client, before) == []


def test_html_in_a_ref_is_never_built_and_comes_back_as_data(client: httpx.Client) -> None:
    ref = "<script>alert(1)</script>/x=1"
    response = client.post("/api/v1/wants", json={"partition_refs": [ref]})
    if response.status_code == 422:
        assert "partition_refs[0]" in response.json()["error"]
        return
    (want,) = response.json()["wants"]
    assert want["status"] == "failed" and "no job builds" in want["message"]
    assert response.headers["content-type"].startswith("application/json")


def test_more_than_10k_refs_is_refused(client: httpx.Client) -> None:
    refs = [f"raw/date=2024-01-01/n={i}" for i in range(10_001)]
    message = error_of(client.post("/api/v1/wants", json={"partition_refs": refs}), 422)
    assert "partition_refs" in message


def test_body_over_one_mib_is_413(client: httpx.Client) -> None:
    body = json.dumps({"partition_refs": ["raw/date=2024-01-01"], "pad": "x" * (1 << 20)})
    error_of(
        client.post("/api/v1/wants", content=body, headers={"content-type": "application/json"}),
        413,
    )


def test_body_over_one_mib_without_length_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"partition_refs": ["'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"]}'

    error_of(
        client.post(
            "/api/v1/wants", content=chunks(), headers={"content-type": "application/json"}
        ),
        413,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"partition_refs": "raw/date=2024-01-01"}, "partition_refs"),
        ({"partition_refs": [1, 2]}, "partition_refs.0"),
        ({"partition_refs": []}, "partition_refs"),
        ({}, "partition_refs"),
        ({"partition_refs": ["raw/date=2024-01-01"], "sla_seconds": "soon"}, "sla_seconds"),
        ({"partition_refs": ["raw/date=2024-01-01"], "ttl_seconds": -5}, "ttl_seconds"),
        ({"partition_refs": ["raw/date=2024-01-01"], "data_timestamp": 1.5}, "data_timestamp"),
        ({"partition_refs": ["raw/date=2024-01-01"], "source": "derived"}, "source"),
        ({"partition_refs": ["raw/date=2024-01-01"], "colour": "blue"}, "colour"),
        ({"partition_refs": ["raw/date=2024-01-01"], "data_date": "yesterday-ish"}, "data"),
        (
            {
                "partition_refs": ["raw/date=2024-01-01"],
                "data_date": "2024-01-01",
                "data_timestamp": 0,
            },
            "data_timestamp",
        ),
        ([], "request"),
        ("just a string", "request"),
    ],
)
def test_wrong_types_and_unknown_fields_are_422_naming_the_field(
    client: httpx.Client, body: object, field: str
) -> None:
    message = error_of(client.post("/api/v1/wants", json=body), 422)
    assert field in message


def test_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/wants", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "JSON" in error_of(response, 422)


# ---- GET /api/v1/wants ----------------------------------------------------------------------
def test_list_filters(client: httpx.Client, api: Api) -> None:
    summary_id = api.summary["want_id"]
    tree = json_of(client.get("/api/v1/wants", params={"root_want_id": summary_id, "limit": 1000}))
    tree_wants = tree["wants"]
    assert tree_wants[0]["want_id"] == summary_id
    assert all(w["root_want_id"] == summary_id for w in tree_wants)
    assert {w["partition_ref"].split("/")[0] for w in tree_wants} == {
        "summary",
        "weekly",
        "daily",
        "raw",
    }
    assert all(w["source"] == "derived" for w in tree_wants[1:])

    daily = json_of(client.get("/api/v1/wants", params={"prefix": "daily/", "limit": 1000}))
    assert daily["wants"] and all(w["partition_ref"].startswith("daily/") for w in daily["wants"])

    derived = json_of(client.get("/api/v1/wants", params={"source": "derived", "limit": 1000}))
    assert derived["wants"] and all(w["source"] == "derived" for w in derived["wants"])

    done = json_of(client.get("/api/v1/wants", params={"status": "satisfied", "limit": 1000}))
    assert summary_id in {w["want_id"] for w in done["wants"]}
    assert all(w["status"] == "satisfied" for w in done["wants"])

    two = json_of(client.get("/api/v1/wants", params={"status": "failed,canceled"}))
    assert all(w["status"] in ("failed", "canceled") for w in two["wants"])

    none = json_of(client.get("/api/v1/wants", params={"root_want_id": "w" + "0" * 24}))
    assert none == {"wants": [], "next_cursor": ""}


def test_active_filter_lists_active_wants_only(client: httpx.Client) -> None:
    (held,) = create_wants(client, "hold/id=active-filter")
    active = json_of(client.get("/api/v1/wants", params={"status": "active", "limit": 1000}))
    assert held["want_id"] in {w["want_id"] for w in active["wants"]}
    assert all(
        w["status"] in ("pending", "building", "waiting", "retrying") for w in active["wants"]
    )
    json_of(client.delete(f"/api/v1/wants/{held['want_id']}"))


def test_cursor_pagination_visits_every_want_once(client: httpx.Client) -> None:
    everything = json_of(client.get("/api/v1/wants", params={"limit": 1000}))
    assert everything["next_cursor"] == ""
    seen: list[str] = []
    cursor = ""
    while True:
        page = json_of(client.get("/api/v1/wants", params={"limit": 7, "cursor": cursor}))
        assert len(page["wants"]) <= 7
        seen.extend(w["want_id"] for w in page["wants"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    expected = [w["want_id"] for w in everything["wants"]]
    assert seen[: len(expected)] == expected
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "x" * 300}, "status"),
        ({"root_want_id": "w" * 100}, "root_want_id"),
    ],
)
def test_list_wants_bad_params(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    assert field in error_of(client.get("/api/v1/wants", params=params), 422)


# ---- GET/DELETE /api/v1/wants/{id} ----------------------------------------------------------
def test_want_detail_has_timeline_children_and_runs(client: httpx.Client, api: Api) -> None:
    detail = json_of(client.get(f"/api/v1/wants/{api.summary['want_id']}"))
    assert detail["want"]["status"] == "satisfied"
    types = [e["type"] for e in detail["timeline"]]
    assert types[0] == "want_created" and types[-1] == "want_satisfied"
    sequences = [e["sequence"] for e in detail["timeline"]]
    assert sequences == sorted(sequences)
    assert {c["partition_ref"] for c in detail["children"]} == {
        "weekly/week=2024-W01",
        "weekly/week=2024-W02",
    }
    assert [r["status"] for r in detail["job_runs"]] == ["missing_deps", "succeeded"]
    first = detail["timeline"][0]
    assert first["want_created"]["want"]["want_id"] == api.summary["want_id"]


@pytest.mark.parametrize("want_id", ["nope", "w" + "0" * 24, "..", "%3Cb%3E"])
def test_unknown_want_is_404(client: httpx.Client, want_id: str) -> None:
    error_of(client.get(f"/api/v1/wants/{want_id}"), 404)
    error_of(client.delete(f"/api/v1/wants/{want_id}"), 404)


def test_cancel_stops_the_run_only_it_needed(client: httpx.Client) -> None:
    (held,) = create_wants(client, "hold/id=cancel-me")
    building = wait_for_want(client, held["want_id"], frozenset({"building"}))
    (run_id,) = building["job_run_ids"]
    canceled = json_of(client.delete(f"/api/v1/wants/{held['want_id']}"))
    assert canceled["status"] == "canceled"
    assert want_of(client, held["want_id"])["status"] == "canceled"
    run = json_of(client.get(f"/api/v1/job-runs/{run_id}"))
    assert run["status"] == "canceled"
    # cancelling again changes nothing and is not an error
    assert json_of(client.delete(f"/api/v1/wants/{held['want_id']}"))["status"] == "canceled"


def test_cancel_keeps_work_another_want_needs(client: httpx.Client) -> None:
    (first,) = create_wants(client, "hold/id=shared", data_date="2024-01-01")
    (second,) = create_wants(client, "hold/id=shared", data_date="2024-01-02")
    assert first["want_id"] != second["want_id"]
    json_of(client.delete(f"/api/v1/wants/{first['want_id']}"))
    # both wants share one build of the partition; it goes on for the other want
    assert want_of(client, second["want_id"])["status"] == "building"
    part = json_of(client.get("/api/v1/partitions/hold/id=shared"))
    assert part["status"] == "building" and part["want_ids"] == [second["want_id"]]
    run = json_of(client.get(f"/api/v1/job-runs/{part['job_run_id']}"))
    assert run["status"] in ("queued", "running")
    json_of(client.delete(f"/api/v1/wants/{second['want_id']}"))


def test_failing_job_leaves_its_want_retrying(client: httpx.Client) -> None:
    (want,) = create_wants(client, "flaky/id=1")
    retrying = wait_for_want(client, want["want_id"], frozenset({"retrying"}))
    part = json_of(client.get("/api/v1/partitions/flaky/id=1"))
    assert part["status"] == "backoff" and part["failures"] == 1 and part["retry_at"] > 0
    (run_id,) = retrying["job_run_ids"]
    run = json_of(client.get(f"/api/v1/job-runs/{run_id}"))
    assert run["status"] == "failed" and run["failure_kind"] == "exit_nonzero"
    assert run["exit_code"] == 1
    log = client.get(f"/api/v1/job-runs/{run_id}/log")
    assert "flaky fails on purpose" in log.text


# ---- partitions -------------------------------------------------------------------------------
def test_partitions_list_and_filters(client: httpx.Client) -> None:
    everything = json_of(client.get("/api/v1/partitions", params={"limit": 1000}))["partitions"]
    refs = {p["partition_ref"] for p in everything}
    assert {"summary/all", "weekly/week=2024-W01", "daily/date=2024-01-08"} <= refs
    live = json_of(client.get("/api/v1/partitions", params={"status": "live", "limit": 1000}))
    assert all(p["status"] == "live" for p in live["partitions"])
    weekly = json_of(client.get("/api/v1/partitions", params={"prefix": "weekly/"}))
    assert [p["partition_ref"] for p in weekly["partitions"]] == [
        "weekly/week=2024-W01",
        "weekly/week=2024-W02",
    ]
    assert all(p["job_name"] == "weekly" for p in weekly["partitions"])
    page = json_of(client.get("/api/v1/partitions", params={"limit": 2}))
    assert len(page["partitions"]) == 2 and page["next_cursor"]
    rest = json_of(
        client.get("/api/v1/partitions", params={"limit": 2, "cursor": page["next_cursor"]})
    )
    assert not {p["partition_ref"] for p in page["partitions"]} & {
        p["partition_ref"] for p in rest["partitions"]
    }


def test_partitions_by_ref_answers_exactly_those(client: httpx.Client) -> None:
    asked = ["summary/all", "daily/date=1999-01-01", "weekly/week=2024-W02"]
    found = json_of(client.get("/api/v1/partitions", params={"ref": asked}))["partitions"]
    assert [(p["partition_ref"], p["status"]) for p in found] == [
        ("summary/all", "live"),
        ("daily/date=1999-01-01", "absent"),
        ("weekly/week=2024-W02", "live"),
    ]
    bad = client.get("/api/v1/partitions", params={"ref": ["summary/all", "../etc"]})
    assert "ref[1]" in error_of(bad, 422)


def test_one_partition_with_slashes_in_its_ref(client: httpx.Client) -> None:
    part = json_of(client.get("/api/v1/partitions/daily/date=2024-01-03"))
    assert part["partition_ref"] == "daily/date=2024-01-03"
    assert part["status"] == "live" and part["job_name"] == "clean" and part["job_run_id"]
    absent = json_of(client.get("/api/v1/partitions/daily/date=1990-01-01"))
    assert absent["status"] == "absent"
    error_of(client.get("/api/v1/partitions/daily/..%2F..%2Fsecret"), 422)
    error_of(client.get("/api/v1/partitions/-x"), 422)


# ---- job runs ---------------------------------------------------------------------------------
def test_job_runs_list_detail_and_log(client: httpx.Client, api: Api) -> None:
    runs = json_of(client.get("/api/v1/job-runs", params={"limit": 1000}))["job_runs"]
    assert runs
    queued = [r["queued_at"] for r in runs]
    assert queued == sorted(queued, reverse=True)  # newest first
    summary_runs = json_of(client.get("/api/v1/job-runs", params={"job": "summary"}))["job_runs"]
    assert {r["job_name"] for r in summary_runs} == {"summary"}
    ok = json_of(client.get("/api/v1/job-runs", params={"status": "succeeded", "limit": 1000}))
    assert ok["job_runs"] and all(r["status"] == "succeeded" for r in ok["job_runs"])

    missing = next(r for r in summary_runs if r["status"] == "missing_deps")
    detail = json_of(client.get(f"/api/v1/job-runs/{missing['job_run_id']}"))
    assert detail["missing"] == [
        {
            "partition_ref": "summary/all",
            "missing_refs": ["weekly/week=2024-W01", "weekly/week=2024-W02"],
        }
    ]
    log = client.get(f"/api/v1/job-runs/{missing['job_run_id']}/log")
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("text/plain")
    size = int(log.headers["x-log-next-offset"])
    assert size == len(log.content)
    tail = client.get(f"/api/v1/job-runs/{missing['job_run_id']}/log", params={"offset": size})
    assert tail.text == "" and tail.headers["x-log-next-offset"] == str(size)
    if size > 4:
        part = client.get(
            f"/api/v1/job-runs/{missing['job_run_id']}/log", params={"offset": 2, "limit": 2}
        )
        assert part.content == log.content[2:4]

    page = json_of(client.get("/api/v1/job-runs", params={"limit": 1}))
    assert page["next_cursor"] == page["job_runs"][0]["job_run_id"]


def test_job_runs_bad_input(client: httpx.Client) -> None:
    error_of(client.get("/api/v1/job-runs/r99999999"), 404)
    error_of(client.get("/api/v1/job-runs/r99999999/log"), 404)
    error_of(client.get("/api/v1/job-runs/..%2F..%2Fetc/log"), 404)
    error_of(client.get("/api/v1/job-runs", params={"cursor": "zzz"}), 422)
    run_id = json_of(client.get("/api/v1/job-runs"))["job_runs"][0]["job_run_id"]
    error_of(client.get(f"/api/v1/job-runs/{run_id}/log", params={"offset": -1}), 422)
    error_of(client.get(f"/api/v1/job-runs/{run_id}/log", params={"offset": 2**70}), 422)
    error_of(client.get(f"/api/v1/job-runs/{run_id}/log", params={"limit": 0}), 422)


# ---- events -----------------------------------------------------------------------------------
def test_events_after_limit_and_filters(client: httpx.Client, api: Api) -> None:
    first = json_of(client.get("/api/v1/events", params={"limit": 5}))
    assert [e["sequence"] for e in first["events"]] == [1, 2, 3, 4, 5]
    assert first["last_sequence"] == 5
    for event in first["events"]:
        assert event["type"] in event  # the payload sits under the key named by type
    nxt = json_of(client.get("/api/v1/events", params={"after": 5, "limit": 3}))
    assert [e["sequence"] for e in nxt["events"]] == [6, 7, 8]

    created = all_events(client, types="want_created")
    assert created and {e["type"] for e in created} == {"want_created"}
    both = all_events(client, types="partition_live,want_satisfied")
    assert {e["type"] for e in both} == {"partition_live", "want_satisfied"}

    weekly = all_events(client, partition="weekly/week={week}", types="partition_live")
    # the two weeks may be built by parallel runs: either may go live first
    assert sorted(e["partition_live"]["partition_ref"] for e in weekly) == [
        "weekly/week=2024-W01",
        "weekly/week=2024-W02",
    ]
    # last_sequence moves past events the filter drops, so a follower never rescans them
    last = json_of(client.get("/healthz"))["last_sequence"]
    tail = json_of(client.get("/api/v1/events", params={"types": "want_created", "after": last}))
    assert tail == {"events": [], "last_sequence": last}


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"types": "want_created,nonsense"}, "nonsense"),
        ({"partition": "daily/{"}, "must start a field"),
        ({"after": -1}, "after"),
        ({"after": 2**70}, "after"),  # beyond a 64-bit sequence: a 422, not an overflow
        ({"limit": 0}, "limit"),
        ({"wait": 61}, "wait"),
        ({"wait": "forever"}, "wait"),
    ],
)
def test_events_bad_params(client: httpx.Client, params: dict[str, Any], says: str) -> None:
    assert says in error_of(client.get("/api/v1/events", params=params), 422)


def test_long_poll_returns_when_an_event_arrives(client: httpx.Client, api: Api) -> None:
    last = json_of(client.get("/healthz"))["last_sequence"]
    result: dict[str, Any] = {}

    def poll() -> None:
        # the longest wait the API allows; the client gives up well before it
        with client_for(api.url, timeout=30) as c:
            result["page"] = json_of(
                c.get(
                    "/api/v1/events",
                    params={"after": last, "wait": 60, "types": "want_created"},
                )
            )

    thread = threading.Thread(target=poll)
    thread.start()
    create_wants(client, "raw/date=2024-07-04")
    thread.join()
    page = result["page"]
    refs = [e["want_created"]["want"]["partition_ref"] for e in page["events"]]
    assert refs == ["raw/date=2024-07-04"]


def test_wait_without_new_events_returns_empty(client: httpx.Client) -> None:
    last = json_of(client.get("/healthz"))["last_sequence"]
    page = json_of(client.get("/api/v1/events", params={"after": last + 10**6, "wait": 0.05}))
    assert page["events"] == []


def _read_sse(
    client: httpx.Client, headers: dict[str, str], until: int, **params: Any
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) from the SSE stream until an event with id >= ``until``."""
    out: list[tuple[int, str, dict[str, Any]]] = []
    with client.stream("GET", "/api/v1/events/stream", headers=headers, params=params) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in stream.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "id" in fields:
                out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                if out[-1][0] >= until:
                    return out
            fields = {}
    raise AssertionError("the stream ended")


def test_sse_stream_resumes_with_last_event_id(client: httpx.Client) -> None:
    last = json_of(client.get("/healthz"))["last_sequence"]
    first = _read_sse(client, {}, until=10)
    assert [i for i, _, _ in first] == list(range(1, 11))
    for sequence, kind, data in first:
        assert data["sequence"] == sequence and data["type"] == kind and kind in data

    # resume from 10: everything after it, once, including events written meanwhile
    (new,) = create_wants(client, "raw/date=2024-08-08")
    wait_for_want(client, new["want_id"])
    now = json_of(client.get("/healthz"))["last_sequence"]
    assert now > last
    resumed = _read_sse(client, {"Last-Event-ID": "10"}, until=now)
    assert [i for i, _, _ in resumed] == list(range(11, now + 1))
    assert any(
        kind == "want_created" and data[kind]["want"]["partition_ref"] == "raw/date=2024-08-08"
        for _, kind, data in resumed
    )


def test_sse_stream_filters_and_waits_for_new_events(client: httpx.Client, api: Api) -> None:
    last = json_of(client.get("/healthz"))["last_sequence"]
    got: list[tuple[int, str, dict[str, Any]]] = []

    def follow() -> None:
        with client_for(api.url) as c:
            got.extend(_read_sse(c, {}, until=last + 1, after=last, types="want_created"))

    thread = threading.Thread(target=follow)
    thread.start()
    create_wants(client, "raw/date=2024-09-09")
    thread.join()
    assert [(kind, data[kind]["want"]["partition_ref"]) for _, kind, data in got] == [
        ("want_created", "raw/date=2024-09-09")
    ]


def test_sse_bad_input(client: httpx.Client) -> None:
    error_of(client.get("/api/v1/events/stream", headers={"Last-Event-ID": "ten"}), 422)
    error_of(client.get("/api/v1/events/stream", params={"types": "bogus"}), 422)
    error_of(client.get("/api/v1/events/stream", params={"after": -3}), 422)
    error_of(client.get("/api/v1/events/stream", headers={"Last-Event-ID": str(2**70)}), 422)


# ---- graph, health, OpenAPI ------------------------------------------------------------------
def test_graph(client: httpx.Client) -> None:
    graph = json_of(client.get("/api/v1/graph"))
    assert graph["name"] == "calendar"
    jobs = {j["name"]: j for j in graph["jobs"]}
    assert {"ingest", "clean", "weekly", "summary"} <= set(jobs)
    assert jobs["weekly"]["outputs"] == ["weekly/week={week}"]
    assert jobs["ingest"]["command"] == ["python", "jobs/ingest.py"]
    assert graph["upstreams"] == []


def test_healthz(client: httpx.Client) -> None:
    health = json_of(client.get("/healthz"))
    assert health["status"] == "ok" and health["graph"] == "calendar"
    assert health["last_sequence"] > 0 and health["message"] == ""
    assert isinstance(health["active_wants"], int)
    assert isinstance(health["running_job_runs"], int)


def test_openapi_document_lists_every_route(client: httpx.Client) -> None:
    doc = json_of(client.get("/openapi.json"))
    paths = set(doc["paths"])
    assert {
        "/api/v1/wants",
        "/api/v1/wants/{want_id}",
        "/api/v1/partitions",
        "/api/v1/partitions/{ref}",
        "/api/v1/job-runs",
        "/api/v1/job-runs/{job_run_id}",
        "/api/v1/job-runs/{job_run_id}/log",
        "/api/v1/events",
        "/api/v1/events/stream",
        "/api/v1/graph",
        "/healthz",
    } <= paths


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/nothing"), ("PUT", "/api/v1/wants"), ("PATCH", "/api/v1/wants/x")],
)
def test_unknown_routes_and_methods_are_4xx(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code in (404, 405)
    assert response.json()["error"]


# ---- security -------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "10.0.0.1", "localhost.evil"])
def test_host_header_beyond_loopback_is_421(client: httpx.Client, host: str) -> None:
    for method, path in [("GET", "/healthz"), ("GET", "/api/v1/wants"), ("POST", "/api/v1/wants")]:
        response = client.request(
            method, path, headers={"Host": host}, json={"partition_refs": ["raw/date=2024-01-01"]}
        )
        assert "not allowed" in error_of(response, 421)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_host_names_are_allowed(client: httpx.Client, host: str) -> None:
    port = httpx.URL(str(client.base_url)).port
    assert client.get("/healthz", headers={"Host": f"{host}:{port}"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_writes_are_403(client: httpx.Client, headers: dict[str, str]) -> None:
    before = json_of(client.get("/healthz"))["last_sequence"]
    body = {"partition_refs": ["raw/date=2024-10-10"]}
    error_of(client.post("/api/v1/wants", json=body, headers=headers), 403)
    error_of(client.delete("/api/v1/wants/whatever", headers=headers), 403)
    assert wanted_since(client, before) == []
    # reads stay open: a page can't read them anyway without CORS
    assert client.get("/api/v1/wants", headers=headers).status_code == 200


def test_same_origin_write_is_allowed(client: httpx.Client) -> None:
    origin = str(client.base_url).rstrip("/")
    response = client.post(
        "/api/v1/wants",
        json={"partition_refs": ["raw/date=2024-11-11"]},
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 200
