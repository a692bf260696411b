"""The calendar example's jobs: their pure logic, imported from the job files, and a run of
all four as real processes (with the real SDK) against a stand-in for the graph service."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from databuild.config import load_config
from databuild.core.model import JobSpec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calendar"


def job_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"calendar_job_{name}", EXAMPLE / "jobs" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep __pycache__ out of the example
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


ingest = job_module("ingest")
clean = job_module("clean")
weekly = job_module("weekly")
summary = job_module("summary")


# --- pure logic ------------------------------------------------------------------------------


def test_iso_week_is_monday_to_sunday() -> None:
    days = weekly.week_dates("2024-W01")

    assert days[0] == date(2024, 1, 1)
    assert days[-1] == date(2024, 1, 7)
    assert [d.isoweekday() for d in days] == [1, 2, 3, 4, 5, 6, 7]
    # The first ISO week of 2021 starts in 2021-01-04; 2020 has 53 weeks, ending in 2021.
    assert weekly.week_dates("2021-W01")[0] == date(2021, 1, 4)
    assert weekly.week_dates("2020-W53") == [date(2020, 12, 28 + i) for i in range(4)] + [
        date(2021, 1, 1 + i) for i in range(3)
    ]
    assert weekly.input_refs("2024-W01")[0] == "daily/date=2024-01-01"


@pytest.mark.parametrize(
    ("week", "words"),
    [
        ("2024-W53", "ISO year 2024 has no week 53"),
        ("2024-W00", "has no week 0"),
        ("2024-1", "not an ISO week"),
        ("2024-W1", "not an ISO week"),
    ],
)
def test_bad_weeks_are_rejected(week: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        weekly.parse_ref(f"weekly/week={week}")


def test_range_to_weeks() -> None:
    assert summary.weeks_in_range(date(2024, 1, 1), 7) == ["2024-W01"]
    assert summary.weeks_in_range(date(2024, 1, 1), 8) == ["2024-W01", "2024-W02"]
    assert summary.weeks_in_range(date(2024, 1, 7), 2) == ["2024-W01", "2024-W02"]
    year = summary.weeks_in_range(date(2024, 1, 1), 365)  # ends Monday 2024-12-30
    assert (year[0], year[-1], len(year)) == ("2024-W01", "2025-W01", 53)
    assert summary.weeks_in_range(date(2021, 1, 1), 3) == ["2020-W53"]


def test_calendar_range_from_environment() -> None:
    assert summary.calendar_range({}) == (date(2024, 1, 1), 365)
    assert summary.calendar_range({"CALENDAR_DAYS": "30"}) == (date(2024, 1, 1), 30)
    for bad in ({"CALENDAR_DAYS": "0"}, {"CALENDAR_DAYS": "-3"}, {"CALENDAR_START": "2024-13-01"}):
        with pytest.raises(ValueError, match="CALENDAR_"):
            summary.calendar_range(bad)


@pytest.mark.parametrize(
    ("module", "ref", "words"),
    [
        (ingest, "raw/date=2024-02-30", "not a real calendar date"),
        (ingest, "raw/date=2024-1-1", "not a raw partition"),
        (ingest, "daily/date=2024-01-01", "not a raw partition"),
        (clean, "daily/date=20240101", "not a daily partition"),
    ],
)
def test_bad_dates_are_rejected(module: ModuleType, ref: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        module.parse_ref(ref)


def test_synthetic_readings_are_deterministic_and_clean_totals_them() -> None:
    day = date(2024, 1, 1)
    raw = ingest.synthetic_readings(day)

    assert raw == ingest.synthetic_readings(day)
    assert raw != ingest.synthetic_readings(date(2024, 1, 2))
    assert len(raw["readings"]) == 24
    daily = clean.clean_readings(raw)
    kept = [r["wh"] for r in raw["readings"] if r["wh"] is not None]
    assert daily["total_wh"] == sum(kept)
    assert daily["dropped"] == 24 - len(kept)
    assert daily["readings"][0]["at"].startswith("2024-01-01T")


def test_weekly_and_summary_totals_add_up() -> None:
    days = weekly.week_dates("2024-W01")
    dailies = [clean.clean_readings(ingest.synthetic_readings(d)) for d in days]
    week = weekly.weekly_totals("2024-W01", dailies)

    assert week["total_wh"] == sum(d["total_wh"] for d in dailies)
    with pytest.raises(ValueError, match="needs the days"):
        weekly.weekly_totals("2024-W01", dailies[:6])
    total = summary.summary_totals(date(2024, 1, 1), 7, [week])
    assert total["weeks"] == ["2024-W01"]
    assert total["total_wh"] == week["total_wh"]
    assert total["end"] == "2024-01-07"


# --- the jobs as processes -----------------------------------------------------------------


class Graph:
    """A stand-in for the graph service: which partitions are live, served the way the SDK
    asks (GET /api/v1/partitions?ref=...), and a driver that runs jobs until a ref is live."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.live: set[str] = set()
        self.data_dir = data_dir
        self.env = env
        self.config = load_config(EXAMPLE / "databuild.toml", environ=env)
        self.runs: list[tuple[str, list[str]]] = []
        self.url = ""

    def statuses(self, refs: list[str]) -> dict[str, Any]:
        return {
            "partitions": [
                {"partition_ref": r, "status": "live" if r in self.live else "absent"} for r in refs
            ]
        }

    def run(self, job: JobSpec, refs: list[str], result: Path) -> subprocess.CompletedProcess[str]:
        self.runs.append((job.name, refs))
        env = {
            **os.environ,
            **self.env,
            **dict(job.env),
            "DATABUILD_GRAPH_URL": self.url,
            "DATABUILD_RESULT_PATH": str(result),
            "CALENDAR_DATA_DIR": str(self.data_dir),
        }
        command = [sys.executable if part == "python" else part for part in job.command]
        return subprocess.run(
            [*command, *refs], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60
        )

    def build(self, targets: list[str], tmp: Path) -> None:
        todo = list(targets)
        for round_number in range(20):
            todo = list(dict.fromkeys(r for r in todo if r not in self.live))
            if not todo:
                return
            needed: list[str] = []
            by_job: dict[str, list[str]] = {}
            for ref in todo:
                job = self.config.graph.route(ref).job
                assert job is not None, ref
                by_job.setdefault(job.name, []).append(ref)
            for name, refs in by_job.items():
                job = self.config.graph.job(name)
                for start in range(0, len(refs), job.max_batch):
                    batch = refs[start : start + job.max_batch]
                    result = tmp / f"result-{round_number}-{name}-{start}.json"
                    done = self.run(job, batch, result)
                    assert done.returncode == 0, done.stderr
                    missing = json.loads(result.read_text())["missing"] if result.exists() else {}
                    self.live.update(r for r in batch if r not in missing)
                    needed += [i for inputs in missing.values() for i in inputs]
            todo = needed + todo
        raise AssertionError(f"not built after 20 rounds: {todo}")


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[Graph]:
    stand_in = Graph(tmp_path / "data", {"CALENDAR_START": "2024-01-01", "CALENDAR_DAYS": "10"})

    class Partitions(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            refs = parse_qs(urlsplit(self.path).query).get("ref", [])
            body = json.dumps(stand_in.statuses(refs)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Partitions)
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_summary_builds_from_nothing(graph: Graph, tmp_path: Path) -> None:
    graph.build(["summary/all"], tmp_path)

    data = tmp_path / "data"
    result = json.loads((data / "summary" / "all.json").read_text())
    assert result["weeks"] == ["2024-W01", "2024-W02"]
    assert (result["start"], result["end"], result["days"]) == ("2024-01-01", "2024-01-10", 10)
    raws = sorted(p.name for p in (data / "raw").iterdir())
    assert raws == [f"date=2024-01-{d:02d}.json" for d in range(1, 15)]
    expected = sum(
        clean.clean_readings(ingest.synthetic_readings(d))["total_wh"]
        for w in result["weeks"]
        for d in weekly.week_dates(w)
    )
    assert result["total_wh"] == expected
    assert not list(data.rglob("*.tmp"))
    # Missing inputs are discovered level by level, and each level is built in one batch.
    assert [name for name, _ in graph.runs].count("ingest") == 1


@pytest.mark.slow
def test_rebuilding_gives_identical_files(graph: Graph, tmp_path: Path) -> None:
    job = graph.config.graph.job("ingest")
    path = tmp_path / "data" / "raw" / "date=2024-03-01.json"
    assert graph.run(job, ["raw/date=2024-03-01"], tmp_path / "r1.json").returncode == 0
    first = path.read_bytes()
    assert graph.run(job, ["raw/date=2024-03-01"], tmp_path / "r2.json").returncode == 0

    assert path.read_bytes() == first


@pytest.mark.slow
@pytest.mark.parametrize(
    ("job_name", "ref", "words"),
    [
        ("ingest", "raw/date=2024-02-30", "is not a real calendar date"),
        ("clean", "daily/date=yesterday", "is not a daily partition"),
        ("weekly", "weekly/week=2024-W53", "ISO year 2024 has no week 53"),
        ("summary", "summary/some", "this job builds only summary/all"),
    ],
)
def test_malformed_refs_fail_clearly(
    graph: Graph, tmp_path: Path, job_name: str, ref: str, words: str
) -> None:
    result = tmp_path / "result.json"
    done = graph.run(graph.config.graph.job(job_name), [ref], result)

    assert done.returncode == 1
    failed = json.loads(result.read_text())["failed"]
    assert words in failed["message"]
    assert failed["retryable"] is False
