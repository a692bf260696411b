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

import contextlib
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from databuild.service.server import DEFAULT_MAX_CONNECTIONS, connection_limit

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

# jobs/chatter.py and jobs/hoard.py (below) in a fresh process each, and in a warm worker.
[jobs.chatter]
outputs = ["chatter/{n}"]
command = ["python", "jobs/chatter.py"]
retries = 0

[jobs.chatter_warm]
outputs = ["chatter_warm/{n}"]
command = ["python", "jobs/chatter.py"]
warm = true
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

# Still starting its 10,000 children (about 1 ms each) when its timeout hits.
[jobs.spawner]
outputs = ["spawner/{n}"]
command = ["python", "-c", '''
import os
for n in range(1, {children} + 1):
    os.posix_spawn("/bin/sleep", ["sleep", "3600"], os.environ)
    if n % 100 == 0:
        print(n, "children started", flush=True)
''']
retries = 0
timeout = "2s"

[jobs.hoard]
outputs = ["hoard/{n}"]
command = ["python", "jobs/hoard.py"]
retries = 0

[jobs.hoard_warm]
outputs = ["hoard_warm/{n}"]
command = ["python", "jobs/hoard.py"]
warm = true
retries = 0

[jobs.quick]
outputs = ["quick/{n}"]
command = ["python", "-c", "pass"]
retries = 3
retry_backoff = "1s"
retry_backoff_max = "2s"
"""

JOBS = {
    # 1 GiB: 1 MiB lines, alternately on stdout and stderr.
    "chatter.py": """
import sys
line = b"x" * (1024 * 1024 - 1) + b"\\n"
for i in range(1024):
    (sys.stdout if i % 2 else sys.stderr).buffer.write(line)
""",
    # A result file of 100 MiB, written in 1 MiB blocks.
    "hoard.py": """
import os
with open(os.environ["DATABUILD_RESULT_PATH"], "wb") as result:
    for _ in range(100):
        result.write(b" " * (1024 * 1024))
