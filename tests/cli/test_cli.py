"""The ``databuild`` command line as a real subprocess against a real running service.

One ``databuild serve`` per module on a calendar copy (8 days) plus a ``hold`` job whose
runs sleep until canceled; ``summary/all`` is built once up front. Bad input must exit 2
(an unknown id or an unreachable service: 1) with one ``error:`` line on stderr and no
traceback.
"""

from __future__ import annotations

import json
import selectors
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]
HOLD_JOB = """
[jobs.hold]
outputs = ["hold/id={id}"]
command = ["python", "-c", "import time; time.sleep(3600)"]
timeout = "2h"
"""
GUARD_SECONDS = 120.0


@dataclass(frozen=True)
class Cli:
    """Runs ``databuild`` in the graph directory, against the service at ``url``."""

    exe: Path
    directory: Path
    url: str
    env: dict[str, str]

    def run(self, *args: str, code: int = 0, url: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.exe), *(["--url", self.url] if url else []), *args]
        done = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
        )
        assert done.returncode == code, f"{argv} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def run_all(self, *argvs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Several invocations at once (each takes most of a second to start)."""
        procs = [
            (
                argv,
                subprocess.Popen(
                    [str(self.exe), "--url", self.url, *argv],
                    cwd=self.directory,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for argv in argvs
        ]
        done = []
        for argv, proc in procs:
            out, err = proc.communicate(timeout=GUARD_SECONDS)
            assert "Traceback" not in err, (argv, err)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        return done

    def json(self, *args: str, url: bool = True) -> Any:
        return json.loads(self.run("--json", *args, url=url).stdout)


def assert_one_line_error(
    done: subprocess.CompletedProcess[str], *says: str, code: int = 2
) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for text in says:
        assert text in lines[0]


@pytest.fixture(scope="module")
def cli(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> Iterator[Cli]:
    directory = calendar_factory()
    config = directory / "databuild.toml"
    config.write_text(config.read_text() + HOLD_JOB)
    proc, url = launch_service(directory)
    runner = Cli(databuild_bin, directory, url, job_env)
    result = runner.json("build", "summary/all")
    assert result["ok"] is True
    yield runner
    proc.terminate()
    proc.wait(timeout=30)


# ---- want -----------------------------------------------------------------------------------
def test_want_create_is_idempotent_and_prints_a_table(cli: Cli) -> None:
    first = cli.json("want", "create", "raw/date=2024-02-01", "raw/date=2024-02-02")
    again = cli.json("want", "create", "raw/date=2024-02-01", "raw/date=2024-02-02")
    ids = [w["want_id"] for w in first["wants"]]
    assert ids == [w["want_id"] for w in again["wants"]] and len(set(ids)) == 2
    assert {w["source"] for w in first["wants"]} == {"cli"}
    human = cli.run("want", "create", "raw/date=2024-02-01").stdout
    assert "WANT" in human and "raw/date=2024-02-01" in human and ids[0] in human


def test_want_create_options(cli: Cli) -> None:
    (want,) = cli.json(
        "want",
        "create",
        "raw/date=2024-02-03",
        "--data-date",
        "2024-02-03",
        "--sla",
        "9h",
        "--ttl",
        "36500d",  # a TTL counts from the data date: 30d would expire at once (refused)
    )["wants"]
    assert want["data_timestamp"] == 1706918400
    assert want["sla_seconds"] == 9 * 3600 and want["ttl_seconds"] == 36500 * 86400
    assert want["sla_deadline"] == 1706918400 + 9 * 3600


def test_want_list_filters(cli: Cli) -> None:
    everything = cli.json("want", "list", "--limit", "1000")["wants"]
    summary = next(w for w in everything if w["partition_ref"] == "summary/all")
    tree = cli.json("want", "list", "--root", summary["want_id"], "--limit", "1000")["wants"]
    assert tree[0]["want_id"] == summary["want_id"] and len(tree) > 10
    assert all(w["root_want_id"] == summary["want_id"] for w in tree)
    weekly = cli.json("want", "list", "--prefix", "weekly/")["wants"]
    assert weekly and all(w["partition_ref"].startswith("weekly/") for w in weekly)
    derived = cli.json("want", "list", "--source", "derived", "--limit", "1000")["wants"]
    assert derived and all(w["source"] == "derived" for w in derived)
    human = cli.run("want", "list", "--prefix", "summary/", "--status", "satisfied").stdout
    assert "summary/all" in human and "satisfied" in human


def test_want_status(cli: Cli) -> None:
    listed = httpx.get(f"{cli.url}/api/v1/wants", params={"prefix": "summary/"}).json()
    summary = listed["wants"][0]
    detail = cli.json("want", "status", summary["want_id"])
    assert detail["want"]["status"] == "satisfied"
    assert detail["timeline"][0]["type"] == "want_created"
    human = cli.run("want", "status", summary["want_id"]).stdout
    assert "timeline" in human and "child wants" in human and "job runs" in human


def test_want_cancel(cli: Cli) -> None:
    (want,) = cli.json("want", "create", "hold/id=cli-cancel")["wants"]
    assert want["status"] in ("pending", "building")
    canceled = cli.json("want", "cancel", want["want_id"])
    assert canceled["status"] == "canceled"
    assert "canceled" in cli.run("want", "cancel", want["want_id"]).stdout


# ---- partitions, runs, events, graph --------------------------------------------------------
def test_partitions(cli: Cli) -> None:
    found = cli.json("partitions", "--prefix", "weekly/", "--status", "live")["partitions"]
    assert [p["partition_ref"] for p in found] == ["weekly/week=2024-W01", "weekly/week=2024-W02"]
    exact = cli.json("partitions", "summary/all", "daily/date=1999-01-01")["partitions"]
    assert [(p["partition_ref"], p["status"]) for p in exact] == [
        ("summary/all", "live"),
        ("daily/date=1999-01-01", "absent"),
    ]
    human = cli.run("partitions", "--prefix", "summary/").stdout
    assert "PARTITION" in human and "summary/all" in human and "live" in human


def test_runs_show_and_log(cli: Cli) -> None:
    runs = cli.json("runs", "--limit", "1000")["job_runs"]
    assert runs and {r["job_name"] for r in runs} >= {"ingest", "clean", "weekly", "summary"}
    (missing,) = cli.json("runs", "--job", "summary", "--status", "missing_deps")["job_runs"]
    assert missing["missing"][0]["partition_ref"] == "summary/all"
    human = cli.run("runs", "show", missing["job_run_id"]).stdout
    assert "summary/all misses weekly/week=2024-W01" in human
    log = cli.run("runs", "log", missing["job_run_id"]).stdout
    api_log = httpx.get(f"{cli.url}/api/v1/job-runs/{missing['job_run_id']}/log").text
    assert log == api_log
    followed = cli.run("runs", "log", "--follow", missing["job_run_id"]).stdout
    assert followed == api_log


def test_events(cli: Cli) -> None:
    lines = cli.run("--json", "events", "--limit", "5").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["sequence"] for e in events] == [1, 2, 3, 4, 5]
    created = [
        json.loads(line)
        for line in cli.run("--json", "events", "--types", "want_created").stdout.splitlines()
    ]
    assert created and {e["type"] for e in created} == {"want_created"}
    weekly = cli.run(
        "--json", "events", "--partition", "weekly/week={week}", "--types", "partition_live"
    ).stdout.splitlines()
    assert len(weekly) == 2
    human = cli.run("events", "--after", "3", "--limit", "1").stdout
    assert human.startswith("#4 ")


def test_events_follow_prints_new_events(cli: Cli) -> None:
    last = httpx.get(f"{cli.url}/healthz").json()["last_sequence"]
    argv = [str(cli.exe), "--url", cli.url, "--json", "events", "--follow"]
    argv += ["--after", str(last), "--types", "want_created"]
    proc = subprocess.Popen(
        argv, cwd=cli.directory, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        cli.run("want", "create", "raw/date=2024-03-03")
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(GUARD_SECONDS), "events --follow printed nothing"
        event = json.loads(proc.stdout.readline())
        assert event["type"] == "want_created"
        assert event["want_created"]["want"]["partition_ref"] == "raw/date=2024-03-03"
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_graph(cli: Cli) -> None:
    view = cli.json("graph")
    assert view["name"] == "calendar"
    assert {j["name"] for j in view["jobs"]} >= {"ingest", "clean", "weekly", "summary"}
    text = cli.run("graph").stdout
    assert "job weekly: weekly/week={week}" in text
    mermaid = cli.run("graph", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "job summary" in mermaid


# ---- build ----------------------------------------------------------------------------------
def test_build_goes_through_the_running_service(cli: Cli) -> None:
    # no --url: the CLI finds the service through .databuild/service.json
    done = cli.run("build", "daily/date=2024-03-10", url=False)
    assert "satisfied" in done.stdout and "daily/date=2024-03-10" in done.stdout
    wants = httpx.get(f"{cli.url}/api/v1/wants", params={"prefix": "daily/date=2024-03-10"}).json()[
        "wants"
    ]
    assert [(w["source"], w["status"]) for w in wants] == [("cli", "satisfied")]


def test_build_starts_an_embedded_service_when_none_runs(
    calendar_dir: Path, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    alone = Cli(databuild_bin, calendar_dir, "", job_env)
    result = alone.json("build", "summary/all", url=False)
    assert result["ok"] is True and result["runs"] > 0
    assert [w["status"] for w in result["wants"]] == ["satisfied"]
    summary = json.loads((calendar_dir / "data" / "summary" / "all.json").read_text())
    assert summary["days"] == 8
    assert not (calendar_dir / ".databuild" / "service.json").exists()
    # again: nothing to do, no job runs
    assert alone.json("build", "summary/all", url=False)["runs"] == 0
    # reads work without a service (a read-only view of the log); writes need one
    listed = alone.json("want", "list", "--prefix", "summary/")["wants"]
    assert [w["status"] for w in listed] == ["satisfied"]
    assert_one_line_error(
        alone.run("want", "create", "raw/date=2024-01-01", url=False, code=1),
        "no DataBuild service is running",
        code=1,
    )
    # a build that fails exits 1
    failed = alone.run("build", "nothing/builds=this", url=False, code=1)
    assert "failed" in failed.stdout and "no job builds" in failed.stdout


# ---- bad input ------------------------------------------------------------------------------
BAD_INPUT: list[tuple[tuple[str, ...], str]] = [
    (("want", "create", "../etc/passwd"), ".."),
    (("want", "create", "raw/date=2024-01-01\x1b[31m"), "invalid partition ref"),
    (("want", "create", "--", "-rf"), "'-'"),
    (("want", "create", "raw/date=2024-01-01", "--sla", "soon"), "--sla"),
    (("want", "create", "raw/date=2024-01-01", "--data-date", "someday"), "someday"),
    (("build", "raw/date=2024-01-01", "--sla", "tomorrow-ish"), "--sla"),
    (("partitions", "daily/../x"), ".."),
    (("events", "--types", "bogus"), "unknown event type"),
]


UNKNOWN_IDS: list[tuple[tuple[str, ...], str]] = [
    (("want", "status", "no-such-want"), "no want with id"),
    (("runs", "show", "r99999999"), "no job run"),
]


def test_bad_input_exits_2_with_one_error_line(cli: Cli) -> None:
    results = cli.run_all(*(args for args, _ in BAD_INPUT))
    for (args, says), done in zip(BAD_INPUT, results, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done, says)


def test_unknown_ids_exit_1_with_one_error_line(cli: Cli) -> None:
    """An unknown want or run is an operation that failed, not a usage error."""
    results = cli.run_all(*(args for args, _ in UNKNOWN_IDS))
    for (_args, says), done in zip(UNKNOWN_IDS, results, strict=True):
        assert_one_line_error(done, says, code=1)


def test_unreachable_service_and_usage_errors(cli: Cli) -> None:
    unreachable = Cli(cli.exe, cli.directory, "http://127.0.0.1:9", cli.env)
    (down,) = unreachable.run_all(("want", "list"))
    assert_one_line_error(down, "cannot reach the service", code=1)
    usage = cli.run_all(("want", "create"), ("graph", "--format", "png"))
    for done in usage:
        assert done.returncode == 2 and "Usage:" in done.stderr, done.stderr
    version, helped = cli.run_all(("--version",), ("--help",))
    assert version.returncode == 0 and "databuild" in version.stdout
    assert helped.returncode == 0 and "want" in helped.stdout
