"""docs/sla.md, docs/schedules.md and docs/metrics.md: their examples are checked here."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from databuild.cli.sla import sla
from databuild.config import load_config
from databuild.core.data_time import format_timestamp
from databuild.core.model import WantSource
from databuild.core.sla import DEFAULT_JOB_SECONDS, predict
from databuild.core.state import BuildState
from databuild.runtime.scheduler import DEFAULT_CATCH_UP_SECONDS, firing_at
from databuild.service.app import create_app
from databuild.service.host import GraphHost
from databuild.service.metrics import external_families, state_families, upstream_families

from .helpers import DAY, HOUR, T0, Sim, graph, job
from .test_service_sla import parse_exposition, write_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text[text.index(header_start) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace(" UTC", "+00:00")).timestamp()


def test_schedules_doc_config_loads_and_its_table_is_what_the_scheduler_does(
    tmp_path: Path,
) -> None:
    text = (DOCS / "schedules.md").read_text()
    (toml,) = _blocks(text, "toml")
    (tmp_path / "databuild.toml").write_text(toml)
    config = load_config(tmp_path / "databuild.toml", environ={})
    (spec,) = config.schedules
    rows = _table_rows(text, "| firing (UTC)")
    assert len(rows) == 2
    for fired, day, ref, stamp, deadline, expires in rows:
        fire_time = _utc(fired)
        assert (
            spec.next_fire_after(datetime.fromtimestamp(fire_time - 60).astimezone()).timestamp()
            == fire_time
        )
        firing = firing_at(spec, fire_time)
        want = firing.request
        assert (firing.partition_ref, str(want.data_timestamp)) == (ref, str(int(_utc(stamp))))
        assert day in ref
        assert want.data_timestamp + want.sla_seconds == _utc(deadline)
        assert want.data_timestamp + want.ttl_seconds == _utc(expires)
        assert want.source is WantSource.SCHEDULED
    assert "**7 days**" in text and DEFAULT_CATCH_UP_SECONDS == 7 * DAY


def test_sla_doc_default_and_worked_example() -> None:
    text = (DOCS / "sla.md").read_text()
    assert f"**{DEFAULT_JOB_SECONDS:.0f} seconds**" in text
    ((now, deadline, finish, slack),) = _table_rows(text, "| now |")
    sim = Sim(graph(job("daily", "daily/date={date}", expected=30 * 60)), slots=0)
    want_id = sim.want("daily/date=2024-01-01", ts=T0, sla=HOUR)
    prediction = predict(sim.rec.state, want_id, _utc(now))
    assert format_timestamp(prediction.deadline).replace(":00 UTC", " UTC") == deadline
    assert format_timestamp(prediction.predicted_finish).replace(":00 UTC", " UTC") == finish
    assert f"{prediction.slack_seconds:.0f} s" == slack


def test_sla_doc_names_every_route_parameter_and_field(tmp_path: Path) -> None:
    text = (DOCS / "sla.md").read_text()
    app = create_app(GraphHost(write_config(tmp_path)))
    schema = app.openapi()
    for path in ("/api/v1/sla/violations", "/api/v1/sla/at-risk"):
        assert f"`GET {path}`" in text
        for param in schema["paths"][path]["get"]["parameters"]:
            assert f"`{param['name']}" in text, param["name"]
    for model in ("SlaViolation", "AtRiskWant", "ListAtRiskResponse"):
        for field in schema["components"]["schemas"][model]["properties"]:
            assert f"`{field}`" in text, (model, field)


def test_metrics_doc_example_parses_and_every_metric_is_documented() -> None:
    text = (DOCS / "metrics.md").read_text()
    (example,) = _blocks(text, "text")
    parse_exposition(example)
    spec = graph(job("daily", "daily/date={date}"))
    state = BuildState(spec)
    # a counter family is named without _total; its samples (what a user sees) with it
    names = {
        f.name + ("_total" if f.type == "counter" else "") for f in state_families(state, float(T0))
    }
    names |= {
        "databuild_up",
        "databuild_reconcile_step_seconds",
        "databuild_reconcile_last_step_seconds",
        "databuild_events_appended_total",
        "databuild_job_runs_started_total",
        "databuild_storage_up",  # storage faults (docs/operations.md)
        "databuild_storage_retries_total",
        "databuild_event_stream_subscriptions",  # followers of the event stream
    }
    names |= {  # per [externals.NAME]
        f.name + ("_total" if f.type == "counter" else "") for f in external_families(state, (), {})
    }
    no_followers = cast(GraphHost, SimpleNamespace(followers={}))
    names |= {  # per [upstreams.NAME] followed (issue 9)
        f.name + ("_total" if f.type == "counter" else "") for f in upstream_families(no_followers)
    }
    documented = set(re.findall(r"^\| `(databuild_[a-z_]+)`", text, re.M))
    assert documented == names


def test_sla_doc_cli_example_options_exist() -> None:
    text = (DOCS / "sla.md").read_text()
    for option in sla.params:
        for name in getattr(option, "opts", []):
            if name.startswith("--"):
                assert f"`{name}`" in text, name
