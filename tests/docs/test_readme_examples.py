"""The README's job example works as written: its databuild.toml loads, and its Python job,
run by the real executor, reports its input missing until the input is live."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from databuild.config import load_config
from databuild.core.model import JobRunId
from databuild.core.outcomes import RunFinishedReport, RunMissingDeps, RunOutcome, RunSucceeded
from databuild.core.refs import parse_ref
from databuild.executors import LocalExecutor, RunRequest

README = Path(__file__).resolve().parents[2] / "README.md"
LIVE: set[str] = set()


def block(language: str) -> str:
    found = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)
    assert len(found) == 1, f"README should have one {language} block"
    return str(found[0])


class _Liveness(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the one route a job uses
        refs = parse_qs(urlparse(self.path).query).get("ref", [])
        body = json.dumps(
            {
                "partitions": [
                    {"partition_ref": r, "status": "live" if r in LIVE else "absent"} for r in refs
                ]
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def graph_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Liveness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    LIVE.clear()


def run(request: RunRequest) -> RunOutcome:
    async def scenario() -> RunOutcome:
        reports: list[object] = []
        executor = LocalExecutor(1)
        executor.set_reporter(reports.append)
        try:
            await executor.start(request)
            while not any(isinstance(r, RunFinishedReport) for r in reports):
                await asyncio.sleep(0.01)
        finally:
            await executor.close()
        return next(r.outcome for r in reports if isinstance(r, RunFinishedReport))

    return asyncio.run(scenario())


def test_the_readme_job_and_config_work_as_written(tmp_path: Path, graph_url: str) -> None:
    (tmp_path / "databuild.toml").write_text(block("toml"))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "clean.py").write_text(block("python"))
    config = load_config(tmp_path / "databuild.toml", {})
    job = config.graph.job("clean")
    assert job.builds("daily/date=2024-01-01") and job.max_batch == 64

    def request(run_id: str) -> RunRequest:
        return RunRequest(
            JobRunId(run_id),
            job,
            (parse_ref("daily/date=2024-01-01"),),
            graph_url,
            tmp_path,
            config.runs_dir,
        )

    first = run(request("r1"))
    assert isinstance(first, RunMissingDeps)
    assert first.missing[0].missing_refs == ("raw/date=2024-01-01",)
    LIVE.add("raw/date=2024-01-01")
    assert isinstance(run(request("r2")), RunSucceeded)
