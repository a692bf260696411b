"""The Ray executor: runs each job run as a Ray task on a cluster (``[executor] kind = "ray"``).

The service host builds it instead of the local process pool when the config says so; it is
the only module that imports Ray, and nothing imports it unless Ray was asked for (the
embedded default never loads Ray). Each run is one Ray task, ``ray_task.run_job``, asking
Ray for the job's ``[jobs.NAME.resources]``; the task runs the job's argv as a subprocess in
its own process group on a worker node with the same job protocol as the local executor and
ships the bounded log and the outcome back, which this side writes to the run directory and
reports.

What Ray adds to the contract of the port:

- A run whose worker or node is lost (``WorkerCrashedError``, ``NodeDiedError``, the raylet
  gone) ends as ``FailureKind.LOST``: the core retries it at once without counting it as a
  failure of the job. Ray's own retries are off (``max_retries=0``): every attempt is a new
  run id, so a late result of a superseded attempt belongs to a run the core has already
  closed and is ignored there (and never reported here once the run was killed).
- Kill and close cancel the task with ``ray.cancel(force=True)``, which kills the worker;
  the run's guard process on the node then kills the job's process group. The timeout is
  enforced on the worker, from the moment the job process starts (queueing does not count).
- ``kill_orphan`` kills nothing: when a service process dies, Ray ends the tasks it owned,
  and their guards end the job processes.

It decides nothing about wants or retries and never raises for a job's problem.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.exceptions

from databuild.core.events import FailureKind
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import (
    RunFailed,
    RunFinishedReport,
    RunOutcome,
    RunStartedReport,
)
from databuild.executors.bounded import BoundedExecutor
from databuild.executors.port import RunRequest
from databuild.executors.protocol import NO_EXIT_CODE
from databuild.executors.ray_task import Finished, JobTask, Started, run_job

logger = logging.getLogger(__name__)

# Infrastructure gone under the run: retried at once as LOST, not a failure of the job.
_LOST = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.RaySystemError,
)

# Ray's own retries are off: each attempt must be a run of its own (a new run id).
_remote_run_job = ray.remote(max_retries=0, retry_exceptions=False)(run_job)


@dataclass(eq=False)
class _Run:
    request: RunRequest
    generator: Any  # ray.ObjectRefGenerator
    started_at: float
    killed: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class RayExecutor(BoundedExecutor[_Run]):
    """Job runs as Ray tasks. ``address`` is what ``ray.init`` takes (``"auto"``,
    ``"ray://head:10001"``, ``"127.0.0.1:6379"``); when this process is already connected to
    Ray (``ray.is_initialized()``), that connection is used and left open on close."""

    def __init__(
        self,
        max_parallel: int,
        address: str = "auto",
        log_limit_bytes: int = 1 << 20,
        *,
        kill_grace_seconds: float = 2.0,
        start_wait_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_parallel, log_limit_bytes, kill_grace_seconds=kill_grace_seconds, clock=clock
        )
        self._address = address
        self._start_wait = start_wait_seconds
        self._connected = False
        self._owns_connection = False

    async def start(self, request: RunRequest) -> None:
        self._check_start(request)
        rid = request.job_run_id
        try:
            request.run_dir.mkdir(parents=True, exist_ok=True)
            request.result_path.unlink(missing_ok=True)
        except OSError as exc:
            self._finished(
                rid,
                _failed(
                    FailureKind.SPAWN_ERROR,
                    f"could not prepare the run directory {request.run_dir}: {exc.strerror or exc}",
                ),
            )
            return
        problem = await self._connect()
        if problem:
            self._write_log(request, f"[databuild] {problem}\n".encode())
            self._finished(rid, _failed(FailureKind.NO_RESOURCES, problem))
            return
        task = JobTask(
            job_run_id=rid,
            job=request.job,
            partition_refs=request.partition_refs,
            graph_url=request.graph_url,
            root_dir=str(request.root_dir.absolute()),
            log_limit_bytes=self._log_limit,
            kill_grace_seconds=self._grace,
        )
        generator = _remote_run_job.options(
            name=f"databuild:{request.job.name}:{rid}", **ray_options(request.job)
        ).remote(task)
        run = _Run(request, generator, self._clock())
        self._runs[rid] = run
        run.task = asyncio.create_task(self._watch(run), name=f"databuild-ray-run-{rid}")
        # Return once it runs, as the port asks; but a run Ray cannot place yet (the
        # cluster is busy or lacks the job's resources) must not hold up the caller.
        waiting = asyncio.ensure_future(run.started.wait())
        done, _ = await asyncio.wait(
            {waiting, run.task}, timeout=self._start_wait, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        if not done:
            logger.warning(
                "run %s is not running on Ray after %g s: does any node have the resources "
                "of job %r free (%s)?",
                rid,
                self._start_wait,
                request.job.name,
                ray_options(request.job),
            )

    async def kill(self, job_run_id: JobRunId, reason: str) -> None:
        run = self._runs.get(job_run_id)
        if run is None:
            return
        if not run.killed:
            run.killed = True
            # force=True kills the worker; the run's guard then kills the job's group.
            ray.cancel(run.generator, force=True)
            self._write_log(run.request, f"[databuild] killed: {reason}\n".encode(), append=True)
        if run.task is not None:
            await asyncio.shield(run.task)

    async def close(self) -> None:
        await self._kill_all()
        if self._owns_connection:
            await asyncio.to_thread(ray.shutdown)
            self._owns_connection = self._connected = False

    def kill_orphan(self, job_run_id: JobRunId, pid: int) -> bool:
        # The pid is on some worker node, not here; Ray ended the old service's tasks.
        return False

    async def _connect(self) -> str:
        if self._connected or ray.is_initialized():
            self._connected = True
            return ""
        try:
            await asyncio.to_thread(
                ray.init,
                address=self._address,
                namespace="databuild",
                log_to_driver=False,  # job output goes to the run's log, not ours
                logging_level=logging.WARNING,
            )
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            return f"cannot connect to the Ray cluster at {self._address!r}: {exc}"
        self._connected = self._owns_connection = True
        _keep_ray_notices_off_stdout()
        return ""

    async def _watch(self, run: _Run) -> None:
        rid = run.request.job_run_id
        outcome: RunOutcome | None
        try:
            outcome = await self._follow(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the run unreported forever
            logger.exception("watching Ray run %s failed", rid, extra={"job_run_id": rid})
            outcome = _failed(
                FailureKind.EXIT_NONZERO, f"the executor lost track of the run: {exc!r}"
            )
        run.started.set()
        del self._runs[rid]
        if outcome is not None and not run.killed:
            self._finished(rid, outcome)

    async def _follow(self, run: _Run) -> RunOutcome | None:
        """Await the task's two items: report Started, return the outcome (None: killed)."""
        rid = run.request.job_run_id
        try:
            async for ref in run.generator:
                item = await ref
                if item.job_run_id != rid:  # never expected: Ray gave us another run's item
                    logger.error("Ray run %s reported for run %s; ignored", rid, item.job_run_id)
                    continue
                if isinstance(item, Started):
                    if not run.killed:
                        self._report(RunStartedReport(rid, item.pid))
                    run.started.set()
                elif isinstance(item, Finished):
                    if not run.killed:
                        self._write_log(run.request, item.log)
                    return item.outcome
        except ray.exceptions.TaskCancelledError:
            return None
        except _LOST as exc:
            if run.killed:  # force-cancelling kills the worker, which reads as a crash
                return None
            message = (
                "the Ray worker or node running this job was lost "
                f"({type(exc).__name__}); retried without counting as a failure"
            )
            self._write_log(run.request, f"[databuild] {message}\n{exc}\n".encode(), append=True)
            return _failed(FailureKind.LOST, message, self._clock() - run.started_at)
        except ray.exceptions.OutOfMemoryError as exc:
            if run.killed:
                return None
            message = f"Ray killed the job's worker for using too much memory: {exc}"
            self._write_log(run.request, f"[databuild] {message}\n".encode(), append=True)
            return _failed(FailureKind.EXIT_NONZERO, message, self._clock() - run.started_at)
        except (ray.exceptions.RuntimeEnvSetupError, ray.exceptions.TaskUnschedulableError) as exc:
            if run.killed:
                return None
            message = f"Ray could not start the job: {exc}"
            self._write_log(run.request, f"[databuild] {message}\n".encode(), append=True)
            return _failed(FailureKind.SPAWN_ERROR, message)
        except ray.exceptions.RayTaskError as exc:
            if run.killed:
                return None
            message = f"the Ray task failed: {exc}"
            return _failed(FailureKind.EXIT_NONZERO, message, self._clock() - run.started_at)
        if run.killed:
            return None
        return _failed(FailureKind.LOST, "the Ray task ended without reporting an outcome")

    def _write_log(self, request: RunRequest, data: bytes, *, append: bool = False) -> None:
        try:
            with open(request.log_path, "ab" if append else "wb") as f:
                f.write(data)
        except OSError as exc:
            logger.warning("cannot write job log %s: %s", request.log_path, exc)

    def _finished(self, rid: JobRunId, outcome: RunOutcome) -> None:
        self._report(RunFinishedReport(rid, outcome))


