"""End to end through the real CLI: `databuild build summary/all` on the calendar example.

Real job processes, a real SQLite file (and a real PostgreSQL server when
DATABUILD_TEST_POSTGRES_URL is set). Checks the output files' contents against values
recomputed independently from the raw inputs, and that a second build runs no job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "calendar"
DATABUILD = str(Path(sys.executable).with_name("databuild"))
POSTGRES_URL = os.environ.get("DATABUILD_TEST_POSTGRES_URL")
DAYS = 17  # 2024-01-01 .. 2024-01-17: ISO weeks W01, W02, W03 (W03 reaches 2024-01-21)

pytestmark = pytest.mark.slow


def run_cli(
    graph: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CALENDAR_DAYS": str(DAYS), **(env or {})}
    return subprocess.run(
        [DATABUILD, *args],
        cwd=graph,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    target = tmp_path / "calendar"
    shutil.copytree(
        EXAMPLE, target, ignore=shutil.ignore_patterns("data", ".databuild", "__pycache__")
    )
    return target


def expected_daily_total(day: dt.date) -> int:
    """Recomputed from the example's documented synthetic-readings rule, not its code."""
    digest = hashlib.sha256(f"calendar/{day.isoformat()}".encode()).digest()
    total = 0
    for hour in range(24):
        level = digest[hour]
        if level >= 21:
            total += 100 + level * 4 + digest[hour + 8] % 10
    return total


def check_outputs(graph: Path) -> None:
    data = graph / "data"
    summary = json.loads((data / "summary" / "all.json").read_text())
    assert summary["weeks"] == ["2024-W01", "2024-W02", "2024-W03"]
    assert summary["days"] == DAYS
    expected_total = 0
    for week in summary["weeks"]:
        weekly = json.loads((data / "weekly" / f"week={week}.json").read_text())
        monday = dt.date.fromisocalendar(2024, int(week[-2:]), 1)
        days = [monday + dt.timedelta(days=i) for i in range(7)]
        week_total = sum(expected_daily_total(d) for d in days)
        assert weekly["total_wh"] == week_total
        assert summary["weekly_total_wh"][week] == week_total
        for day in days:
            daily = json.loads((data / "daily" / f"date={day.isoformat()}.json").read_text())
            raw = json.loads((data / "raw" / f"date={day.isoformat()}.json").read_text())
            kept = [r["wh"] for r in raw["readings"] if r["wh"] is not None]
            assert daily["total_wh"] == sum(kept) == expected_daily_total(day)
        expected_total += week_total
    assert summary["total_wh"] == expected_total


