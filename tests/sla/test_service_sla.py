"""Through the real service and CLI: /api/v1/sla/*, /metrics, lifecycle visibility of
expiry and satisfaction in the want's status and timeline, and ``databuild sla``.

The app runs with a FakeClock and a FakeExecutor (``GraphHost(executor=...)``); tests move
the clock and poke the controller through the test client's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from databuild.cli.main import cli
from databuild.config import GraphConfig, load_config
from databuild.core.model import WantRequest, WantSource
from databuild.core.outcomes import RunSucceeded
from databuild.core.refs import parse_ref
from databuild.core.sla import DEFAULT_JOB_SECONDS
from databuild.executors.fake import FakeExecutor
from databuild.log.memory import InMemoryEventLog
from databuild.runtime.clock import FakeClock
from databuild.service.app import create_app
from databuild.service.host import GraphHost

from .helpers import DAY, HOUR, T0

CONFIG = """\
[graph]
name = "slagraph"

[jobs.daily]
outputs = ["daily/date={date}"]
command = ["true"]
concurrency = 1
expected_duration = "30m"
"""


def write_config(directory: Path) -> GraphConfig:
    path = directory / "databuild.toml"
    path.write_text(CONFIG)
    return load_config(path, environ={})


class Service:
    def __init__(
        self, client: TestClient, host: GraphHost, clock: FakeClock, executor: FakeExecutor
    ) -> None:
        self.client = client
        self.host = host
        self.clock = clock
        self.executor = executor

    def poke(self) -> None:
        async def settle() -> None:
            await asyncio.sleep(0)
            assert self.host.controller is not None
            await self.host.controller.poke()

        portal = self.client.portal
        assert portal is not None
        portal.call(settle)

    def want(self, ref: str, **body: Any) -> str:
        response = self.client.post("/api/v1/wants", json={"partition_refs": [ref], **body})
        assert response.status_code == 200, response.text
        want_id: str = response.json()["wants"][0]["want_id"]
        return want_id

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    clock = FakeClock(T0)
    executor = FakeExecutor(4)
    host = GraphHost(
        write_config(tmp_path), clock=clock, event_log=InMemoryEventLog(), executor=executor
    )
    with TestClient(create_app(host)) as client:
        yield Service(client, host, clock, executor)


def test_violations_and_at_risk_through_the_api(service: Service) -> None:
    on_time = service.want("daily/date=2024-01-01", data_timestamp=T0, sla_seconds=DAY)
    late = service.want("daily/date=2024-01-02", data_timestamp=T0, sla_seconds=HOUR)
    risky = service.want("daily/date=2024-01-03", data_timestamp=T0, sla_seconds=HOUR + 1)
    # concurrency 1: the first want runs, the others queue by deadline
    (run,) = service.executor.running
    assert service.executor.running[run].partition_refs == ("daily/date=2024-01-01",)

    at_risk = service.get("/api/v1/sla/at-risk")
    # queued 30 min jobs behind nothing: the predicted finish is now + 30 min, in time
    assert at_risk["at_risk"] == []
    service.clock.set(T0 + 45 * 60)
    at_risk = service.get("/api/v1/sla/at-risk")
    assert [a["want"]["want_id"] for a in at_risk["at_risk"]] == [late, risky]
    first = at_risk["at_risk"][0]
    assert first["predicted_finish"] == T0 + 45 * 60 + 30 * 60
    assert first["slack_seconds"] == -15 * 60
    assert first["ahead"] == [
        {
            "partition_ref": "daily/date=2024-01-02",
            "job_name": "daily",
            "status": "absent",
            "expected_seconds": 1800.0,
        }
    ]
    assert first["blame"]["reason"] == "queued"
    page = service.get("/api/v1/sla/at-risk", limit=1)
    assert [a["want"]["want_id"] for a in page["at_risk"]] == [late]
    page = service.get("/api/v1/sla/at-risk", limit=1, cursor=page["next_cursor"])
    assert [a["want"]["want_id"] for a in page["at_risk"]] == [risky] and page["next_cursor"] == ""

    service.clock.set(T0 + HOUR)
    service.poke()
    violations = service.get("/api/v1/sla/violations")["violations"]
    assert [v["want"]["want_id"] for v in violations] == [late]
    (v,) = violations
    assert v["deadline"] == T0 + HOUR and v["missed_at"] == T0 + HOUR
    assert v["blame_ref"] == "daily/date=2024-01-02"
    assert v["blame"].startswith("queued behind 1 running run(s) of job 'daily'")
    assert v["want"]["sla_missed"] is True
    assert service.get("/api/v1/sla/violations", prefix="other/")["violations"] == []
    assert service.get("/api/v1/sla/violations", source="scheduled")["violations"] == []
    assert on_time not in {
        a["want"]["want_id"] for a in service.get("/api/v1/sla/at-risk")["at_risk"]
    }
    bad = service.client.get("/api/v1/sla/violations", params={"source": "nope"})
    assert bad.status_code == 422 and "unknown source" in bad.json()["error"]


def parse_exposition(text: str) -> dict[str, float]:
    """Sample -> value, read by prometheus_client's own parser (what a scraper accepts)."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type in {"counter", "gauge", "histogram", "summary", "info"}, family
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def test_metrics_include_process_and_python_metrics(service: Service) -> None:
    m = parse_exposition(service.client.get("/metrics").text)
    assert m["process_resident_memory_bytes"] > 0
    assert "process_cpu_seconds_total" in m
    assert any(name.startswith("python_info{") for name in m)
    assert any(name.startswith("python_gc_collections_total{") for name in m)