def _keep_ray_notices_off_stdout() -> None:
    """A Ray driver prints the cluster's notices ("a worker died...") to its stdout, which
    in ``databuild --json build`` is the JSON a script reads. Ray has no switch for it, so
    its printer (private; left alone if it is not there) is pointed at our logger."""
    private = getattr(ray, "_private", None)
    worker = getattr(private, "worker", None)
    if worker is None or not hasattr(worker, "print_to_stdstream"):
        return

    def to_logger(data: dict[str, Any], ignore_prefix: bool) -> None:
        for line in data.get("lines", ()):
            logger.warning("Ray (%s): %s", data.get("pid", "?"), line)

    worker.print_to_stdstream = to_logger


def ray_options(job: JobSpec) -> dict[str, Any]:
    """The Ray task options for one run of ``job``: its ``[jobs.NAME.resources]``."""
    resources = dict(job.resources.custom)
    options: dict[str, Any] = {"num_cpus": job.resources.num_cpus}
    if "GPU" in resources:
        options["num_gpus"] = resources.pop("GPU")
    if job.resources.memory_bytes:
        options["memory"] = job.resources.memory_bytes
    if resources:
        options["resources"] = resources
    return options


def _failed(kind: FailureKind, message: str, duration: float = 0.0) -> RunFailed:
    return RunFailed(kind, message, NO_EXIT_CODE, duration)
