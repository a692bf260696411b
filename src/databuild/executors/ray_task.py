"""What one job run does inside a Ray task, on a worker node: the job protocol, remote side.

``ray_executor.RayExecutor`` submits ``run_job`` as a Ray task (a streaming generator). On
the worker it starts ``argv`` without a shell in its own session, with the graph root as
working directory and the job protocol's environment, captures its output to a bounded log
in a private temporary directory, enforces the timeout (SIGTERM to the group, SIGKILL after
the grace period), kills what is left of the group once the job has ended, reads the result
file and classifies the run with ``job_process.ended_outcome``, as the local executor does.
It yields twice: a ``Started`` once the process runs, then a ``Finished`` with the outcome
and the log's bytes.

Nothing here imports Ray: the module is plain Python that runs wherever Ray puts it. A worker
that dies (killed, its node lost, ``ray.cancel(force=True)``) cannot clean up after itself,
so every run has a guard: a small detached process (not a child of the worker, which Ray
would kill with it) that holds a pipe from the worker and, when the pipe closes for any
reason, kills the job's process group and removes the temporary directory. No job process outlives the task that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from databuild.core.events import FailureKind
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import RunFailed, RunOutcome
from databuild.core.refs import PartitionRef
from databuild.executors.job_process import (
    DRAIN_SECONDS,
    UNDRAINED_NOTE,
    ended_outcome,
    run_environment,
    signal_group,
    timed_out_note,
)
from databuild.executors.logs import BoundedLog
from databuild.executors.protocol import LOG_FILE_NAME, NO_EXIT_CODE, RESULT_FILE_NAME

# Detaches itself (Ray kills the processes a dead worker leaves as children, the guard
# included, so the guard must not be one), reads the job's process group id, waits for the
# worker's end of the pipe to close (the run ended, or the worker died), then kills the group
# and removes the run's files.
_GUARD = """\
import os, shutil, signal, sys
if os.fork():
    os._exit(0)
os.setsid()
line = sys.stdin.readline()
sys.stdin.read()
if line.strip():
    try:
        os.killpg(int(line), signal.SIGKILL)
    except OSError:
        pass
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


@dataclass(frozen=True, slots=True)
class JobTask:
    """Everything the worker needs to run one job run (pickled to the worker)."""

    job_run_id: JobRunId
    job: JobSpec
    partition_refs: tuple[PartitionRef, ...]
    graph_url: str
    root_dir: str
    log_limit_bytes: int
    kill_grace_seconds: float


@dataclass(frozen=True, slots=True)
class Started:
    job_run_id: JobRunId
    pid: int
    node: str


@dataclass(frozen=True, slots=True)
class Finished:
    job_run_id: JobRunId
    outcome: RunOutcome
    log: bytes


def run_job(task: JobTask) -> Iterator[Started | Finished]:
    """The body of the Ray task. Yields ``Started`` then ``Finished``, or only ``Finished``
    when the job could not be started (a spawn error, as the local executor reports it)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"databuild-{task.job_run_id}-"))
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _GUARD, str(workdir)],  # -S: no site, a faster start
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert guard.stdin is not None
    guard.wait()  # its first half exits at once; the detached second half guards the run
    try:
        yield from _run(task, workdir, guard)
    finally:
        # Closing the pipe is the guard's signal: group killed, files removed.
        with contextlib.suppress(OSError):
            guard.stdin.close()


def _run(
    task: JobTask, workdir: Path, guard: subprocess.Popen[bytes]
) -> Iterator[Started | Finished]:
    log_path = workdir / LOG_FILE_NAME
    result_path = workdir / RESULT_FILE_NAME
    log = BoundedLog(log_path, task.log_limit_bytes)
    started_at = time.monotonic()
    node = socket.gethostname()
    problem = _unstartable(task)
    if problem:
        yield _spawn_failed(task, log, log_path, problem)
        return
    env = run_environment(task.job, task.job_run_id, result_path, task.graph_url)
    argv = [*task.job.command, *task.partition_refs]
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=task.root_dir,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        message = f"could not start job {task.job.name!r}: {argv[0]!r}: {exc.strerror or exc}"
        yield _spawn_failed(task, log, log_path, message)
        return
    assert guard.stdin is not None and process.stdout is not None
    guard.stdin.write(f"{process.pid}\n".encode())
    guard.stdin.flush()
    reader = threading.Thread(target=_copy, args=(process.stdout, log), daemon=True)
    reader.start()
    yield Started(task.job_run_id, process.pid, node)
    limit = task.job.timeout_seconds
    timed_out = False
    try:
        process.wait(timeout=limit if limit > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        log.note(timed_out_note(limit))
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=task.kill_grace_seconds)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
    duration = time.monotonic() - started_at
    # Background children must not outlive their run (nor hold its output pipe).
    signal_group(process.pid, signal.SIGKILL)
    reader.join(DRAIN_SECONDS)
    if reader.is_alive():
        log.note(UNDRAINED_NOTE)
    log.close()
    outcome = ended_outcome(
        process.returncode, timed_out, result_path, task.partition_refs, duration, log, limit
    )
    yield Finished(task.job_run_id, outcome, _read_log(log_path))


def _copy(stream: IO[bytes], log: BoundedLog) -> None:
    fd = stream.fileno()
    while chunk := os.read(fd, 65536):
        log.write(chunk)
    stream.close()


def _unstartable(task: JobTask) -> str:
    if not task.job.command:
        return f"job {task.job.name!r} has an empty command"
    if not os.path.isdir(task.root_dir):
        return (
            f"cannot start job {task.job.name!r} on Ray node {socket.gethostname()}: the graph "
            f"root directory {task.root_dir} does not exist there (every node needs the graph "
            "at the same path)"
        )
    return ""


def _spawn_failed(task: JobTask, log: BoundedLog, log_path: Path, message: str) -> Finished:
    log.note(message)
    log.close()
    outcome = RunFailed(FailureKind.SPAWN_ERROR, message, NO_EXIT_CODE, 0.0)
    return Finished(task.job_run_id, outcome, _read_log(log_path))


def _read_log(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