def job_runs(graph: Path) -> list[dict[str, object]]:
    listed = run_cli(graph, "--json", "runs", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    # no service runs now: one line says so, and nothing else is on stderr
    assert listed.stderr.startswith("note: no DataBuild service is running for graph")
    assert listed.stderr.count("\n") == 1
    runs: list[dict[str, object]] = json.loads(listed.stdout)["job_runs"]
    return runs


def build_twice(graph: Path) -> None:
    first = run_cli(graph, "build", "summary/all")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "satisfied" in first.stdout
    assert first.stderr == "", "a successful build writes nothing to stderr"
    check_outputs(graph)
    runs = job_runs(graph)
    assert runs and all(r["status"] in ("succeeded", "missing_deps") for r in runs)
    built = [ref for r in runs if r["status"] == "succeeded" for ref in r["partition_refs"]]  # type: ignore[attr-defined]
    assert len(built) == len(set(built)), "a partition was built twice"
    # 3 weeks x 7 days of raw and daily + 3 weekly + 1 summary
    assert len(built) == 21 + 21 + 3 + 1

    second = run_cli(graph, "--json", "build", "summary/all")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["ok"] is True
    assert result["runs"] == 0
    assert len(job_runs(graph)) == len(runs), "the second build ran a job"


def test_calendar_build_on_sqlite(graph: Path) -> None:
    build_twice(graph)
    assert (graph / ".databuild" / "bel.sqlite").exists()


@pytest.fixture
def postgres_graph(graph: Path) -> Iterator[Path]:
    assert POSTGRES_URL is not None
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    config = graph / "databuild.toml"
    config.write_text(config.read_text() + f'\n[storage]\nurl = "{POSTGRES_URL}?schema={schema}"\n')
    yield graph
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.skipif(
    POSTGRES_URL is None, reason="PostgreSQL tests need DATABUILD_TEST_POSTGRES_URL"
)
def test_calendar_build_on_postgres(postgres_graph: Path) -> None:
    build_twice(postgres_graph)
    assert not (postgres_graph / ".databuild" / "bel.sqlite").exists()


def test_failing_job_fails_the_build_with_a_clear_message(graph: Path) -> None:
    config = graph / "databuild.toml"
    text = config.read_text().replace(
        'command = ["python", "jobs/clean.py"]\nwarm = true',
        'command = ["python", "-c", "import sys; sys.exit(3)"]',
    )
    assert "sys.exit(3)" in text
    config.write_text(
        text.replace("[jobs.clean]", "[jobs.clean]\nretries = 1\nretry_backoff = 0.1")
    )
    result = run_cli(graph, "build", "weekly/week=2024-W01")
    assert result.returncode == 1
    assert "upstream_failed" in result.stdout
    assert "exit" in result.stdout and "3" in result.stdout
    assert "Traceback" not in result.stderr
    runs = job_runs(graph)
    failed = [r for r in runs if r["status"] == "failed"]
    assert failed and all(r["job_name"] == "clean" for r in failed)


def test_unbuildable_partition_fails_at_once(graph: Path) -> None:
    result = run_cli(graph, "build", "nosuch/thing")
    assert result.returncode == 1
    assert "no job builds partition 'nosuch/thing'" in result.stdout.replace("\n", " ")


def test_bad_ref_is_a_clear_error(graph: Path) -> None:
    result = run_cli(graph, "build", "daily/../etc")
    assert result.returncode == 2
    assert "error:" in result.stderr and "'..'" in result.stderr
    assert "Traceback" not in result.stderr


GATE_JOB = """
[jobs.gate]
outputs = ["gate/id={id}"]
command = ["python", "-c", "import os, time\\nwhile not os.path.exists('release'): time.sleep(0.02)"]
"""


def start_gated_build(graph: Path, *args: str) -> subprocess.Popen[str]:
    """``databuild ARGS`` in the background, on the graph plus a job ``gate`` whose runs go
    on until the file ``release`` exists: a build of ``gate/id=1`` stays open until then.
    SIGINT as a terminal's Ctrl-C sends it (a background process may inherit it ignored)."""
    config = graph / "databuild.toml"
    config.write_text(config.read_text() + GATE_JOB)
    return subprocess.Popen(
        [DATABUILD, *args],
        cwd=graph,
        env={**os.environ, "CALENDAR_DAYS": str(DAYS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_other_commands_use_a_running_builds_embedded_service(graph: Path) -> None:
    """The build calls its embedded service in process; the service still serves the full
    HTTP API to other commands (built on first need), found through service.json."""
    build = start_gated_build(graph, "--json", "build", "gate/id=1")
    try:
        listed: dict[str, list[dict[str, str]]] = {"wants": []}
        for _ in range(1500):  # until the build's service is up and its want recorded
            if (graph / ".databuild" / "service.json").exists():
                result = run_cli(graph, "--json", "want", "list")
                assert result.returncode == 0, result.stderr
                listed = json.loads(result.stdout)
                if listed["wants"]:
                    break
            assert build.poll() is None, build.communicate()
            time.sleep(0.02)
        assert [w["partition_ref"] for w in listed["wants"]] == ["gate/id=1"]
        assert listed["wants"][0]["status"] in ("pending", "building")
        created = run_cli(graph, "--json", "want", "create", "raw/date=2024-01-01")
        assert created.returncode == 0, created.stderr
        (graph / "release").touch()
        out, err = build.communicate(timeout=120)
    finally:
        build.kill()
    assert build.returncode == 0, err
    assert json.loads(out)["ok"] is True
    assert err == ""


def _gone_soon(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped counts), within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            return True
        if state in (b"Z", b"X"):
            return True
        time.sleep(0.02)
    return False


def _warm_workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"databuild.warm_worker" in cmdline:
            found.append(int(entry.name))
    return found


def test_ctrl_c_stops_a_build_with_one_line_and_the_next_build_finishes(graph: Path) -> None:
    build = start_gated_build(graph, "build", "gate/id=1", "summary/all")
    try:
        for _ in range(1500):  # until jobs run (the gate job holds the build open)
            if (graph / ".databuild" / "service.json").exists() and _warm_workers_of(build.pid):
                break
            assert build.poll() is None, build.communicate()
            time.sleep(0.02)
        workers = _warm_workers_of(build.pid)
        build.send_signal(signal.SIGINT)
        _, err = build.communicate(timeout=60)
    finally:
        build.kill()
    assert build.returncode == 130
    assert err.startswith("interrupted: the build stopped with its embedded service; ")
    assert err.count("\n") == 1 and "databuild build gate/id=1 summary/all" in err
    assert workers and all(_gone_soon(w) for w in workers), "a warm worker outlived it"
    (graph / "release").touch()
    again = run_cli(graph, "build", "gate/id=1", "summary/all")
    assert again.returncode == 0, again.stderr
    check_outputs(graph)


def runs_per_partition(runs: list[dict[str, object]]) -> dict[str, int]:
    """How many runs each partition was dispatched in (JobRunQueued per partition)."""
    counts: dict[str, int] = {}
    for run in runs:
        for ref in run["partition_refs"]:  # type: ignore[attr-defined]
            counts[ref] = counts.get(ref, 0) + 1
    return counts


def without_hints(graph: Path) -> None:
    config = graph / "databuild.toml"
    text = config.read_text()
    hints = ('inputs = ["raw/date={date}"]\n', 'inputs = ["daily/date={week|iso_week_days}"]\n')
    for hint in hints:  # the example hints clean's input and the week's seven days
        assert hint in text
        text = text.replace(hint, "")
    config.write_text(text)


def test_input_hints_make_a_cold_build_run_each_hinted_partition_once(
    graph: Path, tmp_path: Path
) -> None:
    days = [f"daily/date=2024-01-{d:02d}" for d in range(1, DAYS + 1)]
    built = run_cli(graph, "build", "-q", *days)
    assert built.returncode == 0, built.stdout + built.stderr
    counts = runs_per_partition(job_runs(graph))
    # every raw and daily day in exactly one run: the dailies waited on their hinted raw days
    assert len(counts) == 2 * DAYS
    assert sum(counts.values()) / len(counts) == 1.0
    assert all(r["status"] == "succeeded" for r in job_runs(graph))

    # the whole example: the summary still discovers its inputs (one extra run); the hinted
    # dailies and weeks (a set: the seven days of each) run once
    whole = tmp_path / "whole"
    shutil.copytree(graph, whole, ignore=shutil.ignore_patterns("data", ".databuild"))
    assert run_cli(whole, "build", "-q", "summary/all").returncode == 0
    check_outputs(whole)
    counts = runs_per_partition(job_runs(whole))
    assert len(counts) == 21 + 21 + 3 + 1
    assert {ref: n for ref, n in counts.items() if n != 1} == {"summary/all": 2}
    with_hints = sum(counts.values()) / len(counts)

    # the same build without the hints: every daily and week runs twice (once to learn its
    # inputs). A batch may hold first tries and second tries at once (CI at b48ef66): the
    # SDK says what it built ("built"), so those go live and do not run a third time
    bare = tmp_path / "bare"
    shutil.copytree(graph, bare, ignore=shutil.ignore_patterns("data", ".databuild"))
    without_hints(bare)
    assert run_cli(bare, "build", "-q", "summary/all").returncode == 0
    check_outputs(bare)
    runs = job_runs(bare)
    counts = runs_per_partition(runs)
    rerun = {ref: n for ref, n in counts.items() if ref.startswith(("daily/", "weekly/"))}
    assert len(rerun) == 24 and set(rerun.values()) == {2}, (counts, runs)
    assert (with_hints, sum(counts.values()) / len(counts)) == (47 / 46, 71 / 46)
