"""Exit codes, command by command, through the real ``databuild`` executable.

0 success; 1 the operation failed (a build that did not succeed, an unknown id, an
unreachable service, a storage error); 2 usage or configuration error; 130 interrupted
(docs/cli.md, "Exit codes"). Every command is run against one real ``databuild serve`` on a
calendar copy, and every failure (1 or 2, other than Click's own usage errors) must be one
``error:`` line on stderr without a traceback. ``DATABUILD_CONFIG`` is checked here too, as
the default of ``-c``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple[Any, str]]
GUARD_SECONDS = 120.0
BATCH = 6  # CLI processes at once (the machine is shared)
HOLD_JOB = """
[jobs.hold]
outputs = ["hold/id={id}"]
command = ["python", "-c", "import time; time.sleep(3600)"]
timeout = "2h"
"""
UNREACHABLE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    says: str = ""  # in the one error line (codes 1, 2) or in stdout (code 0)
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    usage: bool = False  # a Click usage error: "Usage:" and "Error:" instead of "error:"


@dataclass(frozen=True)
class Graph:
    exe: Path
    directory: Path
    url: str
    env: dict[str, str]

    def popen(self, case: Case) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.exe), *case.argv],
            cwd=case.cwd or self.directory,
            env={**self.env, **case.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def check(self, cases: list[Case]) -> None:
        failures = []
        for start in range(0, len(cases), BATCH):
            batch = cases[start : start + BATCH]
            procs = [(case, self.popen(case)) for case in batch]
            for case, proc in procs:
                out, err = proc.communicate(timeout=GUARD_SECONDS)
                problem = _problem(case, proc.returncode, out, err)
                if problem:
                    failures.append(f"{' '.join(case.argv)}: {problem}")
        assert not failures, "\n".join(failures)

    def api(self, path: str) -> Any:
        return httpx.get(f"{self.url}{path}", timeout=30).json()


def _problem(case: Case, code: int, out: str, err: str) -> str:
    if code != case.code:
        return f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    if "Traceback" in err:
        return f"traceback: {err}"
    if case.code == 0:
        return "" if case.says in out else f"stdout lacks {case.says!r}: {out}"
    if case.usage:
        return "" if "Usage:" in err and "Error:" in err else f"not a usage error: {err}"
    if case.code == 1 and not err.strip():
        # a build that did not succeed says so on stdout, not as an error line
        return "" if case.says in out else f"stdout lacks {case.says!r}: {out}"
    lines = err.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"not one error line: {err!r}"
    return "" if case.says in lines[0] else f"error line lacks {case.says!r}: {lines[0]}"


@pytest.fixture(scope="module")
def graph(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> Iterator[Graph]:
    directory = calendar_factory()
    config = directory / "databuild.toml"
    config.write_text(config.read_text() + HOLD_JOB)
    proc, url = launch_service(directory)
    yield Graph(databuild_bin, directory, url, job_env)
    proc.terminate()
    proc.wait(timeout=30)


def _ids(graph: Graph) -> tuple[str, str, str]:
    """A satisfied want, a job run, and a want that can be canceled (its run holds)."""
    built = subprocess.run(
        [str(graph.exe), "--url", graph.url, "build", "raw/date=2024-01-01", "-q"],
        cwd=graph.directory,
        env=graph.env,
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
    )
    assert built.returncode == 0, built.stderr
    wants = graph.api("/api/v1/wants?prefix=raw/date=2024-01-01")["wants"]
    runs = graph.api("/api/v1/job-runs?job=ingest")["job_runs"]
    held = httpx.post(
        f"{graph.url}/api/v1/wants",
        json={"partition_refs": ["hold/id=cancel-me"], "source": "api"},
        timeout=30,
    ).json()["wants"][0]
    return wants[0]["want_id"], runs[0]["job_run_id"], held["want_id"]


def test_every_command_exits_0_1_or_2_as_documented(graph: Graph, tmp_path: Path) -> None:
    want_id, run_id, cancelable = _ids(graph)
    u = ("--url", graph.url)
    down = ("--url", UNREACHABLE)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        # init
        Case(("init", str(tmp_path / "new")), 0, "Created"),
        Case(("init", str(tmp_path / "full")), 2, "is not empty"),
        Case(("init",), 2, usage=True),
        # build
        Case((*u, "build", "raw/date=2024-01-01"), 0, "satisfied"),
        Case((*u, "build", "nothing/builds=this"), 1, "no job builds"),
        Case((*u, "build", "daily/../etc"), 2, "'..'"),
        Case((*u, "build", "raw/date=2024-01-01", "--ttl", "forever"), 2, "--ttl"),
        Case((*u, "build"), 2, usage=True),
        # want create / list / status / cancel
        Case((*u, "want", "create", "raw/date=2024-01-02"), 0, "raw/date=2024-01-02"),
        Case((*u, "want", "create", "raw/date=2024-01-02\x1b[31m"), 2, "invalid partition ref"),
        Case((*down, "want", "create", "raw/date=2024-01-02"), 1, "cannot reach the service"),
        Case((*u, "want", "create"), 2, usage=True),
        Case((*u, "want", "list"), 0, want_id),
        Case((*down, "want", "list"), 1, "cannot reach the service"),
        Case((*u, "want", "list", "--source", "nowhere"), 2, usage=True),
        Case((*u, "want", "status", want_id), 0, "satisfied"),
        Case((*u, "want", "status", "no-such-want"), 1, "no want with id"),
        Case((*u, "want", "cancel", cancelable), 0, "canceled"),
        Case((*u, "want", "cancel", "no-such-want"), 1, "no want with id"),
        Case((*u, "want", "cancel"), 2, usage=True),
        # partitions
        Case((*u, "partitions", "raw/date=2024-01-01"), 0, "live"),
        Case((*u, "partitions", "daily/../x"), 2, "'..'"),
        Case((*down, "partitions"), 1, "cannot reach the service"),
        Case((*u, "partitions", "--limit", "0"), 2, usage=True),
        # runs, runs show, runs log
        Case((*u, "runs"), 0, run_id),
        Case((*down, "runs"), 1, "cannot reach the service"),
        Case((*u, "runs", "--limit", "-1"), 2, usage=True),
        Case((*u, "runs", "show", run_id), 0, run_id),
        Case((*u, "runs", "show", "r99999999"), 1, "no job run"),
        Case((*u, "runs", "log", run_id), 0, ""),
        Case((*u, "runs", "log", "r99999999"), 1, "no job run"),
        # events
        Case((*u, "events", "--limit", "3"), 0, "want_created"),
        Case((*u, "events", "--types", "bogus"), 2, "unknown event type"),
        Case((*down, "events"), 1, "cannot reach the service"),
        Case((*u, "events", "--after", "-1"), 2, usage=True),
        # sla
        Case((*u, "sla"), 0, "SLA violations"),
        Case((*down, "sla"), 1, "cannot reach the service"),
        Case((*u, "sla", "sometimes"), 2, usage=True),
        # graph (reads databuild.toml only)
        Case(("graph",), 0, "job hold"),
        Case(("-c", str(tmp_path / "nope.toml"), "graph"), 2, "nope.toml"),
        Case(("graph", "--format", "png"), 2, usage=True),
        # config schema
        Case(("config", "schema"), 0, '"$schema"', cwd=tmp_path),
        Case(("config", "schema", "--strict"), 2, usage=True, cwd=tmp_path),
        # serve: the port of the running service is taken
        Case(("serve", "--port", graph.url.rpartition(":")[2]), 1, "cannot listen"),
        Case(("serve", "--port", "70000"), 2, usage=True),
        # the top level
        Case(("--version",), 0, "databuild"),
        Case(("--no-such-option",), 2, usage=True),
        Case(("no-such-command",), 2, usage=True),
    ]
    graph.check(cases)


def test_configuration_errors_exit_2_and_storage_errors_exit_1(
    graph: Graph, tmp_path: Path
) -> None:
    text = (graph.directory / "databuild.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace("max_batch = 256", 'max_batch = "256"', 1))
    unreachable_db = tmp_path / "pg" / "databuild.toml"
    unreachable_db.parent.mkdir()
    unreachable_db.write_text(
        text + '\n[storage]\nurl = "postgresql://postgres@127.0.0.1:9/nodb?connect_timeout=5"\n'
    )
    for job in (graph.directory / "jobs").iterdir():
        (unreachable_db.parent / "jobs").mkdir(exist_ok=True)
        (unreachable_db.parent / "jobs" / job.name).write_bytes(job.read_bytes())
    pg = unreachable_db.parent
    graph.check(
        [
            Case(("-c", str(broken), "graph"), 2, "jobs.ingest.max_batch"),
            Case(("-c", str(broken), "build", "raw/date=2024-01-01"), 2, "max_batch"),
            Case(("-c", str(broken), "serve"), 2, "max_batch"),
            Case(("-c", str(broken), "want", "list"), 2, "max_batch"),
            Case(("graph",), 2, "databuild.toml", cwd=tmp_path),  # none found
            # the Build Event Log cannot be opened: the operation failed
            Case(("build", "raw/date=2024-01-01"), 1, "PostgreSQL", cwd=pg),
            Case(("want", "list"), 1, "PostgreSQL", cwd=pg),
        ]
    )


def test_databuild_config_is_the_default_of_dash_c(graph: Graph, tmp_path: Path) -> None:
    config = str(graph.directory / "databuild.toml")
    missing = str(tmp_path / "missing" / "databuild.toml")
    graph.check(
        [
            # from a directory without databuild.toml, the variable names the graph
            Case(("graph",), 0, "job hold", cwd=tmp_path, env={"DATABUILD_CONFIG": config}),
            Case(
                ("want", "list", "--prefix", "raw/"),
                0,
                "raw/date=2024-01-01",
                cwd=tmp_path,
                env={"DATABUILD_CONFIG": config},
            ),
            # a wrong variable is a configuration error naming the file
            Case(("graph",), 2, missing, cwd=tmp_path, env={"DATABUILD_CONFIG": missing}),
            # -c wins over the variable
            Case(
                ("-c", config, "graph"),
                0,
                "job hold",
                cwd=tmp_path,
                env={"DATABUILD_CONFIG": missing},
            ),
        ]
    )


def test_a_postgresql_url_without_the_extra_is_one_line_exit_2(
    graph: Graph, tmp_path: Path
) -> None:
    """psycopg hidden from the interpreter (as in a venv without ``databuild[postgres]``;
    tests/e2e/test_wheel.py checks a real one)."""
    (tmp_path / "databuild.toml").write_text(
        (graph.directory / "databuild.toml").read_text()
        + '\n[storage]\nurl = "postgresql://postgres@127.0.0.1:5432/test"\n'
    )
    program = (
        "import sys; sys.modules['psycopg'] = None; sys.argv[0] = 'databuild'\n"
        "from databuild.cli.entry import main; main()"
    )
    for argv in (("build", "raw/date=2024-01-01"), ("want", "list"), ("serve",)):
        done = subprocess.run(
            [sys.executable, "-c", program, *argv],
            cwd=tmp_path,
            env=graph.env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.splitlines() == [
            "error: the PostgreSQL Build Event Log needs the postgres extra (psycopg), which "
            "is not installed: pip install 'databuild[postgres]'"
        ], done.stderr


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_SECONDS  # a guard against a hang
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_ctrl_c_during_a_build_exits_130(graph: Graph) -> None:
    ref = "hold/id=interrupt-me"
    proc = graph.popen(Case(("--url", graph.url, "build", ref), 130))

    def running() -> bool:
        runs = graph.api("/api/v1/job-runs?job=hold&status=running")["job_runs"]
        return any(ref in r["partition_refs"] for r in runs)

    try:
        _wait_for(running, "the held run to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=GUARD_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        wants = graph.api(f"/api/v1/wants?prefix={ref}")["wants"]
        for want in wants:
            httpx.delete(f"{graph.url}/api/v1/wants/{want['want_id']}", timeout=30)
    assert proc.returncode == 130, (out, err)
    # The wants go on in the service: the message says where and how to cancel them.
    assert f"the build goes on in the service at {graph.url}" in " ".join(err.split()), err
    assert "databuild want cancel" in err, err
    assert "Traceback" not in err
