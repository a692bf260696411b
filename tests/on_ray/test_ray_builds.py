"""Whole builds through the real CLI with ``[executor] kind = "ray"`` on the local cluster:
the calendar example end to end (output contents checked), and a Ray worker killed under a
run (retried as ``lost``, the partition built once, no process left behind)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2e.test_calendar_build import DATABUILD, DAYS, EXAMPLE, check_outputs, job_runs, run_cli
from executors.harness import wait_until_gone

from .conftest import RayCluster

pytestmark = pytest.mark.slow


def on_ray(graph: Path, cluster: RayCluster) -> None:
    config = graph / "databuild.toml"
    config.write_text(
        config.read_text()
        + f'\n[executor]\nkind = "ray"\naddress = "{cluster.address}"\nmax_parallel = 2\n'
    )


def test_the_calendar_example_builds_on_ray(ray_cluster: RayCluster, tmp_path: Path) -> None:
    graph = tmp_path / "calendar"
    shutil.copytree(
        EXAMPLE, graph, ignore=shutil.ignore_patterns("data", ".databuild", "__pycache__")
    )
    on_ray(graph, ray_cluster)
    first = run_cli(graph, "build", "summary/all")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "satisfied" in first.stdout
    check_outputs(graph)
    runs = job_runs(graph)
    assert runs and all(r["status"] in ("succeeded", "missing_deps") for r in runs), runs
    built = [ref for r in runs if r["status"] == "succeeded" for ref in r["partition_refs"]]  # type: ignore[attr-defined]
    assert len(built) == len(set(built)) == 21 + 21 + 3 + 1, "a partition was built twice"
    # the logs came back from the workers
    succeeded = [r for r in runs if r["status"] == "succeeded"]
    assert all(
        (graph / ".databuild" / "runs" / str(r["job_run_id"]) / "log.txt").exists()
        for r in succeeded
    )

    second = run_cli(graph, "--json", "build", "summary/all")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["runs"] == 0
    assert DAYS == 17


# The first attempt records its pid and a background child's, then hangs until its worker
# is killed; the second attempt builds the partition and records that it did.
SLOW_JOB = """\
import os, subprocess, sys, time
from pathlib import Path

here = Path.cwd()
with open(here / "attempts", "a") as f:
    f.write(f"{os.getpid()}\\n")
if len((here / "attempts").read_text().split()) == 1:
    child = subprocess.Popen(["sleep", "1000"])
    (here / "first.pids").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(1000)
with open(here / "builds", "a") as f:
    f.write(sys.argv[1] + "\\n")
(here / "out.txt").write_text("built")
"""


def test_a_killed_worker_is_retried_as_lost_and_builds_once(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    graph = tmp_path / "graph"
    graph.mkdir()
    (graph / "slow.py").write_text(SLOW_JOB)
    (graph / "databuild.toml").write_text(
        '[graph]\nname = "lost"\n\n[jobs.slow]\noutputs = ["out/{name}"]\n'
        'command = ["python", "slow.py"]\nretries = 0\ntimeout = "2m"\n'
    )
    on_ray(graph, ray_cluster)
    build = subprocess.Popen(
        [DATABUILD, "--json", "build", "out/a"],
        cwd=graph,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pids = graph / "first.pids"
        deadline = time.monotonic() + 120
        while not pids.exists():
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the first attempt never started"
            time.sleep(0.05)
        job_pid, child_pid = (int(p) for p in pids.read_text().split())
        os.kill(_parent_of(job_pid), signal.SIGKILL)  # the Ray worker running the task
        out, err = build.communicate(timeout=180)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, out + err
    assert json.loads(out)["ok"] is True
    assert (graph / "builds").read_text() == "out/a\n", "the partition was built more than once"
    assert wait_until_gone(job_pid) and wait_until_gone(child_pid), "an orphan was left"
    runs = sorted(job_runs(graph), key=lambda r: str(r["job_run_id"]))
    assert [(r["status"], r["failure_kind"]) for r in runs] == [
        ("failed", "lost"),
        ("succeeded", ""),
    ], runs  # retries = 0, yet retried: a lost run does not count as a failure


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])
