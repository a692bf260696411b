"""Two ``databuild serve`` replicas on one PostgreSQL Build Event Log: failover and fencing.

Each test runs two real services on the CI PostgreSQL (a fresh schema each), every one with
its own free port and its own copy of the calendar example (its own ``.databuild`` folder:
run logs, snapshots, discovery file), all writing the partitions' data to one shared
folder, as replicas on two hosts would write to shared storage. Real job processes, real
HTTP; the leader is killed with SIGKILL or paused with SIGSTOP.

Checks: the standby takes over; the build completes with outputs byte-for-byte those of an
uninterrupted build on SQLite (``reference``); the log is gap-free with no
event twice; every partition was built by one successful run; the ``generation`` stamped
on the rows never goes back (no stale leader appended after a newer one); a resumed paused
leader exits non-zero with one clear line and appends nothing. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from .test_storage_faults import (
    URL_ENV,
    Build,
    Launcher,
    check_log_rows,
    prepare,
    stop_process,
    uninterrupted_build,
)

POSTGRES_URL = os.environ.get("DATABUILD_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs DATABUILD_TEST_POSTGRES_URL"),
]
DAYS = "60"  # 130 runs, one at a time, each a new process: long enough to kill 3 leaders
DEADLINE = 120.0  # a guard against a hang, not an expectation
LEASE = "2"  # $DATABUILD_LEADER_LEASE: a paused leader loses the writer role after 2 s
TAKEOVER_SECONDS = 15.0


def cold(graph: Path) -> Path:
    """No warm workers: every run is a process of its own, so the build takes seconds."""
    config = graph / "databuild.toml"
    config.write_text(config.read_text().replace("warm = true", "warm = false"))
    return graph


@pytest.fixture(scope="module")
def reference(
    calendar_factory: Callable[[], Path], launch_service: Launcher, job_env: dict[str, str]
) -> tuple[dict[str, bytes], int]:
    """The outputs and the BEL length of an uninterrupted build of the same graph."""
    graph = cold(prepare(calendar_factory(), None))
    return uninterrupted_build(graph, launch_service, {**job_env, "CALENDAR_DAYS": DAYS})


@pytest.fixture
def schema_url() -> Iterator[tuple[str, str]]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield schema, f"{POSTGRES_URL}{separator}schema={schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class Replicas:
    """Two graph folders on one log; launches and relaunches their services."""

    def __init__(
        self,
        calendar_factory: Callable[[], Path],
        launch_service: Launcher,
        job_env: dict[str, str],
        url: str,
        data: Path,
    ) -> None:
        self.graphs = [cold(prepare(calendar_factory(), "postgres")) for _ in range(2)]
        self.env = {
            **job_env,
            URL_ENV: url,
            "CALENDAR_DATA_DIR": str(data),
            "DATABUILD_LEADER_LEASE": LEASE,
            "DATABUILD_STORAGE_GRACE": "60",
            "CALENDAR_DAYS": DAYS,
        }
        self._launch = launch_service
        self.procs: list[subprocess.Popen[bytes] | None] = [None, None]
        self.urls = ["", ""]

    def launch(self, index: int) -> None:
        proc, url = self._launch(self.graphs[index], env=self.env)
        self.procs[index], self.urls[index] = proc, url

    def launch_both(self) -> None:
        """Replica 0 first, so that it is the leader and replica 1 the standby."""
        self.launch(0)
        self.launch(1)

    def client(self, index: int) -> Build:
        """A client of replica ``index``'s service."""
        proc = self.procs[index]
        assert proc is not None, f"replica {index} was never launched"
        return Build(self.urls[index], proc)

    def finish_at(self, index: int, build: Build) -> Build:
        """Close ``build`` and follow its want to the end at replica ``index`` (the leader
        that took over); returns the new client, for the caller to close."""
        build.close()
        build = self.client(index)
        try:
            build.want_id = build.http.get("/api/v1/wants").json()["wants"][0]["want_id"]
            build.finish(restarted=True)
        except BaseException:
            build.close()
            raise
        return build

    def assert_no_traceback(self) -> None:
        for graph in self.graphs:
            assert "Traceback" not in serve_log(graph)

    def ready(self, index: int) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body: dict[str, Any] = httpx.get(f"{self.urls[index]}/readyz", timeout=5).json()
            return body
        return None

    def wait_role(self, index: int, role: str) -> float:
        """Seconds until replica ``index`` reports ``role`` and is ready."""
        started = time.monotonic()
        while time.monotonic() - started < DEADLINE:
            proc = self.procs[index]
            assert proc is not None and proc.poll() is None, "the replica exited"
            found = self.ready(index)
            if found is not None and found["role"] == role and found["ready"]:
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"replica {index} did not become a ready {role}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)  # a paused one cannot stop
                stop_process(proc)


@pytest.fixture
def replicas(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    job_env: dict[str, str],
    schema_url: tuple[str, str],
    tmp_path: Path,
) -> Iterator[Replicas]:
    made = Replicas(calendar_factory, launch_service, job_env, schema_url[1], tmp_path / "data")
    yield made
    made.stop()


