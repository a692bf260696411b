"""Floods and exhaustion (issue 14.5): what a real ``databuild serve`` survives.

Each test runs a real service on a free port in its own folder, with real job processes:
- a job writing 1 GB to stdout and stderr: the service's memory stays bounded, its run
  log on disk is capped, the run ends normally, and the API answers meanwhile;
- a job that starts 10,000 children and then runs past its timeout, or is canceled:
  the whole process group is killed, no child survives, the run says why;
- a result file of 100 MB: the run fails as a bad result naming the file and the limit;
- the service with a low file-descriptor limit flooded with connections: the excess gets
  503 at once, the service goes on, and a job that cannot be spawned for want of file
  descriptors fails retryably (and is built once descriptors are free again);
- many simultaneous clients of the SSE event stream: memory stays bounded and a POST
  still answers.

Figures (RSS, latencies) are printed (``pytest -s``); tests assert bounds, never times.
Every wait has a deadline: a guard against a hang, not an expectation.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

DEADLINE = 120.0
Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]  # tests/conftest.py's
TERMINAL = {"succeeded", "failed", "missing_deps", "canceled"}
CHILDREN = 10_000
MiB = 1 << 20

GRAPH = """
[graph]
name = "floods"

[executor]
max_parallel = 4

# 1 GiB: 1 MiB lines, alternately on stdout and stderr.
[jobs.chatter]
outputs = ["chatter/{n}"]
command = ["python", "-c", '''
import sys
line = b"x" * (1024 * 1024 - 1) + b"\\n"
for i in range(1024):
    (sys.stdout if i % 2 else sys.stderr).buffer.write(line)
''']
retries = 0

# 10,000 children in the run's process group (posix_spawn, no shell), then waits.
[jobs.forker]
outputs = ["forker/{n}"]
command = ["python", "-c", '''
import os, pathlib, sys, time
for _ in range({children}):
    os.posix_spawn("/bin/sleep", ["sleep", "3600"], os.environ)
ready = pathlib.Path("forker-" + sys.argv[1].split("/")[1] + ".ready")
ready.write_text(str(os.getpgrp()))
print("started", {children}, "children", flush=True)
time.sleep(3600)
''']
retries = 0
timeout = "{fork_timeout}s"

# A result file of 100 MiB, written in 1 MiB blocks.
[jobs.hoard]
outputs = ["hoard/{n}"]
command = ["python", "-c", '''
import os
with open(os.environ["DATABUILD_RESULT_PATH"], "wb") as result:
    for _ in range(100):
        result.write(b" " * (1024 * 1024))
''']
retries = 0

