"""The bookkeeping the local and the Ray executor share: at most ``max_parallel`` runs at
once, the runs going by id, the reporter, the port's contract checks on ``start`` and
killing every run on ``close``.

``local.LocalExecutor`` and ``ray_executor.RayExecutor`` subclass ``BoundedExecutor``; how a
run is started, watched and killed is theirs. It imports neither asyncio's subprocesses nor
Ray, and decides nothing about a run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from databuild.core.errors import ExecutorError
from databuild.core.model import JobRunId
from databuild.core.outcomes import ExecutorReport
from databuild.executors.port import Executor, Reporter, RunRequest

RunT = TypeVar("RunT")


class BoundedExecutor(Executor, Generic[RunT]):
    """An executor with a global limit of runs; ``RunT`` is what it keeps of a run."""

    def __init__(
        self,
        max_parallel: int,
        log_limit_bytes: int,
        *,
        kill_grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_parallel < 1:
            raise ExecutorError(f"max_parallel must be at least 1, not {max_parallel}")
        if log_limit_bytes < 1:
            raise ExecutorError(f"log_limit_bytes must be at least 1, not {log_limit_bytes}")
        self._max_parallel = max_parallel
        self._log_limit = log_limit_bytes
        self._grace = kill_grace_seconds
        self._clock = clock
        self._reporter: Reporter | None = None
        self._runs: dict[JobRunId, RunT] = {}
        self._closed = False
        # Reports that fail are logged as the subclass's module, where the run was watched.
        self._logger = logging.getLogger(type(self).__module__)

    def set_reporter(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def free_slots(self) -> int:
        return 0 if self._closed else max(0, self._max_parallel - len(self._runs))

    def _check_start(self, request: RunRequest) -> None:
        """Raise ExecutorError if starting ``request`` now would break the port's contract."""
        if self._reporter is None:
            raise ExecutorError("set_reporter must be called before start")
        if self._closed:
            raise ExecutorError("the executor is closed")
        rid = request.job_run_id
        if rid in self._runs:
            raise ExecutorError(f"run {rid} is already running")
        if self.free_slots() == 0:
            raise ExecutorError(f"no free slot for run {rid}: all {self._max_parallel} are busy")

    async def _kill_all(self) -> None:
        """Close to new runs and kill every run still going."""
        self._closed = True
        await asyncio.gather(
            *(self.kill(rid, "the executor is closing") for rid in list(self._runs))
        )

    def _report(self, report: ExecutorReport) -> None:
        assert self._reporter is not None
        try:
            self._reporter(report)
        except Exception:
            self._logger.exception("the executor's reporter failed on %r", report)
