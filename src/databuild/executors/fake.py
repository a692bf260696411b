"""An executor that runs nothing, for tests of the runtime and the service.

Tests start runs through the ``Executor`` interface as the runtime would, look at what was
started, and decide each run's outcome with ``finish``. It keeps the port's contract (the
same contract tests run against it and ``LocalExecutor``) but starts no process, touches no
disk and has no clock, so a test that uses it is deterministic.
"""

from __future__ import annotations

from databuild.core.errors import ExecutorError
from databuild.core.events import FailureKind
from databuild.core.model import JobRunId
from databuild.core.outcomes import (
    ExecutorReport,
    RunFailed,
    RunFinishedReport,
    RunOutcome,
    RunStartedReport,
)
from databuild.executors.port import Executor, Reporter, RunRequest
from databuild.executors.protocol import NO_EXIT_CODE

_FIRST_FAKE_PID = 10_000


class FakeExecutor(Executor):
    """``slots`` is the global limit and may be changed at any time by the test.

    ``started`` lists every request ever started (including spawn failures set up with
    ``fail_spawn``), ``running`` the ones not yet finished or killed, ``killed`` each
    ``(job_run_id, reason)`` passed to ``kill`` for a running run. ``orphans`` holds the
    ``(job_run_id, pid)`` pairs that ``kill_orphan`` finds alive (and then kills).
    """

    def __init__(self, slots: int = 4) -> None:
        self.slots = slots
        self.started: list[RunRequest] = []
        self.running: dict[JobRunId, RunRequest] = {}
        self.pids: dict[JobRunId, int] = {}
        self.killed: list[tuple[JobRunId, str]] = []
        self.orphans: set[tuple[JobRunId, int]] = set()
        self.orphans_killed: list[tuple[JobRunId, int]] = []
        self.closed = False
        self._reporter: Reporter | None = None
        self._spawn_failures: dict[str, str] = {}
        self._next_pid = _FIRST_FAKE_PID

    def set_reporter(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def free_slots(self) -> int:
        return 0 if self.closed else max(0, self.slots - len(self.running))

    def fail_spawn(self, job_name: str, message: str = "") -> None:
        """Every later start of ``job_name`` fails to spawn, as a missing command would."""
        self._spawn_failures[job_name] = message or f"could not start job {job_name!r}"

    async def start(self, request: RunRequest) -> None:
        if self._reporter is None:
            raise ExecutorError("set_reporter must be called before start")
        if self.closed:
            raise ExecutorError("the executor is closed")
        if request.job_run_id in self.running:
            raise ExecutorError(f"run {request.job_run_id} is already running")
        if self.free_slots() == 0:
            raise ExecutorError(f"no free slot for run {request.job_run_id}")
        self.started.append(request)
        spawn_failure = self._spawn_failures.get(request.job.name)
        if spawn_failure is not None:
            failed = RunFailed(FailureKind.SPAWN_ERROR, spawn_failure, NO_EXIT_CODE, 0.0)
            self._report(RunFinishedReport(request.job_run_id, failed))
            return
        pid = self._next_pid
        self._next_pid += 1
        self.running[request.job_run_id] = request
        self.pids[request.job_run_id] = pid
        self._report(RunStartedReport(request.job_run_id, pid))

    def finish(self, job_run_id: JobRunId, outcome: RunOutcome) -> None:
        """End a running run with ``outcome`` and report it."""
        if job_run_id not in self.running:
            raise ExecutorError(f"run {job_run_id} is not running in the fake executor")
        del self.running[job_run_id]
        self._report(RunFinishedReport(job_run_id, outcome))

    async def kill(self, job_run_id: JobRunId, reason: str) -> None:
        if self.running.pop(job_run_id, None) is not None:
            self.killed.append((job_run_id, reason))

    async def close(self) -> None:
        self.closed = True
        for job_run_id in list(self.running):
            await self.kill(job_run_id, "the executor is closing")

    def kill_orphan(self, job_run_id: JobRunId, pid: int) -> bool:
        if (job_run_id, pid) not in self.orphans:
            return False
        self.orphans.discard((job_run_id, pid))
        self.orphans_killed.append((job_run_id, pid))
        return True

    def _report(self, report: ExecutorReport) -> None:
        assert self._reporter is not None
        self._reporter(report)
