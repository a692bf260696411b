"""Storage faults during a real calendar build (issue 14.1-14.3): what the service survives.

Each test runs a real ``databuild serve`` (real job processes) on a copy of the calendar
example, wants ``summary/all`` over HTTP, injects a fault mid-build, and then checks:
- the build completes, and its output files are byte-for-byte those of an uninterrupted
  build of the same graph (the ``reference`` fixture);
- the Build Event Log holds every event once: sequences 1..N without a gap, no event
  written twice (a retried append repeats its step's timestamp, type and payload);
- every partition was built by exactly one successful run, and no run failed.

Faults: a private PostgreSQL (``private_postgres``) stopped and started twice mid-build;
its connections terminated (``pg_terminate_backend``) at seeded random points; write
permission revoked (a persistent fault: the service exits non-zero with one clear line and a
restart completes the build); and the SQLite file held by another process's
``BEGIN EXCLUSIVE`` for a few seconds. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .private_postgres import PrivatePostgres, binaries

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(binaries() is None, reason="needs the PostgreSQL server binaries"),
]

DEADLINE = 180.0  # a guard against a hang, not an expectation
IDLE_WAIT = 30.0  # after a persistent fault, before the test writes to make it show
GRACE = "120"  # $DATABUILD_STORAGE_GRACE for the service: longer than any fault here
URL_ENV = "CALENDAR_BEL_URL"
TERMINAL = {"satisfied", "failed", "upstream_failed", "expired", "canceled"}
Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]  # tests/conftest.py's


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stacks(proc: subprocess.Popen[bytes], graph: Path) -> str:
    """What a service that seems stuck is doing: its threads' stacks (``kill -USR1``, see
    docs/operations.md) and the end of its log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
    return (graph / "serve.log").read_text(errors="replace")[-12_000:]


def prepare(graph: Path, storage: str | None) -> Path:
    """One run per partition, one at a time (many steps to break into); no schedules (a
    scheduled want would build more than the reference); the BEL from ``$URL_ENV``."""
    config = graph / "databuild.toml"
    text = config.read_text()
    text = re.sub(r"max_batch = \d+", "max_batch = 1", text)
    text = re.sub(r"concurrency = \d+", "concurrency = 1", text)
    text = text[: text.index("# Every morning")]
    if storage is not None:
        text += f'\n[storage]\nurl_env = "{URL_ENV}"\n'
    config.write_text(text)
    return graph


def outputs(graph: Path) -> dict[str, bytes]:
    data = graph / "data"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*.json"))}


