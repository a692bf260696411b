"""Benchmark: failover of two service replicas on one PostgreSQL Build Event Log.

Two real ``databuild serve`` processes on loopback, each in its own folder, on one fresh
PostgreSQL schema: the leader and a standby. Each trial kills the leader with SIGKILL and
then posts a new want to the standby every 5 ms until one is accepted (200):

    failover = time(first want accepted by the new leader) - time(kill -9 of the old one)

While the standby is still a standby it forwards the want to the dead leader and answers
503 at once, so the first 200 is the first write the new leader accepts. Then the killed
replica is started again (it comes back as the standby) and the roles swap. The leader
lease (``DATABUILD_LEADER_LEASE``) plays no part: a killed leader's session closes at once.

Run alone: ``.venv/bin/python -m bench.failover [--trials 10] [--postgres URL]`` (or set
DATABUILD_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import databuild_exe, header, job_env, summary_ms, write_result
from bench.reaction import JOB_A

GRAPH = """\
[graph]
name = "failover"

[jobs.a]
outputs = ["a/{n}"]
command = ["sh", "jobs/a.sh"]
concurrency = 4

[storage]
url_env = "FAILOVER_BEL_URL"
"""
START_SECONDS = 60.0
FAILOVER_DEADLINE = 60.0


class Replica:
    def __init__(self, graph: Path, env: dict[str, str]) -> None:
        self.graph = graph
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, role: str) -> None:
        discovery = self.graph / ".databuild" / "service.json"
        with contextlib.suppress(OSError):
            discovery.unlink()  # the killed one's: wait for the new process's own
        with (self.graph / "serve.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [databuild_exe(), "serve", "--port", "0"],
                cwd=self.graph,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"databuild serve exited: {(self.graph / 'serve.log').read_text()}"
                )
            try:
                self.url = str(json.loads(discovery.read_text())["url"])
                ready = httpx.get(f"{self.url}/readyz", timeout=2).json()
                if ready["role"] == role and ready["ready"]:
                    return
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"databuild serve did not become a ready {role}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def make_graph(root: Path, name: str) -> Path:
    graph = root / name
    (graph / "jobs").mkdir(parents=True)
    (graph / "databuild.toml").write_text(GRAPH)
    (graph / "jobs" / "a.sh").write_text(JOB_A)
    return graph


def run(trials: int, postgres: str) -> dict[str, Any]:
    if not postgres:
        print("   failover: skipped (give --postgres URL or set DATABUILD_TEST_POSTGRES_URL)")
        return {"skipped": "give --postgres URL or set DATABUILD_TEST_POSTGRES_URL"}
    import psycopg  # the [postgres] extra, needed only here

    schema = f"bench_failover_{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in postgres else "?"
    env = job_env({"FAILOVER_BEL_URL": f"{postgres}{separator}schema={schema}"})
    took: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        replicas = [Replica(make_graph(root, f"replica-{i}"), env) for i in range(2)]
        try:
            replicas[0].start("leader")
            replicas[1].start("standby")
            leader = 0
            with httpx.Client(timeout=10) as client:
                for trial in range(trials):
                    old, new = replicas[leader], replicas[1 - leader]
                    client.post(
                        f"{old.url}/api/v1/wants", json={"partition_refs": [f"a/warm{trial}"]}
                    ).raise_for_status()
                    old.kill()
                    killed = time.perf_counter()
                    deadline = time.monotonic() + FAILOVER_DEADLINE
                    while True:
                        try:
                            reply = client.post(
                                f"{new.url}/api/v1/wants",
                                json={"partition_refs": [f"a/after{trial}"]},
                            )
                            if reply.status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() > deadline:
                            raise RuntimeError("the standby did not take over")
                        time.sleep(0.005)
                    took.append(time.perf_counter() - killed)
                    old.start("standby")
                    leader = 1 - leader
        finally:
            for replica in replicas:
                replica.stop()
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    figures: dict[str, Any] = {
        "trials": len(took),
        "kill_to_first_write_accepted": summary_ms(took),
    }
    s = figures["kill_to_first_write_accepted"]
    print(
        f"   failover (leader kill -9 -> first write accepted by the new leader), {len(took)} "
        f"trials: p50 {s['p50_ms']:.0f} ms, max {s['max_ms']:.0f} ms"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description="failover time of two replicas on PostgreSQL")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--postgres", default=os.environ.get("DATABUILD_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    info = header("failover of two replicas on PostgreSQL")
    write_result("failover", run(args.trials, args.postgres), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