def test_metrics_in_prometheus_text_format(service: Service) -> None:
    service.want("daily/date=2024-01-01", data_timestamp=T0, sla_seconds=HOUR)
    service.want("daily/date=2024-01-02", data_timestamp=T0, sla_seconds=HOUR)
    (run,) = service.executor.running
    service.clock.advance(120)
    service.executor.finish(run, RunSucceeded(120.0))
    service.poke()
    service.clock.set(T0 + 2 * HOUR)
    service.poke()
    response = service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_exposition(response.text)
    assert m['databuild_wants{status="satisfied"}'] == 1
    assert m['databuild_wants{status="building"}'] == 1
    assert m['databuild_wants{status="expired"}'] == 0
    assert m['databuild_job_runs_total{job="daily",outcome="succeeded"}'] == 1
    assert m['databuild_job_runs_in_flight{job="daily"}'] == 1
    assert m['databuild_job_run_duration_seconds_bucket{job="daily",le="60"}'] == 0
    assert m['databuild_job_run_duration_seconds_bucket{job="daily",le="120"}'] == 1
    assert m['databuild_job_run_duration_seconds_count{job="daily"}'] == 1
    assert m['databuild_ready_partitions{job="daily"}'] == 0
    assert m["databuild_sla_violations_total"] == 1
    assert m["databuild_bel_last_sequence"] == service.host.state.last_sequence
    assert m["databuild_reconcile_step_seconds_count"] >= 3
    assert m['databuild_up{graph="slagraph"}'] == 1


def test_queue_depth_counts_ready_partitions(service: Service) -> None:
    for day in (1, 2, 3):
        service.want(f"daily/date=2024-01-0{day}", data_timestamp=T0)
    m = parse_exposition(service.client.get("/metrics").text)
    assert m['databuild_ready_partitions{job="daily"}'] == 2  # one runs (concurrency 1)


def test_expiry_and_satisfaction_show_in_status_and_timeline(service: Service) -> None:
    done = service.want("daily/date=2024-01-01", data_timestamp=T0, ttl_seconds=2 * DAY)
    doomed = service.want("daily/date=2024-01-02", data_timestamp=T0, ttl_seconds=DAY)
    (run,) = service.executor.running
    service.executor.finish(run, RunSucceeded(10.0))
    service.poke()
    service.clock.set(T0 + DAY)
    service.poke()
    satisfied = service.get(f"/api/v1/wants/{done}")
    assert satisfied["want"]["status"] == "satisfied"
    assert [e["type"] for e in satisfied["timeline"]][-1] == "want_satisfied"
    expired = service.get(f"/api/v1/wants/{doomed}")
    assert expired["want"]["status"] == "expired"
    assert expired["want"]["message"] == "past its TTL"
    assert expired["want"]["expires_at"] == T0 + DAY
    # then the run only it needed is canceled: its runs' events are on its timeline too
    kinds = [e["type"] for e in expired["timeline"]]
    assert kinds[-2:] == ["want_expired", "job_run_canceled"]
    assert expired["timeline"][-2]["timestamp"] == T0 + DAY


# ---- the CLI, over a read-only view of a SQLite log -----------------------------------
def test_cli_shows_sla_violations_at_risk_expiry_and_satisfaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)
    clock = FakeClock(T0)
    executor = FakeExecutor(1)
    host = GraphHost(config, clock=clock, executor=executor)
    ids: dict[str, str] = {}

    async def record() -> None:
        await host.start()
        controller = host.controller
        assert controller is not None
        try:

            def req(ref: str, ttl_seconds: int = 0, sla_seconds: int = 0) -> WantRequest:
                return WantRequest(parse_ref(ref), T0, WantSource.CLI, ttl_seconds, sla_seconds)

            (ids["done"], ids["late"], ids["expired"]) = await controller.create_wants(
                [
                    req("daily/date=2024-01-01"),
                    req("daily/date=2024-01-02", sla_seconds=HOUR),
                    req("daily/date=2024-01-03", ttl_seconds=DAY),
                ]
            )
            # the late want runs first (earliest deadline) and overruns its SLA; the
            # expired one waits behind it past its TTL; then both runs finish
            clock.set(T0 + DAY)
            await controller.poke()
            for _ in range(2):
                (run,) = executor.running
                executor.finish(run, RunSucceeded(10.0))
                await asyncio.sleep(0)
                await controller.poke()
        finally:
            await host.stop()

    asyncio.run(record())
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("DATABUILD_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()

    result = runner.invoke(cli, ["sla", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stderr says no service runs
    assert [v["want"]["want_id"] for v in data["violations"]] == [ids["late"]]
    assert data["violations"][0]["blame_ref"] == "daily/date=2024-01-02"
    assert data["at_risk"] == []  # the late want missed already; none other has an SLA

    result = runner.invoke(cli, ["sla", "violations"])
    assert result.exit_code == 0, result.output
    assert "SLA violations (1)" in result.output and "2024-01-02" in result.output
    assert "at risk" not in result.output

    result = runner.invoke(cli, ["want", "status", ids["expired"]])
    assert result.exit_code == 0, result.output
    assert "expired" in result.output and "want_expired" in result.output
    result = runner.invoke(cli, ["want", "status", ids["done"]])
    assert "satisfied" in result.output and "want_satisfied" in result.output
    result = runner.invoke(cli, ["--json", "want", "list"])
    statuses = {w["want_id"]: w["status"] for w in json.loads(result.stdout)["wants"]}
    assert statuses[ids["expired"]] == "expired" and statuses[ids["done"]] == "satisfied"
    assert DEFAULT_JOB_SECONDS == 60.0  # documented in docs/sla.md