[jobs.quick]
outputs = ["quick/{n}"]
command = ["python", "-c", "pass"]
retries = 3
retry_backoff = "1s"
retry_backoff_max = "2s"
"""


# -- helpers ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies (a zombie is dead: it only
    waits for its parent, here init, to reap it)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def want(http: httpx.Client, ref: str) -> str:
    reply = http.post("/api/v1/wants", json={"partition_refs": [ref]})
    assert reply.status_code == 200, reply.text
    want_id: str = reply.json()["wants"][0]["want_id"]
    return want_id


def runs_of(http: httpx.Client, job: str) -> list[dict[str, Any]]:
    reply = http.get("/api/v1/job-runs", params={"job": job, "limit": 1000})
    assert reply.status_code == 200, reply.text
    runs: list[dict[str, Any]] = reply.json()["job_runs"]
    return runs


def wait_run(
    http: httpx.Client, job: str, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for run in runs_of(http, job):
            if done(run):
                return run
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ended(run: dict[str, Any]) -> bool:
    return run["status"] in TERMINAL


def timed(
    call: Callable[..., httpx.Response], *args: Any, **kwargs: Any
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    reply = call(*args, **kwargs)
    return time.perf_counter() - started, reply


def assert_no_traceback(graph: Path) -> None:
    log = (graph / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("floods")
    (root / "databuild.toml").write_text(
        GRAPH.replace("{children}", str(CHILDREN)).replace("{fork_timeout}", "20")
    )
    return root


@pytest.fixture(scope="module")
def service(
    graph: Path, launch_service: Launcher, job_env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """One service for the job floods: each must leave it serving the next."""
    proc, url = launch_service(graph, env=job_env)
    with httpx.Client(base_url=url, timeout=30) as http:
        yield proc, http
    stop_process(proc)
    assert_no_traceback(graph)


# -- a job's output, children and result --------------------------------------------------


def test_a_job_writing_1_gb_to_stdout_and_stderr(
    service: tuple[subprocess.Popen[bytes], httpx.Client],
) -> None:
    proc, http = service
    before = rss_kib(proc.pid)
    want(http, "chatter/1")
    peak, api_latencies, n = before, [], 0
    deadline = time.monotonic() + DEADLINE
    while True:
        runs = runs_of(http, "chatter")
        if runs and ended(runs[0]):
            run = runs[0]
            break
        assert time.monotonic() < deadline, "timed out waiting for the chatter run"
        peak = max(peak, rss_kib(proc.pid))
        latency, reply = timed(http.post, "/api/v1/wants", json={"partition_refs": [f"quick/{n}"]})
        assert reply.status_code == 200, reply.text
        api_latencies.append(latency)
        n += 1
        time.sleep(0.05)
    after = rss_kib(proc.pid)
    assert run["status"] == "succeeded", run
    size = int(
        http.get(f"/api/v1/job-runs/{run['job_run_id']}/log", params={"limit": 1}).headers[
            "X-Log-Size"
        ]
    )
    print(
        f"\n1 GiB of output in {run['duration_seconds']:.1f} s: service RSS {before} KiB before, "
        f"peak {peak} KiB, {after} KiB after; log on disk {size} bytes; {len(api_latencies)} "
        f"POST /api/v1/wants meanwhile, slowest {max(api_latencies) * 1000:.0f} ms"
    )
    assert peak - before < 64 * 1024, "the service's memory grew with the job's output"
    assert size < 2 * MiB + 4096, "the run log is not capped"
    assert len(api_latencies) >= 1


def start_forker(graph: Path, http: httpx.Client, n: int) -> tuple[str, dict[str, Any], int]:
    """Wants forker/n; returns the want, its run once all children are started, and the
    run's process group with how many live members it had then."""
    want_id = want(http, f"forker/{n}")
    ready = graph / f"forker-{n}.ready"
    deadline = time.monotonic() + DEADLINE
    while not ready.exists() or not ready.read_text():
        assert time.monotonic() < deadline, "the forker did not start its children"
        time.sleep(0.1)
    pgid = int(ready.read_text())
    run = wait_run(http, "forker", lambda r: f"forker/{n}" in r["partition_refs"], "the run")
    assert run["pid"] == pgid, "the run is not the leader of its own process group"
    return want_id, run, len(live_group_members(pgid))


def wait_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 30
    while live_group_members(pgid):
        assert time.monotonic() < deadline, f"{len(live_group_members(pgid))} children survive"
        time.sleep(0.1)


def test_a_job_with_10000_children_past_its_timeout(
    graph: Path, service: tuple[subprocess.Popen[bytes], httpx.Client]
) -> None:
    _, http = service
    _, run, members = start_forker(graph, http, 1)
    assert members > CHILDREN, members
    run = wait_run(
        http, "forker", lambda r: r["job_run_id"] == run["job_run_id"] and ended(r), "the timeout"
    )
    print(f"\n{members} processes in the group; the run ended: {run['message'][:120]}")
    assert (run["status"], run["failure_kind"]) == ("failed", "timeout"), run
    assert "ran past its timeout of 20 s, so its process group was killed" in run["message"]
    assert live_group_members(run["pid"]) == [], "children outlived their run"
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text


def test_a_job_with_10000_children_canceled(
    graph: Path, service: tuple[subprocess.Popen[bytes], httpx.Client]
) -> None:
    proc, http = service
    want_id, run, members = start_forker(graph, http, 2)
    assert members > CHILDREN, members
    reply = http.delete(f"/api/v1/wants/{want_id}")
    assert reply.status_code == 200, reply.text
    run = wait_run(
        http, "forker", lambda r: r["job_run_id"] == run["job_run_id"] and ended(r), "the cancel"
    )
    assert run["status"] == "canceled", run
    wait_group_gone(run["pid"])
    after = rss_kib(proc.pid)
    print(f"\ncanceled with {members} processes in the group; service RSS {after} KiB")


def test_a_result_file_of_100_mb(
    service: tuple[subprocess.Popen[bytes], httpx.Client],
) -> None:
    proc, http = service
    before = rss_kib(proc.pid)
    want(http, "hoard/1")
    run = wait_run(http, "hoard", ended, "the hoard run")
    after = rss_kib(proc.pid)
    print(f"\n100 MiB result: service RSS {before} KiB before, {after} KiB after; {run['message']}")
    assert (run["status"], run["failure_kind"]) == ("failed", "bad_result"), run
    assert re.fullmatch(
        rf"the result file /\S+/{run['job_run_id']}/result\.json is {100 * MiB} bytes, "
        rf"larger than the limit of {MiB} bytes; .*",
        run["message"],
    ), run["message"]
    assert after - before < 32 * 1024
    assert http.get("/healthz").json()["status"] == "ok"
