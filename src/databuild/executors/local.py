"""The local executor: runs jobs as child processes of the service, on asyncio.

The runtime uses it in the embedded setup (one machine, SQLite). Each run is spawned as
``job.command + partition_refs`` without a shell, in its own session (so its whole process
group can be killed), with the graph root as working directory and the environment of the
job protocol. Its merged stdout and stderr go to a bounded log file; when it ends, its exit
status and result file become a ``RunOutcome`` through ``job_process.ended_outcome``.

It enforces only the global limit (``max_parallel``); per-job concurrency, retries and
everything about wants belong to the caller. It never blocks the event loop on a job and
never holds more than about twice ``log_limit_bytes`` of a job's output in memory.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from databuild.core.events import FailureKind
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import (
    RunFailed,
    RunFinishedReport,
    RunOutcome,
    RunStartedReport,
)
from databuild.executors import spawn
from databuild.executors.bounded import BoundedExecutor
from databuild.executors.job_process import (
    DRAIN_SECONDS,
    UNDRAINED_NOTE,
    ended_outcome,
    job_environment,
    run_environment,
    signal_group,
    timed_out_note,
)
from databuild.executors.logs import BoundedLog
from databuild.executors.port import RunRequest, StatusSource
from databuild.executors.protocol import (
    ENV_LIVE_INPUTS,
    ENV_RUN_ID,
    MAX_LIVE_INPUTS_CHARS,
    NO_EXIT_CODE,
)
from databuild.executors.warm import PoolKey, WarmPool, Worker, WorkerProtocol, pool_key

logger = logging.getLogger(__name__)


class _JobProtocol(asyncio.SubprocessProtocol):
    """Push-based: output goes straight to the bounded log, and the process's exit is seen
    even while a background grandchild still holds the pipe open."""

    def __init__(self, log: BoundedLog, loop: asyncio.AbstractEventLoop) -> None:
        self.log = log
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.log.write(data if isinstance(data, bytes) else data.encode())

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(eq=False)
class _Run:
    request: RunRequest
    transport: asyncio.SubprocessTransport
    protocol: _JobProtocol | WorkerProtocol
    pid: int
    started_at: float
    killed: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    worker: Worker | None = None  # set for a run in a warm worker


class LocalExecutor(BoundedExecutor[_Run]):
    def __init__(
        self,
        max_parallel: int,
        log_limit_bytes: int = 1 << 20,
        *,
        kill_grace_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_parallel, log_limit_bytes, kill_grace_seconds=kill_grace_seconds, clock=clock
        )
        self._warm = WarmPool()
        self._prespawning: set[asyncio.Task[None]] = set()
        self._staged: dict[JobRunId, _Staged] = {}
        # cold runs: spawned and watched by pidfd on the loop where the kernel can
        self._pidfd = spawn.pidfd_spawning()

    def stage(self, request: RunRequest) -> None:
        """The run's directory and log file and its environment, made while the step that
        decided it is committed (see the port); ``start`` takes them over."""
        if self._closed or request.job_run_id in self._runs:
            return  # start will refuse it, as it would unstaged
        earlier = self._staged.pop(request.job_run_id, None)
        if earlier is not None and earlier.log is not None:
            earlier.log.close()
        self._staged[request.job_run_id] = _prepared(request, self._log_limit)

    async def start(self, request: RunRequest) -> None:
        self._check_start(request)
        rid = request.job_run_id
        staged = self._staged.pop(rid, None)
        if staged is None or staged.request is not request:
            if staged is not None and staged.log is not None:
                staged.log.close()
            staged = _prepared(request, self._log_limit)
        log = staged.log
        if log is None:
            self._spawn_failed(rid, staged.problem, staged.kind)
            return
        if staged.problem:
            self._spawn_failed(rid, staged.problem, log=log)
            return
        if request.job.warm:
            await self._start_warm(request, log, staged.env)
            return
        argv = [*request.job.command, *request.partition_refs]
        loop = asyncio.get_running_loop()
        started_at = self._clock()
        protocol = _JobProtocol(log, loop)
        try:
            if self._pidfd:  # no thread per child (see executors.spawn)
                transport: asyncio.SubprocessTransport = spawn.spawn(
                    loop, protocol, argv, cwd=request.root_dir, env=staged.env
                )
            else:
                transport, _ = await loop.subprocess_exec(
                    lambda: protocol,
                    *argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=request.root_dir,
                    env=staged.env,
                    start_new_session=True,
                )
        except OSError as exc:
            message = _spawn_error_message(request, exc)
            self._spawn_failed(rid, message, _spawn_failure_kind(exc), log=log)
            return
        pid = transport.get_pid()
        run = _Run(request, transport, protocol, pid, started_at)
        self._runs[rid] = run
        self._report(RunStartedReport(rid, pid))
        run.task = asyncio.create_task(self._watch(run), name=f"databuild-run-{rid}")

    async def _start_warm(self, request: RunRequest, log: BoundedLog, env: dict[str, str]) -> None:
        rid = request.job_run_id
        started_at = self._clock()
        try:
            worker = await self._warm.acquire(request, env)
        except OSError as exc:
            message = _spawn_error_message(request, exc)
            self._spawn_failed(rid, message, _spawn_failure_kind(exc), log=log)
            return
        finished = worker.protocol.begin(log)
        worker.send(request, env)
        run = _Run(
            request, worker.transport, worker.protocol, worker.pid, started_at, worker=worker
        )
        self._runs[rid] = run
        self._report(RunStartedReport(rid, worker.pid))
        run.task = asyncio.create_task(self._watch_warm(run, finished), name=f"databuild-run-{rid}")

    async def _watch_warm(self, run: _Run, finished: asyncio.Future[int | None]) -> None:
        request, worker = run.request, run.worker
        assert worker is not None
        rid = request.job_run_id
        limit = request.job.timeout_seconds
        timed_out = False
        log = worker.protocol.log
        assert log is not None
        try:
            await asyncio.wait_for(asyncio.shield(finished), limit if limit > 0 else None)
        except TimeoutError:
            timed_out = not run.killed
            if timed_out:
                log.note(timed_out_note(limit))
            await self._terminate(run)
        returncode = finished.result() if finished.done() else None
        duration = self._clock() - run.started_at
        if returncode is None:  # the worker died under the run: its status is the run's
            await asyncio.shield(worker.protocol.exited)
            returncode = worker.transport.get_returncode()
            worker.kill()
        else:
            self._warm.release(worker)
        log.close()
        del self._runs[rid]
        if run.killed:
            return
        outcome = ended_outcome(
            returncode,
            timed_out,
            request.result_path,
            request.partition_refs,
            duration,
            log,
            limit,
        )
        self._report(RunFinishedReport(rid, outcome))

    def answer_statuses_with(self, source: StatusSource) -> None:
        self._warm.source = source

    async def kill(self, job_run_id: JobRunId, reason: str) -> None:
        run = self._runs.get(job_run_id)
        if run is None:
            return
        if not run.killed:
            run.killed = True
            if run.protocol.log is not None:
                run.protocol.log.note(f"killed: {reason}")
        await self._terminate(run)
        if run.task is not None:
            await asyncio.shield(run.task)

    async def close(self) -> None:
        await self._kill_all()
        for staged in self._staged.values():  # staged by a step whose commit failed
            if staged.log is not None:
                staged.log.close()
        self._staged.clear()
        for task in self._prespawning:
            task.cancel()
        if self._prespawning:
            await asyncio.gather(*self._prespawning, return_exceptions=True)
        await self._warm.close()

    def prepare(self, jobs: Sequence[JobSpec], root_dir: Path) -> None:
        """Start the warm workers the first runs will want, in the background, so that no
        run on the critical path of a cold build waits for an interpreter to start.

        Jobs that start alike share workers (``warm.pool_key``): each such group gets as
        many as it can use at once (its jobs' ``min(concurrency, max_parallel)`` summed,
        at most ``max_parallel``), first one per group, then a second, and so on. Groups in
        reverse declaration order of their jobs: a build starts from the wanted partitions,
        most often made by the jobs declared last, and discovers its way upstream (graphs
        are usually declared source first), so their workers are the first needed."""
        if not root_dir.is_dir():
            return
        groups: dict[PoolKey, tuple[JobSpec, dict[str, str], int]] = {}
        for job in reversed(jobs):
            if not job.warm:
                continue
            env = job_environment(job)
            key = pool_key(job, root_dir, env)
            first, first_env, slots = groups.get(key, (job, env, 0))
            slots = min(self._max_parallel, slots + min(job.concurrency, self._max_parallel))
            groups[key] = (first, first_env, slots)
        # the workers a group has already (idle or starting: an earlier ``prepare``, e.g.
        # the head start of ``databuild build``) count towards what it can use
        wanted = {key: slots - self._warm.held(key) for key, (_, _, slots) in groups.items()}
        plan = [
            (job, env)
            for n in range(max(wanted.values(), default=0))
            for key, (job, env, _) in groups.items()
            if n < wanted[key]
        ]
        if plan:
            task = asyncio.get_running_loop().create_task(self._warm.prespawn(plan, root_dir))
            self._prespawning.add(task)
            task.add_done_callback(self._prespawning.discard)

    def kill_orphan(self, job_run_id: JobRunId, pid: int) -> bool:
        if pid <= 1 or job_run_id in self._runs:
            return False
        marker = f"{ENV_RUN_ID}={job_run_id}".encode()
        if not any(_has_environ_entry(member, marker) for member in _group_members(pid)):
            return False
        signal_group(pid, signal.SIGKILL)
        return True

    async def _watch(self, run: _Run) -> None:
        rid = run.request.job_run_id
        try:
            outcome = await self._outcome(run)
        except Exception as exc:  # a bug here must not leave the run unreported forever
            logger.exception("watching run %s failed", rid, extra={"job_run_id": rid})
            signal_group(run.pid, signal.SIGKILL)
            run.transport.close()
            duration = self._clock() - run.started_at
            outcome = RunFailed(
                FailureKind.EXIT_NONZERO,
                f"the executor lost track of the run: {exc!r}",
                NO_EXIT_CODE,
                duration,
            )
        del self._runs[rid]
        if not run.killed:
            self._report(RunFinishedReport(rid, outcome))

    async def _outcome(self, run: _Run) -> RunOutcome:
        request, protocol = run.request, run.protocol
        assert isinstance(protocol, _JobProtocol)  # warm runs are watched by _watch_warm
        limit = request.job.timeout_seconds
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), limit if limit > 0 else None)
        except TimeoutError:
            timed_out = not run.killed
            if timed_out:
                protocol.log.note(timed_out_note(limit))
            await self._terminate(run)
        duration = self._clock() - run.started_at
        # Background children must not outlive their run (nor hold its output pipe).
        signal_group(run.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed), DRAIN_SECONDS)
        except TimeoutError:
            protocol.log.note(UNDRAINED_NOTE)
        run.transport.close()
        protocol.log.close()
        return ended_outcome(
            run.transport.get_returncode(),
            timed_out,
            request.result_path,
            request.partition_refs,
            duration,
            protocol.log,
            limit,
        )

    async def _terminate(self, run: _Run) -> None:
        """SIGTERM to the group, then SIGKILL after the grace period; returns when the
        group leader has exited."""
        if run.protocol.exited.done():
            return
        signal_group(run.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(run.protocol.exited), self._grace)
        except TimeoutError:
            signal_group(run.pid, signal.SIGKILL)
            await asyncio.shield(run.protocol.exited)

    def _spawn_failed(
        self,
        rid: JobRunId,
        message: str,
        kind: FailureKind = FailureKind.SPAWN_ERROR,
        *,
        log: BoundedLog | None = None,
    ) -> None:
        """Report a run that never started; its log, if it has one, says why and ends."""
        if log is not None:
            log.note(message)
            log.close()
        outcome = RunFailed(kind, message, NO_EXIT_CODE, 0.0)
        self._report(RunFinishedReport(rid, outcome))


@dataclass(eq=False)
class _Staged:
    """A run made ready to start: its log (None if its directory could not be made), why
    it cannot start (empty if it can), and its environment."""

    request: RunRequest
    log: BoundedLog | None
    problem: str = ""
    kind: FailureKind = FailureKind.SPAWN_ERROR
    env: dict[str, str] = field(default_factory=dict)


def _prepared(request: RunRequest, log_limit: int) -> _Staged:
    """The run's directory (with no result file left from an earlier try) and log file."""
    try:
        request.run_dir.mkdir(parents=True, exist_ok=True)
        request.result_path.unlink(missing_ok=True)
        log = BoundedLog(request.log_path, log_limit)
    except OSError as exc:
        message = f"could not prepare the run directory {request.run_dir}: {_os_error_text(exc)}"
        return _Staged(request, None, message, _spawn_failure_kind(exc))
    problem = _unstartable(request)
    return _Staged(request, log, problem, env={} if problem else _environment(request))


