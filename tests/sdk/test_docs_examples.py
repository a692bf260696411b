"""The Python and shell job examples of docs/jobs.md work as written.

Each fenced block with a ``title="jobs/..."`` info string is written to a temporary graph
root and run through the real LocalExecutor against the liveness stub: with its input
absent it reports the input missing; with the input live it builds the output.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from databuild.core.events import FailureKind, MissingDeps
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import (
    OutputFailed,
    RunFinishedReport,
    RunMissingDeps,
    RunOutcome,
    RunPartial,
    RunSucceeded,
)
from databuild.core.refs import PartitionRef
from databuild.executors import LocalExecutor, RunRequest, parse_result
from databuild.executors.protocol import ReportedOutputs

from .conftest import LivenessStub

DOC = Path(__file__).resolve().parents[2] / "docs" / "jobs.md"
EXAMPLE = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)

OUTPUT = PartitionRef("daily/date=2024-01-01")
INPUT = PartitionRef("raw/date=2024-01-01")
SECOND_OUTPUT = PartitionRef("daily/date=2024-01-02")
SECOND_INPUT = PartitionRef("raw/date=2024-01-02")


def examples() -> dict[str, tuple[str, str]]:
    """title -> (language, code) of every titled block in docs/jobs.md."""
    return {m.group(2): (m.group(1), m.group(3)) for m in EXAMPLE.finditer(DOC.read_text())}


COMMANDS = {"python": ("python",), "sh": ("sh",)}
TITLES = [
    "built result.json",
    "jobs/daily.py",
    "jobs/daily.sh",
    "jobs/trips.py",
    "per-output result.json",
]


def test_the_doc_has_both_examples() -> None:
    found = examples()
    assert sorted(found) == TITLES
    assert found["jobs/daily.py"][0] == "python"
    assert found["jobs/daily.sh"][0] == "sh"
    assert found["jobs/trips.py"][0] == "python"
    assert found["per-output result.json"][0] == "json"
    assert found["built result.json"][0] == "json"  # tests/executors/test_protocol_per_output


def run_example(
    root: Path, title: str, graph_url: str, refs: tuple[PartitionRef, ...], run_id: str
) -> RunOutcome:
    language, code = examples()[title]
    script = root / title
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(code)
    job = JobSpec(
        name="daily", outputs=(), command=(*COMMANDS[language], title), timeout_seconds=60
    )
    request = RunRequest(JobRunId(run_id), job, refs, graph_url, root, root / ".databuild" / "runs")
    finished: list[RunOutcome] = []

    async def scenario() -> None:
        executor = LocalExecutor(1)
        executor.set_reporter(
            lambda r: finished.append(r.outcome) if isinstance(r, RunFinishedReport) else None
        )
        await executor.start(request)
        while not finished:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    return finished[0]


def write_input(root: Path, ref: str, amounts: list[int]) -> None:
    path = root / "data" / f"{ref}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"user{i},{amount}\n" for i, amount in enumerate(amounts))
    path.write_text("user,amount\n" + rows)


# The shell example asks the graph with curl; on a machine without curl it cannot run.
EXAMPLES = [
    "jobs/daily.py",
    pytest.param(
        "jobs/daily.sh",
        marks=pytest.mark.skipif(
            shutil.which("curl") is None, reason="the shell example needs curl"
        ),
    ),
]


@pytest.mark.parametrize("title", EXAMPLES)
def test_an_absent_input_is_reported_missing(
    title: str, tmp_path: Path, liveness: LivenessStub
) -> None:
    outcome = run_example(tmp_path, title, liveness.url, (OUTPUT,), "r00000001")
    assert isinstance(outcome, RunMissingDeps), outcome
    assert outcome.missing == (MissingDeps(OUTPUT, (INPUT,)),)
    assert not (tmp_path / "data" / f"{OUTPUT}.csv").exists()


@pytest.mark.parametrize("title", EXAMPLES)
def test_a_live_input_is_built_from(title: str, tmp_path: Path, liveness: LivenessStub) -> None:
    write_input(tmp_path, INPUT, [10, 20])
    liveness.statuses[INPUT] = "live"
    outcome = run_example(tmp_path, title, liveness.url, (OUTPUT,), "r00000002")
    assert isinstance(outcome, RunSucceeded), outcome
    assert (tmp_path / "data" / f"{OUTPUT}.csv").read_text() == "date,total\n2024-01-01,30\n"
    assert liveness.queries == [[INPUT]]


@pytest.mark.parametrize("title", EXAMPLES)
def test_a_batch_builds_what_it_can_and_reports_the_rest(
    title: str, tmp_path: Path, liveness: LivenessStub
) -> None:
    write_input(tmp_path, SECOND_INPUT, [5])
    liveness.statuses[SECOND_INPUT] = "live"
    refs = (OUTPUT, SECOND_OUTPUT)
    outcome = run_example(tmp_path, title, liveness.url, refs, "r00000003")
    assert isinstance(outcome, RunMissingDeps), outcome
    assert outcome.missing == (MissingDeps(OUTPUT, (INPUT,)),)
    assert (tmp_path / "data" / f"{SECOND_OUTPUT}.csv").read_text() == "date,total\n2024-01-02,5\n"


# ---- per-output failures (issue 16 row 2) -----------------------------------------------

TRIPS = tuple(PartitionRef(f"trips/region={r}") for r in ("east", "west", "north", "south"))


def test_the_trips_batch_job_fails_the_region_without_input_alone(
    tmp_path: Path, liveness: LivenessStub
) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "east.csv").write_text("trip\n1\n2\n")
    (raw / "west.csv").write_text("trip\n1\n")
    east, west, north, _ = TRIPS
    outcome = run_example(tmp_path, "jobs/trips.py", liveness.url, (east, west, north), "r4")
    assert outcome == RunPartial(
        failed=(OutputFailed(north, FailureKind.PERMANENT, "no input file data/raw/north.csv"),),
        missing=(),
        exit_code=0,
        duration_seconds=outcome.duration_seconds,
    )
    built = tmp_path / "data" / "trips"
    assert (built / "region=east.json").read_text() == '{"region": "east", "trips": 2}\n'
    assert (built / "region=west.json").read_text() == '{"region": "west", "trips": 1}\n'
    assert not (built / "region=north.json").exists()
    result = (tmp_path / ".databuild" / "runs" / "r4" / "result.json").read_text()
    documented = re.search(r"it builds east and west and writes\n`(.*?)`", DOC.read_text())
    assert documented is not None and documented.group(1) == result


def test_the_per_output_result_example_means_what_the_doc_says() -> None:
    _, text = examples()["per-output result.json"]
    _, west, north, south = TRIPS
    assert parse_result(text.encode(), TRIPS) == ReportedOutputs(
        failed=(
            OutputFailed(north, FailureKind.PERMANENT, "no input file data/raw/north.csv"),
            OutputFailed(south, FailureKind.EXIT_NONZERO, "warehouse busy"),
        ),
        missing=(MissingDeps(west, (PartitionRef("raw/region=west"),)),),
    )