""",
}

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
    (root / "jobs").mkdir()
    for name, code in JOBS.items():
        (root / "jobs" / name).write_text(code)
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


@pytest.mark.parametrize("job", ["chatter", "chatter_warm"])
def test_a_job_writing_1_gb_to_stdout_and_stderr(
    service: tuple[subprocess.Popen[bytes], httpx.Client], job: str
) -> None:
    proc, http = service
    before = rss_kib(proc.pid)
    want(http, f"{job}/1")
    peak, api_latencies, n = before, [], 0
    deadline = time.monotonic() + DEADLINE
    while True:
        runs = runs_of(http, job)
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
        f"\n{job}: 1 GiB of output in {run['duration_seconds']:.1f} s: service RSS {before} KiB before, "
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


def test_a_job_still_starting_children_when_its_timeout_hits(
    service: tuple[subprocess.Popen[bytes], httpx.Client],
) -> None:
    _, http = service
    want(http, "spawner/1")
    run = wait_run(http, "spawner", ended, "the spawner's timeout")
    assert (run["status"], run["failure_kind"]) == ("failed", "timeout"), run
    assert live_group_members(run["pid"]) == [], "children outlived their run"
    log = http.get(f"/api/v1/job-runs/{run['job_run_id']}/log").text
    started = re.findall(r"^(\d+) children started$", log, re.MULTILINE)
    print(f"\nkilled at its timeout after starting {started[-1] if started else 0} children")
    assert started, log


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
    assert run["message"] == f"no longer needed: want {want_id} canceled", run["message"]
    wait_group_gone(run["pid"])
    after = rss_kib(proc.pid)
    print(f"\ncanceled with {members} processes in the group; service RSS {after} KiB")


@pytest.mark.parametrize("job", ["hoard", "hoard_warm"])
def test_a_result_file_of_100_mb(
    service: tuple[subprocess.Popen[bytes], httpx.Client], job: str
) -> None:
    proc, http = service
    before = rss_kib(proc.pid)
    want(http, f"{job}/1")
    run = wait_run(http, job, ended, "the hoard run")
    after = rss_kib(proc.pid)
    print(
        f"\n{job}: 100 MiB result: service RSS {before} KiB before, {after} KiB after; {run['message']}"
    )
    assert (run["status"], run["failure_kind"]) == ("failed", "bad_result"), run
    assert re.fullmatch(
        rf"the result file /\S+/{run['job_run_id']}/result\.json is {100 * MiB} bytes, "
        rf"larger than the limit of {MiB} bytes; .*",
        run["message"],
    ), run["message"]
    assert after - before < 32 * 1024
    assert http.get("/healthz").json()["status"] == "ok"


# -- connections: out of file descriptors, and many event-stream clients -------------------


def launch_with_fd_limit(
    graph: Path, env: dict[str, str], databuild: Path, nofile: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    """``databuild serve --port 0`` in ``graph``, its soft ``ulimit -n`` set to ``nofile``
    (as a container or systemd unit would), once ``/healthz`` answers."""

    def limit() -> None:
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    with (graph / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(databuild), "serve", "--port", "0", "--log-level", "info"],
            cwd=graph,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
    service_json = graph / ".databuild" / "service.json"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert proc.poll() is None, (graph / "serve.log").read_text()
        with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
            record = json.loads(service_json.read_text())
            if record["pid"] == proc.pid and httpx.get(f"{record['url']}/healthz").is_success:
                return proc, str(record["url"])
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("databuild serve did not become healthy")


@pytest.fixture
def served(
    tmp_path: Path, job_env: dict[str, str], databuild_bin: Path
) -> Iterator[Callable[[str, int | None], tuple[subprocess.Popen[bytes], str]]]:
    started: list[subprocess.Popen[bytes]] = []

    def serve(toml: str, nofile: int | None) -> tuple[subprocess.Popen[bytes], str]:
        (tmp_path / "databuild.toml").write_text(toml)
        proc, url = launch_with_fd_limit(tmp_path, job_env, databuild_bin, nofile)
        started.append(proc)
        return proc, url

    yield serve
    for proc in started:
        stop_process(proc)
    assert_no_traceback(tmp_path)


def stream_request(url: str, after: int) -> tuple[tuple[str, int], bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"GET /api/v1/events/stream?after={after} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    return (host, int(port)), request.encode()


def status_of(sock: socket.socket) -> int:
    """The status code of the response starting on ``sock`` (blocking, with a deadline)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the service closed the connection without a response"
        data += chunk
    return int(data.split(b" ", 2)[1])


