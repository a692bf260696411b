"""Issue 16 row 2 through the real CLI: a batch of three regions, one of which has no input
file, built by `databuild build` with real job processes (cold and warm) and a real SQLite
log (and PostgreSQL when DATABUILD_TEST_POSTGRES_URL is set). East and west are built and
live; north fails alone, with its own message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

DATABUILD = str(Path(sys.executable).with_name("databuild"))
REGIONS = ("east", "west", "north")
POSTGRES_URL = os.environ.get("DATABUILD_TEST_POSTGRES_URL")

pytestmark = pytest.mark.slow

JOB = '''\
"""Job trips: builds trips/region=R, the number of trips in data/raw/R.csv."""

from pathlib import Path

from databuild import sdk


def build(ref: str) -> None:
    region = ref.removeprefix("trips/region=")
    source = Path("data/raw") / f"{region}.csv"
    if not source.exists():
        sdk.fail(f"no input file {source} for {ref}")
    trips = len(source.read_text().splitlines()) - 1
    output = Path("data/trips") / f"region={region}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(f'{{"region": "{region}", "trips": {trips}}}')


if __name__ == "__main__":
    sdk.run(build)
'''


def make_graph(directory: Path, *, warm: bool, storage: str = "") -> Path:
    (directory / "jobs").mkdir(parents=True)
    (directory / "jobs" / "trips.py").write_text(JOB)
    (directory / "databuild.toml").write_text(
        textwrap.dedent(
            f"""\
            [graph]
            name = "trips"

            [jobs.trips]
            outputs = ["trips/region={{region}}"]
            command = ["python", "jobs/trips.py"]
            max_batch = 8
            concurrency = 1   # so that the three regions go in one run
            retries = 2
            warm = {"true" if warm else "false"}
            timeout = "1m"
            """
        )
        + storage
    )
    raw = directory / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "east.csv").write_text("trip\n1\n2\n3\n")
    (raw / "west.csv").write_text("trip\n1\n")
    return directory


def run_cli(graph: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DATABUILD, *args],
        cwd=graph,
        env={k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def postgres_storage() -> Iterator[str]:
    assert POSTGRES_URL is not None
    schema = f"batch_{uuid.uuid4().hex[:12]}"
    yield f'\n[storage]\nurl = "{POSTGRES_URL}?schema={schema}"\n'
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_one_bad_region_fails_alone_in_a_batch(tmp_path: Path, warm: bool) -> None:
    graph = make_graph(tmp_path / "trips", warm=warm)
    one_bad_region_fails_alone(graph)
    assert (graph / ".databuild" / "bel.sqlite").exists()


@pytest.mark.skipif(
    POSTGRES_URL is None, reason="PostgreSQL tests need DATABUILD_TEST_POSTGRES_URL"
)
def test_one_bad_region_fails_alone_in_a_batch_on_postgres(
    tmp_path: Path, postgres_storage: str
) -> None:
    graph = make_graph(tmp_path / "trips", warm=True, storage=postgres_storage)
    one_bad_region_fails_alone(graph)
    assert not (graph / ".databuild" / "bel.sqlite").exists()


def one_bad_region_fails_alone(graph: Path) -> None:
    refs = [f"trips/region={r}" for r in REGIONS]

    built = run_cli(graph, "--json", "build", *refs)
    assert built.returncode == 1, built.stdout + built.stderr
    result = json.loads(built.stdout)
    assert result["ok"] is False
    status = {w["partition_ref"]: (w["status"], w.get("message", "")) for w in result["wants"]}
    assert status["trips/region=east"] == ("satisfied", "")
    assert status["trips/region=west"] == ("satisfied", "")
    north_status, north_message = status["trips/region=north"]
    assert north_status == "failed"
    assert north_message == (
        "job trips failed after 1 attempt(s): "
        "no input file data/raw/north.csv for trips/region=north"
    )

    # the outputs that could be built were, once, in one run with north
    assert json.loads((graph / "data/trips/region=east.json").read_text())["trips"] == 3
    assert json.loads((graph / "data/trips/region=west.json").read_text())["trips"] == 1
    assert not (graph / "data/trips/region=north.json").exists()
    runs = json.loads(run_cli(graph, "--json", "runs").stdout)["job_runs"]
    assert len(runs) == 1, runs
    (run,) = runs
    assert sorted(run["partition_refs"]) == sorted(refs)
    assert run["status"] == "failed"
    assert run["message"] == (
        "1 of 3 outputs failed: trips/region=north: "
        "no input file data/raw/north.csv for trips/region=north"
    )

    parts = run_cli(graph, "--json", "partitions", "--prefix", "trips/")
    assert parts.returncode == 0, parts.stderr
    by_ref = {p["partition_ref"]: p["status"] for p in json.loads(parts.stdout)["partitions"]}
    assert by_ref == {
        "trips/region=east": "live",
        "trips/region=west": "live",
        "trips/region=north": "failed",
    }

    # north's input arrives: asking again builds north alone, east and west stay as built
    (graph / "data/raw/north.csv").write_text("trip\n1\n2\n")
    again = run_cli(graph, "--json", "build", *refs)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["runs"] == 1
    runs = json.loads(run_cli(graph, "--json", "runs").stdout)["job_runs"]
    latest = max(runs, key=lambda r: r["job_run_id"])
    assert latest["partition_refs"] == ["trips/region=north"]
    assert latest["status"] == "succeeded"
    assert json.loads((graph / "data/trips/region=north.json").read_text())["trips"] == 2


BAD_JOB = """\
import json, os, sys
with open(os.environ["DATABUILD_RESULT_PATH"], "w") as f:
    json.dump({"failed": {"trips/region=mars": {"message": "x"}}}, f)
"""


def test_a_bad_per_output_entry_fails_the_run_with_its_file_and_field(tmp_path: Path) -> None:
    graph = make_graph(tmp_path / "trips", warm=False)
    (graph / "jobs" / "trips.py").write_text(BAD_JOB)
    built = run_cli(graph, "--json", "build", "trips/region=east", "trips/region=west")
    assert built.returncode == 1, built.stdout + built.stderr
    assert "Traceback" not in built.stdout + built.stderr
    wants = json.loads(built.stdout)["wants"]
    assert [w["status"] for w in wants] == ["failed", "failed"]
    for want in wants:
        assert want["message"] == (
            "job trips failed after 1 attempt(s): result file: 'failed' names the output "
            "'trips/region=mars', which this run was not asked to build (it was asked for "
            "'trips/region=east', 'trips/region=west') (the job exited with code 0)"
        )
    # the service kept going: the next build works once the job is fixed
    (graph / "jobs" / "trips.py").write_text(JOB)
    again = run_cli(graph, "--json", "build", "trips/region=east", "trips/region=west")
    assert again.returncode == 0, again.stdout + again.stderr