def _environment(request: RunRequest) -> dict[str, str]:
    env = run_environment(request.job, request.job_run_id, request.result_path, request.graph_url)
    live = "\n".join(request.live_inputs)
    if live and len(live) <= MAX_LIVE_INPUTS_CHARS:
        env[ENV_LIVE_INPUTS] = live
    return env


def _unstartable(request: RunRequest) -> str:
    if not request.job.command:
        return f"job {request.job.name!r} has an empty command"
    if not request.root_dir.is_dir():
        return (
            f"cannot start job {request.job.name!r}: the graph root directory "
            f"{request.root_dir} does not exist or is not a directory"
        )
    return ""


def _spawn_error_message(request: RunRequest, exc: OSError) -> str:
    program = request.job.command[0]
    where = (
        f"on PATH (the graph root is {request.root_dir})"
        if os.sep not in program
        else f"relative to the graph root {request.root_dir}"
    )
    if isinstance(exc, FileNotFoundError):
        reason = f"the command was not found {where}"
    elif isinstance(exc, PermissionError):
        reason = "permission denied (is it executable?)"
    elif exc.errno == errno.ENOEXEC:
        reason = "it is not an executable file (a script needs a #! line)"
    else:
        reason = _os_error_text(exc)
    return f"could not start job {request.job.name!r}: {program!r}: {reason}"


# The service itself ran out of something: the run is retried, not failed for good.
_EXHAUSTED = {
    errno.EMFILE: "the service is out of file descriptors (its ulimit -n is {nofile})",
    errno.ENFILE: "the system's file table is full",
    errno.EAGAIN: "out of processes (ulimit -u) or another resource",
    errno.ENOMEM: "out of memory",
}


def _spawn_failure_kind(exc: OSError) -> FailureKind:
    return FailureKind.NO_RESOURCES if exc.errno in _EXHAUSTED else FailureKind.SPAWN_ERROR


def _os_error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno in _EXHAUSTED:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        what = _EXHAUSTED[exc.errno].format(nofile=nofile)
        text = f"{text}: {what}"
    return text


def _group_members(pgid: int) -> list[int]:
    """Processes in process group ``pgid``, read from /proc (Linux); empty elsewhere."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat_line = f.read()
        except OSError:
            continue
        # The command name in parentheses may contain anything; fields follow the last ')'.
        fields = stat_line[stat_line.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode():
            members.append(int(entry))
    return members


def _has_environ_entry(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False