def read_until_all(socks: list[socket.socket], marker: re.Pattern[bytes]) -> float:
    """Reads every stream until ``marker`` shows in it; the seconds until the last did.
    Each stream's data is kept to its last 64 KiB (enough for the marker's event)."""
    started = time.perf_counter()
    selector = selectors.DefaultSelector()
    data: dict[socket.socket, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        data[sock] = b""
    deadline = time.monotonic() + DEADLINE
    while data:
        assert time.monotonic() < deadline, f"{len(data)} streams never got {marker.pattern!r}"
        for key, _ in selector.select(timeout=1.0):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            chunk = ready.recv(65536)
            assert chunk, "the service closed an event stream"
            seen = (data[ready] + chunk)[-65536:]
            if marker.search(seen):
                selector.unregister(ready)
                del data[ready]
            else:
                data[ready] = seen
    selector.close()
    return time.perf_counter() - started


FD_GRAPH = """
[graph]
name = "descriptors"

[executor]
max_parallel = 1

# Waits for the test's go-ahead (a file), so that the next run starts during the flood.
[jobs.hold]
outputs = ["hold/{n}"]
command = ["python", "-c", '''
import pathlib, time
while not pathlib.Path("go").exists():
    time.sleep(0.05)
''']
retries = 0

[jobs.quick]
outputs = ["quick/{n}"]
command = ["python", "-c", "pass"]
retries = 0
"""


def test_out_of_file_descriptors_new_connections_get_503_and_the_service_goes_on(
    tmp_path: Path, served: Callable[[str, int | None], tuple[subprocess.Popen[bytes], str]]
) -> None:
    nofile = 160
    proc, url = served(FD_GRAPH, nofile)
    limit = connection_limit(nofile, 1, DEFAULT_MAX_CONNECTIONS)
    with httpx.Client(base_url=url, timeout=30) as http:
        for n in (1, 2):
            want(http, f"hold/{n}")
        wait_run(http, "hold", lambda r: r["status"] == "running", "hold/1 to run")
        after = http.get("/healthz").json()["last_sequence"]
    # Stream clients, one after the other, until twenty were refused.
    address, request = stream_request(url, after)
    open_streams: list[socket.socket] = []
    refused = 0
    while refused < 20:
        assert len(open_streams) < nofile, "the service accepted more than its descriptors"
        sock = socket.create_connection(address, timeout=DEADLINE)
        sock.sendall(request)
        if status_of(sock) == 200:
            open_streams.append(sock)
        else:
            refused += 1
            sock.close()
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    print(
        f"\nulimit -n {nofile}: {len(open_streams)} streams served, then 503s "
        f"(connection limit {limit}); the service has {fds} descriptors open"
    )
    assert limit // 2 <= len(open_streams) < limit
    try:
        # The held run ends and the next one is spawned during the flood: every open
        # stream sees it built (the spawn had its descriptors, the streams are served).
        (tmp_path / "go").touch()
        seconds = read_until_all(
            open_streams, re.compile(rb'event: partition_live\r?\ndata: [^\n]*"hold/2"')
        )
        print(f"all {len(open_streams)} streams saw hold/2 built within {seconds:.2f} s")
    finally:
        for sock in open_streams:
            sock.close()
    assert proc.poll() is None
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + DEADLINE
        while (
            reply := http.post("/api/v1/wants", json={"partition_refs": ["quick/1"]})
        ).status_code == 503:
            assert time.monotonic() < deadline, "the service still refuses after the flood"
            time.sleep(0.1)  # the service notices the closed streams within moments
        assert reply.status_code == 200, reply.text
        run = wait_run(http, "quick", ended, "quick/1")
        assert run["status"] == "succeeded", run
        assert {r["status"] for r in runs_of(http, "hold")} == {"succeeded"}
    log = (tmp_path / "serve.log").read_text()
    assert f"refused with 503: the service holds at most {limit} connections" in log, log


STREAM_CLIENTS = 10_000


def subscriptions(http: httpx.Client) -> float:
    metrics = http.get("/metrics").text
    found = re.search(r"^databuild_event_stream_subscriptions (\S+)$", metrics, re.MULTILINE)
    assert found, metrics
    return float(found.group(1))


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """This test process's soft ``ulimit -n`` raised to its hard limit, for its clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < STREAM_CLIENTS + 500:
        pytest.fail(f"needs ulimit -n of {STREAM_CLIENTS + 500}; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def stream_flood(proc: subprocess.Popen[bytes], url: str, ref: str) -> dict[str, float]:
    """STREAM_CLIENTS stream clients at once; with them connected, a want for ``ref``,
    which every one of them must see built; then they all leave. Figures measured."""
    figures: dict[str, float] = {"before": rss_kib(proc.pid)}
    with httpx.Client(base_url=url, timeout=60) as http:
        after = http.get("/healthz").json()["last_sequence"]
    address, request = stream_request(url, after)
    streams: list[socket.socket] = []
    started = time.perf_counter()
    try:
        for _ in range(0, STREAM_CLIENTS, 500):  # 500 at a time: the listen backlog
            batch = [socket.create_connection(address, timeout=DEADLINE) for _ in range(500)]
            for sock in batch:
                sock.sendall(request)
            statuses = {status_of(sock) for sock in batch}
            streams += batch
            assert statuses == {200}, statuses
        figures["connected"] = time.perf_counter() - started
        figures["held"] = rss_kib(proc.pid)
        with httpx.Client(base_url=url, timeout=60) as http:
            figures["post"], reply = timed(
                http.post, "/api/v1/wants", json={"partition_refs": [ref]}
            )
            assert reply.status_code == 200, reply.text
            figures["health"], health = timed(http.get, "/healthz")
            assert health.json()["status"] == "ok"
        marker = re.compile(rb'event: partition_live\r?\ndata: [^\n]*"' + ref.encode() + b'"')
        figures["delivered"] = read_until_all(streams, marker)
        figures["peak"] = rss_kib(proc.pid)
    finally:
        for sock in streams:
            sock.close()
    with httpx.Client(base_url=url, timeout=60) as http:
        run = wait_run(http, "quick", lambda r: ref in r["partition_refs"] and ended(r), ref)
        assert run["status"] == "succeeded", run
        deadline = time.monotonic() + DEADLINE
        while (left := subscriptions(http)) > 0:  # every stream that left is let go
            assert time.monotonic() < deadline, f"{left} streams still subscribed"
            time.sleep(0.2)
    figures["released"] = rss_kib(proc.pid)
    print(
        f"\n{STREAM_CLIENTS} stream clients connected in {figures['connected']:.1f} s; "
        f"service RSS {figures['before']:.0f} KiB before, {figures['held']:.0f} KiB with "
        f"them, {figures['peak']:.0f} KiB after an event to all, {figures['released']:.0f} "
        f"KiB once they left; POST /api/v1/wants {figures['post'] * 1000:.0f} ms, GET "
        f"/healthz {figures['health'] * 1000:.0f} ms meanwhile; all streams got {ref} built "
        f"{figures['delivered']:.1f} s after the POST answered"
    )
    return figures


def test_10000_simultaneous_event_stream_clients(
    many_descriptors: None,
    served: Callable[[str, int | None], tuple[subprocess.Popen[bytes], str]],
) -> None:
    """Twice: the second flood must reuse the memory of the first, not add to it."""
    proc, url = served(FD_GRAPH, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    first = stream_flood(proc, url, "quick/1")
    second = stream_flood(proc, url, "quick/2")
    assert proc.poll() is None
    per_client = (first["held"] - first["before"]) / STREAM_CLIENTS
    assert per_client < 100, f"{per_client:.0f} KiB per stream client"
    growth = second["peak"] - first["peak"]
    print(f"the second flood's peak RSS is {growth:+.0f} KiB from the first's")
    assert growth < 0.2 * (first["peak"] - first["before"]), "memory grows flood after flood"


def test_a_burst_of_connections_past_the_descriptor_limit(
    tmp_path: Path, served: Callable[[str, int | None], tuple[subprocess.Popen[bytes], str]]
) -> None:
    """400 clients at once on a service with ``ulimit -n 128``: its ``accept`` runs out of
    descriptors (asyncio pauses accepting for a second) and connections past its limit get
    503; every client gets an answer, the log says why in a line or two, no traceback."""
    proc, url = served(FD_GRAPH, 128)
    address, request = stream_request(url, 0)
    burst = [socket.create_connection(address, timeout=DEADLINE) for _ in range(400)]
    try:
        for sock in burst:
            sock.sendall(request)
        statuses = [status_of(sock) for sock in burst]
    finally:
        for sock in burst:
            sock.close()
    print(f"\n400 at once on ulimit -n 128: {statuses.count(503)} got 503, the rest 200")
    assert set(statuses) <= {200, 503} and 503 in statuses
    assert proc.poll() is None
    with httpx.Client(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + DEADLINE
        while (
            reply := http.post("/api/v1/wants", json={"partition_refs": ["quick/1"]})
        ).status_code == 503:
            assert time.monotonic() < deadline, "the service still refuses after the burst"
            time.sleep(0.1)
        assert reply.status_code == 200, reply.text
        assert wait_run(http, "quick", ended, "quick/1")["status"] == "succeeded"
    log = (tmp_path / "serve.log").read_text()
    assert "refused with 503" in log, log
    print([line for line in log.splitlines() if "WARNING" in line])
