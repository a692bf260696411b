"""RayExecutor on the real local cluster: the job protocol on a worker (environment, result
file, bounded log shipped back, exit codes), timeouts and cancels that kill the job's whole
process group, a worker killed under a run (LOST, nothing left behind) and per-job resources."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from executors.harness import Runs, python, wait_until_gone

from databuild.core.events import FailureKind
from databuild.core.model import JobSpec, RunResources
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunSucceeded
from databuild.executors.port import RunRequest
from databuild.executors.ray_executor import RayExecutor

from .conftest import WORKER_RESOURCE, RayCluster


@asynccontextmanager
async def attached(
    cluster: RayCluster, runs: Runs, slots: int = 2, **options: Any
) -> AsyncIterator[RayExecutor]:
    """A RayExecutor on the cluster reporting to ``runs``; closed on exit."""
    options.setdefault("kill_grace_seconds", 0.5)
    ray_executor = RayExecutor(slots, cluster.address, **options)
    runs.attach(ray_executor)
    try:
        yield ray_executor
    finally:
        await ray_executor.close()


def scenario(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 120))


def read_pids(path: Path) -> list[int]:
    """The pids a job wrote to ``path``, once it has written them."""
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return [int(pid) for pid in path.read_text().split()]


def job_with_a_child(runs: Runs) -> tuple[RunRequest, Path]:
    """A job that starts a background child and waits; it writes its pid and the child's
    to the returned path."""
    pids = runs.root / "pids"
    return runs.request("sh", "-c", f"sleep 1000 & echo $$ $! > {pids}; wait"), pids


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
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(request)
            started = runs.started(request.job_run_id)
            assert started is not None and started.pid > 0
            outcome = await runs.outcome(request.job_run_id)
            assert isinstance(outcome, RunSucceeded), outcome

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
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(failing)
            await ray_executor.start(missing)
            failed = await runs.outcome(failing.job_run_id)
            assert isinstance(failed, RunFailed)
            assert (failed.kind, failed.exit_code) == (FailureKind.EXIT_NONZERO, 3)
            assert "exited with code 3" in failed.message and "about to fail" in failed.message
            outcome = await runs.outcome(missing.job_run_id)
            assert isinstance(outcome, RunMissingDeps), outcome
            assert [m.missing_refs for m in outcome.missing] == [("raw/date=2024-01-01",)]

    scenario(body)


def test_the_log_shipped_back_is_bounded(ray_cluster: RayCluster, runs: Runs) -> None:
    request = runs.request(*python("print('x' * 100_000); print('the end')"))

    async def body() -> None:
        bounded = attached(ray_cluster, runs, 1, log_limit_bytes=1000, kill_grace_seconds=2.0)
        async with bounded as ray_executor:
            await ray_executor.start(request)
            assert isinstance(await runs.outcome(request.job_run_id), RunSucceeded)

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
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(request)
            outcome = await runs.outcome(request.job_run_id)
            assert isinstance(outcome, RunFailed) and outcome.kind is FailureKind.TIMEOUT

    scenario(body)
    assert wait_until_gone(read_pids(child_pid)[0])
    assert "timed out after 1 s" in request.log_path.read_text()


def test_cancelling_a_running_job_kills_its_subprocess(ray_cluster: RayCluster, runs: Runs) -> None:
    request, pids = job_with_a_child(runs)

    async def body() -> None:
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(request)
            job_pid, child = read_pids(pids)
            await ray_executor.kill(request.job_run_id, "the want was canceled")
            assert ray_executor.free_slots() == 2
            assert wait_until_gone(job_pid), "the job survived its cancel"
            assert wait_until_gone(child), "the job's background child survived its cancel"

    scenario(body)
    assert runs.finished(request.job_run_id) is None
    assert "killed: the want was canceled" in request.log_path.read_text()


def test_a_killed_worker_loses_the_run_and_leaves_no_process(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    request, pids = job_with_a_child(runs)

    async def body() -> None:
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(request)
            job_pid, child = read_pids(pids)
            worker = _parent_of(job_pid)
            os.kill(worker, signal.SIGKILL)  # the Ray worker process running the task
            outcome = await runs.outcome(request.job_run_id)
            assert isinstance(outcome, RunFailed), outcome
            assert outcome.kind is FailureKind.LOST, outcome
            assert "lost" in outcome.message
            assert wait_until_gone(job_pid) and wait_until_gone(child), "an orphan was left"

    scenario(body)


def test_a_node_lost_mid_run_loses_the_run_and_leaves_no_process(
    ray_cluster: RayCluster, runs: Runs
) -> None:
    node = ray_cluster.cluster.add_node(
        num_cpus=1, node_ip_address="127.0.0.1", resources={"doomed_node": 1}
    )
    ray_cluster.cluster.wait_for_nodes(timeout=60)
    request, pids = job_with_a_child(runs)
    request = with_resources(request, RunResources(num_cpus=1.0, custom=(("doomed_node", 1.0),)))

    async def body() -> None:
        async with attached(ray_cluster, runs) as ray_executor:
            await ray_executor.start(request)
            job_pid, child = read_pids(pids)
            # The node's raylet and everything of it killed, as when a machine goes away.
            await asyncio.to_thread(ray_cluster.cluster.remove_node, node, allow_graceful=False)
            outcome = await runs.outcome(request.job_run_id)
            assert isinstance(outcome, RunFailed), outcome
            assert outcome.kind is FailureKind.LOST, outcome
            assert wait_until_gone(job_pid) and wait_until_gone(child), "an orphan was left"

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
        async with attached(ray_cluster, runs, start_wait_seconds=1.0) as ray_executor:
            await ray_executor.start(placed)
            assert isinstance(await runs.outcome(placed.job_run_id), RunSucceeded)
            await ray_executor.start(too_big)
            await asyncio.sleep(1.0)
            assert runs.started(too_big.job_run_id) is None
            assert runs.finished(too_big.job_run_id) is None
            await ray_executor.kill(too_big.job_run_id, "never placed")

    scenario(body)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])