def shared_outputs(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*.json"))}


def log_rows(schema: str) -> list[tuple[int, float, str, bytes, int]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT sequence, timestamp, type, payload, generation FROM {}.build_events "
                "ORDER BY sequence"
            ).format(sql.Identifier(schema))
        ).fetchall()
    return [(int(a), float(b), str(c), bytes(d), int(e)) for a, b, c, d, e in rows]


def writer_generation(schema: str) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT generation FROM {}.bel_writer").format(sql.Identifier(schema))
        ).fetchone()
    assert row is not None
    return int(row[0])


def check_log(schema: str) -> list[int]:
    """Check the log's rows (gap-free, no event twice) and return the generations in log
    order, each once: a stale leader never appended after a newer one took over."""
    rows = log_rows(schema)
    check_log_rows([row[:4] for row in rows])
    seen = [row[4] for row in rows]
    assert seen == sorted(seen), "an older leader appended after a newer one"
    return sorted(set(seen))


def serve_log(graph: Path) -> str:
    return (graph / "serve.log").read_text(errors="replace")


def test_standby_serves_reads_forwards_writes_and_reports_its_role(
    replicas: Replicas,
) -> None:
    replicas.launch_both()
    leader, standby = replicas.urls
    assert httpx.get(f"{leader}/healthz").json()["role"] == "leader"
    assert httpx.get(f"{standby}/healthz").json()["role"] == "standby"
    ready = httpx.get(f"{standby}/readyz")
    assert ready.status_code == 200 and ready.json()["leader_url"] == leader
    made = httpx.post(f"{standby}/api/v1/wants", json={"partition_refs": ["raw/date=2024-01-01"]})
    assert made.status_code == 200, made.text
    want_id = made.json()["wants"][0]["want_id"]
    bad = httpx.post(f"{standby}/api/v1/wants", json={"partition_refs": "not a list"})
    assert bad.status_code == 422 and "error" in bad.json(), "the leader's own answer"
    deadline = time.monotonic() + DEADLINE
    status = ""
    while time.monotonic() < deadline and status != "satisfied":
        # a long poll on the standby answers when the leader's commit reaches it
        httpx.get(f"{standby}/api/v1/events", params={"after": 0, "wait": 1}, timeout=10)
        status = httpx.get(f"{standby}/api/v1/wants/{want_id}").json()["want"]["status"]
    assert status == "satisfied", "the standby folds the leader's events"
    assert "Traceback" not in serve_log(replicas.graphs[1])


def test_kill_9_of_the_leader_mid_build_repeatedly(
    replicas: Replicas,
    schema_url: tuple[str, str],
    tmp_path: Path,
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    replicas.launch_both()
    leader = 0
    takeovers: list[float] = []
    build = replicas.client(1)
    try:
        build.start()  # at the standby: forwarded to the leader
        progress = total // 12
        for _ in range(3):
            watcher = replicas.client(leader)
            watcher.want_id = build.want_id
            reached = watcher.health()
            assert reached is not None
            watcher.wait_sequence(reached["last_sequence"] + progress)
            assert watcher.status() not in ("satisfied", "failed"), "kill in the middle"
            watcher.close()
            doomed = replicas.procs[leader]
            assert doomed is not None
            doomed.kill()  # SIGKILL: no cleanup at all
            doomed.wait(DEADLINE)
            killed_at = time.monotonic()
            survivor = 1 - leader
            replicas.wait_role(survivor, "leader")
            takeovers.append(time.monotonic() - killed_at)
            replicas.launch(leader)  # restarted by its supervisor: now the standby
            replicas.wait_role(leader, "standby")
            leader = survivor
        build = replicas.finish_at(leader, build)
    finally:
        build.close()
        replicas.stop()
    assert all(t < TAKEOVER_SECONDS for t in takeovers), takeovers
    assert check_log(schema_url[0]) == [1, 2, 3, 4], "each leader wrote, none after its successor"
    assert shared_outputs(tmp_path / "data") == expected
    replicas.assert_no_traceback()


def test_a_paused_leader_resumed_after_the_takeover_cannot_append(
    replicas: Replicas,
    schema_url: tuple[str, str],
    tmp_path: Path,
    reference: tuple[dict[str, bytes], int],
) -> None:
    expected, total = reference
    replicas.launch_both()
    old = replicas.procs[0]
    assert old is not None
    build = Build(replicas.urls[0], old)
    try:
        build.start()
        build.wait_sequence(total // 3)
        os.kill(old.pid, signal.SIGSTOP)  # its sessions stay open: only the lease can end
        took = replicas.wait_role(1, "leader")
        assert took < TAKEOVER_SECONDS, f"took over after {took:.1f} s"
        first_new = writer_generation(schema_url[0])
        os.kill(old.pid, signal.SIGCONT)
        try:
            code = old.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError("the resumed old leader stayed up") from None
        assert code != 0
        build = replicas.finish_at(1, build)
    finally:
        build.close()
        replicas.stop()
    generations = check_log(schema_url[0])
    assert generations == [first_new - 1, first_new], generations
    log = serve_log(replicas.graphs[0])
    assert "Traceback" not in log
    stopped = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(stopped) == 1 and "lost leadership" in stopped[0], log
    assert shared_outputs(tmp_path / "data") == expected
