"""The executor port: how the runtime starts, watches and kills job runs.

The runtime (``databuild.runtime``) owns one ``Executor``; it calls ``start`` for each run
it dispatches while ``free_slots()`` is positive, and receives what happens through the
reporter it set: a ``RunStartedReport`` once the process is running, then one
``RunFinishedReport`` with the run's outcome. Adapters: ``local.LocalExecutor`` (a process
pool on this machine) and ``fake.FakeExecutor`` (for tests of the runtime).

An executor decides nothing about wants, retries or per-job concurrency (the caller does)
and never raises for problems of a job: a job that cannot be spawned is reported as a
``RunFinishedReport`` with ``FailureKind.SPAWN_ERROR``. It raises ``ExecutorError`` only
when the caller breaks the contract (no reporter set, no free slot, a run id used twice).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from databuild.core.errors import ExecutorError
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import ExecutorReport
from databuild.core.refs import PartitionRef
from databuild.executors.protocol import LOG_FILE_NAME, RESULT_FILE_NAME

Reporter = Callable[[ExecutorReport], None]

_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run to start: which job, which partitions, and where it lives.

    ``root_dir`` is the graph's root directory (the job's working directory); the run keeps
    its log and result file in ``runs_dir / job_run_id``.
    """

    job_run_id: JobRunId
    job: JobSpec
    partition_refs: tuple[PartitionRef, ...]
    graph_url: str
    root_dir: Path
    runs_dir: Path
    # inputs the job's hints name that were live at dispatch: the job is told (the local
    # executor sets $DATABUILD_LIVE_INPUTS) and its SDK need not ask about them
    live_inputs: tuple[PartitionRef, ...] = ()

    def __post_init__(self) -> None:
        # The id names a directory, so it must not be able to climb out of runs_dir.
        if not _RUN_ID.fullmatch(self.job_run_id):
            raise ExecutorError(
                f"job run id {self.job_run_id!r} cannot name a run directory "
                "(letters, digits, '_', '.', '-'; not starting with '.' or '-')"
            )
        if not self.partition_refs:
            raise ExecutorError(f"run {self.job_run_id} asks for no partitions")

    @property
    def run_dir(self) -> Path:
        return (self.runs_dir / self.job_run_id).absolute()

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE_NAME

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_FILE_NAME


# refs -> each known one's status ("live", ...); raises InvalidInput for a malformed ref
StatusSource = Callable[[Sequence[str]], dict[str, str]]


class Executor(ABC):
    """Runs jobs; reports each run's start and end through the reporter.

    Reports are delivered on the event loop that called ``start``. After ``kill`` returns,
    the executor reports nothing more for that run: the caller records the cancellation
    itself. A run that ended on its own before ``kill`` was called has already been reported.
    """

    @abstractmethod
    def set_reporter(self, reporter: Reporter) -> None:
        """Where reports go. Must be called before the first ``start``."""

    @abstractmethod
    def free_slots(self) -> int:
        """How many more runs ``start`` accepts now (the global limit minus running)."""

    @abstractmethod
    async def start(self, request: RunRequest) -> None:
        """Start one run and return once it is running (``RunStartedReport`` already
        reported) or could not be spawned (``RunFinishedReport`` with SPAWN_ERROR already
        reported). Raises ExecutorError only if the caller broke the contract."""

    @abstractmethod
    async def kill(self, job_run_id: JobRunId, reason: str) -> None:
        """Kill a run's whole process group and return once it is gone. Nothing more is
        reported for it. Killing a run that is not running does nothing."""

    @abstractmethod
    async def close(self) -> None:
        """Kill every run still going (reporting nothing for them) and release resources."""

    def stage(self, request: RunRequest) -> None:
        """A run the caller has decided to start, told before ``start`` while the decision
        is being made durable (the step's commit waits on the disk meanwhile). An executor
        may do here what no crash could make wrong, so that ``start`` does less once the
        commit is done: the local one creates the run's directory and log file. Nothing of
        the job may run yet. Never raises for a job's problem (``start`` reports it), and
        ``start`` works the same for a run never staged. A staged run that is never started
        (the commit failed) is let go by ``close``. It may be called on a thread other
        than the loop's, while the loop waits for it (the controller stages beside an
        append that runs on the loop): it touches only the run's own files and what the
        executor keeps of staged runs. The default does nothing."""
        return None

    def answer_statuses_with(self, source: StatusSource) -> None:
        """Where a running job's question "which of these partitions are live?" can be
        answered without HTTP (the local executor's warm workers ask over their pipe): the
        service's own answer, from its state. The default ignores it (jobs ask over HTTP)."""
        return None

    def prepare(self, jobs: Sequence[JobSpec], root_dir: Path) -> None:
        """A hint when the service starts: these jobs will run from ``root_dir``. An
        executor may get ready for them in the background (start warm workers); the
        default does nothing. Never raises for a job's problem (the run will report it)."""
        return None

    @abstractmethod
    def kill_orphan(self, job_run_id: JobRunId, pid: int) -> bool:
        """After a service restart: kill the process group of a run that a previous service
        process recorded as started with ``pid``, if it is still alive and still that run
        (not a reused pid). True if something was killed."""
