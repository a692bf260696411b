"""RayExecutor on the real local cluster: the job protocol on a worker (environment, result
file, bounded log shipped back, exit codes), timeouts and cancels that kill the job's whole
process group, a worker killed under a run (LOST, nothing left behind) and per-job resources."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from executors.harness import Runs, python, wait_until_gone

from databuild.core.events import FailureKind
from databuild.core.model import JobSpec, RunResources
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunSucceeded
from databuild.executors.port import RunRequest
from databuild.executors.ray_executor import RayExecutor

from .conftest import WORKER_RESOURCE, RayCluster


def executor(cluster: RayCluster, slots: int = 2, **options: Any) -> RayExecutor:
    return RayExecutor(slots, cluster.address, kill_grace_seconds=0.5, **options)


def scenario(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 120))


def read_pid(path: Path) -> int:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return int(path.read_text().split()[0])


def with_resources(request: RunRequest, resources: RunResources) -> RunRequest:
    job = JobSpec(
        name=request.job.name,
        outputs=(),
        command=request.job.command,
        timeout_seconds=request.job.timeout_seconds,
        resources=resources,
    )
    return RunRequest(
        request.job_run_id,
        job,
        request.partition_refs,
        request.graph_url,
        request.root_dir,
        request.runs_dir,
    )


def test_a_run_follows_the_job_protocol_on_a_worker(ray_cluster: RayCluster, runs: Runs) -> None:
    code = (
        "import os, sys; print('hello from', os.getcwd()); "
        "print(sys.argv[1:], os.environ['DATABUILD_RUN_ID'], os.environ['DATABUILD_JOB_NAME'], "
        "os.environ['DATABUILD_GRAPH_URL']); "
        "assert os.path.isdir(os.path.dirname(os.environ['DATABUILD_RESULT_PATH']))"
    )
    request = runs.request(*python(code), refs=("out/date=2024-01-01", "out/x=$(rm -rf /)"))

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        started = runs.started(request.job_run_id)
        assert started is not None and started.pid > 0
        outcome = await runs.outcome(request.job_run_id)
        assert isinstance(outcome, RunSucceeded), outcome
        await ray_executor.close()

    scenario(body)
    log = request.log_path.read_text()
    assert f"hello from {runs.root}" in log
    assert "['out/date=2024-01-01', 'out/x=$(rm -rf /)']" in log
    assert f"{request.job_run_id} job http://127.0.0.1:9" in log


def test_exit_codes_missing_deps_and_the_log_tail(ray_cluster: RayCluster, runs: Runs) -> None:
    failing = runs.request(*python("import sys; print('about to fail'); sys.exit(3)"))
    missing = runs.request(
        *python(
            "import json, os, sys; json.dump({'missing': {sys.argv[1]: ['raw/date=2024-01-01']}},"
            " open(os.environ['DATABUILD_RESULT_PATH'], 'w'))"
        )
    )

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(failing)
        await ray_executor.start(missing)
        failed = await runs.outcome(failing.job_run_id)
        assert isinstance(failed, RunFailed)
        assert (failed.kind, failed.exit_code) == (FailureKind.EXIT_NONZERO, 3)
        assert "exited with code 3" in failed.message and "about to fail" in failed.message
        outcome = await runs.outcome(missing.job_run_id)
        assert isinstance(outcome, RunMissingDeps), outcome
        assert [m.missing_refs for m in outcome.missing] == [("raw/date=2024-01-01",)]
        await ray_executor.close()

    scenario(body)


def test_the_log_shipped_back_is_bounded(ray_cluster: RayCluster, runs: Runs) -> None:
    request = runs.request(*python("print('x' * 100_000); print('the end')"))

    async def body() -> None:
        ray_executor = RayExecutor(1, ray_cluster.address, log_limit_bytes=1000)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        assert isinstance(await runs.outcome(request.job_run_id), RunSucceeded)
        await ray_executor.close()

    scenario(body)
    log = request.log_path.read_text()
    assert len(log) < 3000
    assert "bytes of output dropped here" in log and log.rstrip().endswith("the end")


def test_timeout_kills_the_whole_process_group_on_the_worker(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    child_pid = runs.root / "child.pid"
    request = runs.request("sh", "-c", f"sleep 1000 & echo $! > {child_pid}; wait", timeout=1.0)

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        outcome = await runs.outcome(request.job_run_id)
        assert isinstance(outcome, RunFailed) and outcome.kind is FailureKind.TIMEOUT
        await ray_executor.close()

    scenario(body)
    assert wait_until_gone(read_pid(child_pid))
    assert "timed out after 1 s" in request.log_path.read_text()


def test_cancelling_a_running_job_kills_its_subprocess(ray_cluster: RayCluster, runs: Runs) -> None:
    pids = runs.root / "pids"
    request = runs.request("sh", "-c", f"sleep 1000 & echo $$ $! > {pids}; wait")

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        job_pid = read_pid(pids)
        child = int(pids.read_text().split()[1])
        await ray_executor.kill(request.job_run_id, "the want was canceled")
        assert ray_executor.free_slots() == 2
        assert wait_until_gone(job_pid), "the job survived its cancel"
        assert wait_until_gone(child), "the job's background child survived its cancel"
        await ray_executor.close()

    scenario(body)
    assert runs.finished(request.job_run_id) is None
    assert "killed: the want was canceled" in request.log_path.read_text()


def test_a_killed_worker_loses_the_run_and_leaves_no_process(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    pids = runs.root / "pids"
    request = runs.request("sh", "-c", f"sleep 1000 & echo $$ $! > {pids}; wait")

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        job_pid = read_pid(pids)
        child = int(pids.read_text().split()[1])
        worker = _parent_of(job_pid)
        os.kill(worker, signal.SIGKILL)  # the Ray worker process running the task
        outcome = await runs.outcome(request.job_run_id)
        assert isinstance(outcome, RunFailed), outcome
        assert outcome.kind is FailureKind.LOST, outcome
        assert "lost" in outcome.message
        assert wait_until_gone(job_pid) and wait_until_gone(child), "an orphan was left"
        await ray_executor.close()

    scenario(body)


def test_a_node_lost_mid_run_loses_the_run_and_leaves_no_process(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    node = ray_cluster.cluster.add_node(
        num_cpus=1, node_ip_address="127.0.0.1", resources={"doomed_node": 1}
    )
    ray_cluster.cluster.wait_for_nodes(timeout=60)
    pids = runs.root / "pids"
    request = with_resources(
        runs.request("sh", "-c", f"sleep 1000 & echo $$ $! > {pids}; wait"),
        RunResources(num_cpus=1.0, custom=(("doomed_node", 1.0),)),
    )

    async def body() -> None:
        ray_executor = executor(ray_cluster)
        runs.attach(ray_executor)
        await ray_executor.start(request)
        job_pid = read_pid(pids)
        child = int(pids.read_text().split()[1])
        # The node's raylet and everything of it killed, as when a machine goes away.
        await asyncio.to_thread(ray_cluster.cluster.remove_node, node, allow_graceful=False)
        outcome = await runs.outcome(request.job_run_id)
        assert isinstance(outcome, RunFailed), outcome
        assert outcome.kind is FailureKind.LOST, outcome
        assert wait_until_gone(job_pid) and wait_until_gone(child), "an orphan was left"
        await ray_executor.close()

    scenario(body)


def test_per_job_resources_decide_where_and_whether_a_run_starts(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    placed = with_resources(
        runs.request(*python("print('on the worker node')")),
        RunResources(num_cpus=0.5, custom=((WORKER_RESOURCE, 1.0),)),
    )
    # No node has 2 CPUs: Ray keeps it waiting, and start returns all the same.
    too_big = with_resources(runs.request("true"), RunResources(num_cpus=2.0))

    async def body() -> None:
        ray_executor = executor(ray_cluster, start_wait_seconds=1.0)
        runs.attach(ray_executor)
        await ray_executor.start(placed)
        assert isinstance(await runs.outcome(placed.job_run_id), RunSucceeded)
        await ray_executor.start(too_big)
        await asyncio.sleep(1.0)
        assert runs.started(too_big.job_run_id) is None
        assert runs.finished(too_big.job_run_id) is None
        await ray_executor.kill(too_big.job_run_id, "never placed")
        await ray_executor.close()

    scenario(body)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])