class Build:
    """A client of one service: wants summary/all, follows progress, checks the end."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc
        self.http = httpx.Client(base_url=url, timeout=30)
        self.want_id = ""

    def start(self) -> None:
        reply = self.http.post("/api/v1/wants", json={"partition_refs": ["summary/all"]})
        assert reply.status_code == 200, reply.text
        self.want_id = reply.json()["wants"][0]["want_id"]

    def health(self) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError):
            reply = self.http.get("/healthz")
            body: dict[str, Any] = reply.json()
            return body
        return None

    def wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Until ``done(health)``: long-polls the event stream (it answers at the next
        commit) while storage is up; while it is down the service answers at once."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the service exited {self.proc.returncode}"
            health = self.health()
            if health is not None and done(health):
                return health
            after = health["last_sequence"] if health else 0
            try:
                reply = self.http.get("/api/v1/events", params={"after": after, "wait": 1})
                if reply.status_code != 200:
                    time.sleep(0.05)  # storage down: the service answers 503 at once
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_sequence(self, target: int) -> None:
        self.wait(lambda h: h["last_sequence"] >= target, f"sequence {target}")

    def status(self) -> str:
        """From the want list: served from memory even while storage is down."""
        reply = self.http.get("/api/v1/wants", params={"limit": 1000})
        assert reply.status_code == 200, reply.text
        found = [w["status"] for w in reply.json()["wants"] if w["want_id"] == self.want_id]
        assert found, f"want {self.want_id} is not listed"
        status: str = found[0]
        return status

    def finish(self, restarted: bool = False) -> int:
        """Wait for the want to end; it must be satisfied. Returns the last sequence.
        ``restarted``: runs in flight when the service stopped are failed and retried
        (recovery as after kill -9); no other run may fail."""

        def ended(health: dict[str, Any]) -> bool:
            return health["status"] == "ok" and self.status() in TERMINAL

        health = self.wait(ended, "the want to end")
        assert self.status() == "satisfied"
        runs = self.http.get("/api/v1/job-runs", params={"limit": 1000}).json()["job_runs"]
        interrupted = "the service stopped while this run was in flight; retried"
        odd = [
            r
            for r in runs
            if r["status"] not in ("succeeded", "missing_deps")
            and not (restarted and r["status"] == "failed" and r["message"] == interrupted)
        ]
        assert not odd, [(r["job_run_id"], r["status"], r.get("message")) for r in odd]
        built = [ref for r in runs if r["status"] == "succeeded" for ref in r["partition_refs"]]
        assert len(built) == len(set(built)), "a partition was built twice"
        last: int = health["last_sequence"]
        return last

    def close(self) -> None:
        self.http.close()


def assert_stopped_cleanly(graph: Path, proc: subprocess.Popen[bytes]) -> None:
    """Stopped by our SIGTERM (uvicorn re-raises it after a graceful stop), not by a fault."""
    assert proc.returncode in (0, -signal.SIGTERM), proc.returncode
    log = (graph / "serve.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:") or " ERROR " in line]
    assert not errors and "Traceback" not in log, log


def check_log_rows(rows: list[tuple[int, float, str, bytes]]) -> None:
    """Every event once: no gap in the sequences, no event written twice."""
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1)), "a gap in the BEL"
    seen = [(ts, kind, bytes(payload)) for _, ts, kind, payload in rows]
    assert len(seen) == len(set(seen)), "an event was appended twice"


def postgres_rows(server: PrivatePostgres, schema: str = "public") -> list[Any]:
    with server.connect() as conn:
        return conn.execute(
            f"SELECT sequence, timestamp, type, payload FROM {schema}.build_events "
            "ORDER BY sequence"
        ).fetchall()


def sqlite_rows(graph: Path) -> list[Any]:
    with contextlib.closing(sqlite3.connect(graph / ".databuild" / "bel.sqlite")) as conn:
        return conn.execute(
            "SELECT sequence, timestamp, type, payload FROM build_events ORDER BY sequence"
        ).fetchall()


def uninterrupted_build(
    graph: Path, launch_service: Launcher, env: dict[str, str]
) -> tuple[dict[str, bytes], int]:
    """The outputs and the BEL length of a build of ``graph`` (on SQLite) that nothing
    interrupts: what a build through faults must end with."""
    proc, url = launch_service(graph, env=env)
    build = Build(url, proc)
    try:
        build.start()
        last = build.finish()
    finally:
        build.close()
        stop_process(proc)
    check_log_rows(sqlite_rows(graph))
    found = outputs(graph)
    assert "summary/all.json" in found
    return found, last


@pytest.fixture(scope="module")
def reference(
    calendar_factory: Callable[[], Path], launch_service: Launcher, job_env: dict[str, str]
) -> tuple[dict[str, bytes], int]:
    """The outputs and the BEL length of an uninterrupted build of the same graph."""
    return uninterrupted_build(prepare(calendar_factory(), None), launch_service, job_env)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def service_env(job_env: dict[str, str], url: str) -> dict[str, str]:
    return {**job_env, URL_ENV: url, "DATABUILD_STORAGE_GRACE": GRACE}


def test_postgres_stopped_and_started_twice_mid_build(
    private_postgres: PrivatePostgres,
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    graph = prepare(calendar_factory(), "postgres")
    proc, url = launch_service(graph, env=service_env(job_env, private_postgres.url))
    build = Build(url, proc)
    try:
        build.start()
        for fraction in (0.3, 0.6):
            build.wait_sequence(int(total * fraction))
            private_postgres.stop()
            # the next append fails: the service says so and stays up, jobs go on
            down = build.wait(lambda h: h["status"] == "degraded", "status degraded")
            assert down["message"], "degraded names the reason"
            not_ready = build.http.get("/readyz")
            assert not_ready.status_code == 503, not_ready.text
            assert not_ready.json()["storage"] != "ok"
            refused = build.http.post("/api/v1/wants", json={"partition_refs": ["summary/all"]})
            assert refused.status_code == 503
            assert "Build Event Log is unavailable" in refused.json()["error"]
            assert "databuild_storage_up 0" in build.http.get("/metrics").text
            assert build.status() not in TERMINAL  # reads: from memory
            private_postgres.start()
        build.finish()
        assert "databuild_storage_up 1" in build.http.get("/metrics").text
    finally:
        build.close()
        stop_process(proc)
    assert_stopped_cleanly(graph, proc)
    check_log_rows(postgres_rows(private_postgres))
    assert outputs(graph) == expected


def test_postgres_connections_terminated_at_random_points(
    private_postgres: PrivatePostgres,
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    seed = random.randrange(1 << 32)
    points = sorted(random.Random(seed).sample(range(3, total - 3), 6))
    graph = prepare(calendar_factory(), "postgres")
    proc, url = launch_service(graph, env=service_env(job_env, private_postgres.url))
    build = Build(url, proc)
    terminated = 0
    try:
        build.start()
        for point in points:
            build.wait_sequence(point)
            terminated += private_postgres.terminate_clients()
        build.finish()
    finally:
        build.close()
        stop_process(proc)
    assert terminated >= len(points), f"seed {seed}: the service's sessions were terminated"
    assert_stopped_cleanly(graph, proc)
    check_log_rows(postgres_rows(private_postgres))
    assert outputs(graph) == expected, f"seed {seed}"


def test_permission_revoked_mid_build_exits_non_zero_and_a_restart_completes(
    private_postgres: PrivatePostgres,
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    with private_postgres.connect() as conn:
        conn.execute("CREATE ROLE builder LOGIN")
        conn.execute("GRANT CREATE ON DATABASE postgres TO builder")
    user_url = private_postgres.url.replace("postgres@", "builder@") + "?schema=bel"
    graph = prepare(calendar_factory(), "postgres")
    env = service_env(job_env, user_url)
    proc, url = launch_service(graph, env=env)
    build = Build(url, proc)
    try:
        build.start()
        build.wait_sequence(total // 2)
        with private_postgres.connect() as conn:
            conn.execute("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON bel.build_events FROM builder")
        try:
            returncode = proc.wait(timeout=IDLE_WAIT)
        except subprocess.TimeoutExpired:
            # The fault shows at the service's next write. If the build had nothing left to
            # write (a job still running on a loaded machine), a want is one: say so, with
            # what the service was doing, and go on.
            print(f"no exit {IDLE_WAIT:g} s after the revoke; asking for a want:")
            print(stacks(proc, graph)[-4000:])
            with contextlib.suppress(httpx.HTTPError):
                build.http.post("/api/v1/wants", json={"partition_refs": ["summary/all"]})
        try:
            returncode = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the service stayed up on a persistent fault:\n{stacks(proc, graph)}"
            ) from None
    finally:
        build.close()
        stop_process(proc)
    assert returncode != 0
    log = (graph / "serve.log").read_text()
    assert "Traceback" not in log
    stopped = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(stopped) == 1, log
    assert "the service stopped" in stopped[0] and "permission denied" in stopped[0]

    with private_postgres.connect() as conn:
        conn.execute("GRANT ALL ON bel.build_events TO builder")
    proc, url = launch_service(graph, env=env)
    build = Build(url, proc)
    try:
        build.want_id = build.http.get("/api/v1/wants").json()["wants"][0]["want_id"]
        build.finish(restarted=True)
    finally:
        build.close()
        stop_process(proc)
    check_log_rows(postgres_rows(private_postgres, "bel"))
    assert outputs(graph) == expected


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


def test_sqlite_held_locked_by_another_process_mid_build(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    graph = prepare(calendar_factory(), None)
    proc, url = launch_service(graph, env=job_env)
    build = Build(url, proc)
    try:
        build.start()
        build.wait_sequence(total // 2)
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(graph / ".databuild" / "bel.sqlite")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdin is not None
            assert locker.stdout.readline().strip() == "locked"
            # what the file holds now (a reader is not blocked in WAL mode): the service's
            # last commit may have gone in just before the lock, and its /healthz may not
            # show it yet
            held = sqlite_rows(graph)[-1][0]
            time.sleep(3)  # the fault's duration, not a synchronisation
            still = build.health()
            assert still is not None
            assert still["last_sequence"] == held, "appended while locked"
            assert sqlite_rows(graph)[-1][0] == held
            assert proc.poll() is None
            locker.stdin.write("release\n")
            locker.stdin.flush()
            assert locker.wait(timeout=30) == 0
        finally:
            if locker.poll() is None:
                locker.kill()
                locker.wait()
        build.finish()
    finally:
        build.close()
        stop_process(proc)
    check_log_rows(sqlite_rows(graph))
    assert outputs(graph) == expected


def test_postgres_down_longer_than_the_grace_exits_non_zero_and_a_restart_completes(
    private_postgres: PrivatePostgres,
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    graph = prepare(calendar_factory(), "postgres")
    env = {**service_env(job_env, private_postgres.url), "DATABUILD_STORAGE_GRACE": "2"}
    proc, url = launch_service(graph, env=env)
    build = Build(url, proc)
    try:
        build.start()
        build.wait_sequence(total // 3)
        private_postgres.stop()
        try:
            returncode = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the service stayed up past the storage grace:\n{stacks(proc, graph)}"
            ) from None
    finally:
        build.close()
        stop_process(proc)
    assert returncode != 0
    log = (graph / "serve.log").read_text()
    assert "Traceback" not in log
    stopped = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(stopped) == 1, log
    assert "longer than the storage grace of 2 s" in stopped[0]

    private_postgres.start()
    proc, url = launch_service(graph, env=env)
    build = Build(url, proc)
    try:
        build.want_id = build.http.get("/api/v1/wants").json()["wants"][0]["want_id"]
        build.finish(restarted=True)
    finally:
        build.close()
        stop_process(proc)
    check_log_rows(postgres_rows(private_postgres))
    assert outputs(graph) == expected
