"""One job process as every executor starts and ends it, wherever it runs.

The local executor (``local``, on this machine, fresh processes and warm workers) and the Ray
task (``ray_task``, on a worker node) both give a job the environment of ``run_environment``,
note a timeout and an output pipe held open in the run's log in the same words, kill what is
left of the process group with ``signal_group``, and turn the ended process into a
``RunOutcome`` with ``ended_outcome``: its exit status, whether it timed out and its result
file, classified by ``protocol.outcome_from``.

It starts no process and waits on nothing; it imports neither asyncio nor Ray, so that the
Ray task stays cheap to import on a worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import RunFailed, RunOutcome
from databuild.core.refs import PartitionRef
from databuild.executors.logs import BoundedLog
from databuild.executors.protocol import (
    ENV_GRAPH_URL,
    ENV_JOB_NAME,
    ENV_RESULT_PATH,
    ENV_RUN_ID,
    NO_EXIT_CODE,
    outcome_from,
)
from databuild.executors.result_file import result_or_failure

# How long to keep reading output after the process group is gone: only a process that
# left the group (setsid) can still hold the pipe, and it must not hold up the run.
DRAIN_SECONDS = 1.0

UNDRAINED_NOTE = "stopped reading output: a process that left the group holds it"


def timed_out_note(limit: float) -> str:
    return f"timed out after {limit:g} s: killing the process group"


def job_environment(job: JobSpec) -> dict[str, str]:
    """The environment of every run of ``job``, without the run's own variables."""
    env = dict(os.environ)
    env.update(job.env)
    # `python` in a job's command means the interpreter the service runs on.
    interpreter_dir = os.path.dirname(sys.executable)
    path = env.get("PATH")
    env["PATH"] = interpreter_dir + os.pathsep + path if path else interpreter_dir
    # Python jobs' output then reaches the log as it is printed, stdout and stderr in order.
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_environment(
    job: JobSpec, job_run_id: JobRunId, result_path: Path, graph_url: str
) -> dict[str, str]:
    """The environment of one run: the job's, and the job protocol's variables."""
    env = job_environment(job)
    env[ENV_RUN_ID] = job_run_id
    env[ENV_JOB_NAME] = job.name
    env[ENV_RESULT_PATH] = str(result_path)
    env[ENV_GRAPH_URL] = graph_url
    return env


def ended_outcome(
    returncode: int | None,
    timed_out: bool,
    result_path: Path,
    requested: Sequence[PartitionRef],
    duration: float,
    log: BoundedLog,
    timeout_seconds: float,
) -> RunOutcome:
    """The outcome of a job process that has ended with ``returncode`` (as ``subprocess``
    reports it: minus the signal number when a signal ended it; None when unknown). Reads
    the result file; a file that cannot be read or is too large fails the run."""
    exit_code = returncode if returncode is not None and returncode >= 0 else None
    killed_by = -returncode if returncode is not None and returncode < 0 else None
    code = returncode if returncode is not None else NO_EXIT_CODE
    result = result_or_failure(result_path, code, duration)
    if isinstance(result, RunFailed):
        return result
    return outcome_from(
        exit_code,
        killed_by,
        timed_out,
        result,
        requested,
        duration,
        log.tail_text(),
        timeout_seconds=timeout_seconds,
    )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
