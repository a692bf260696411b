"""What a job run came to, as the executor reports it to the reconciler.

The executor turns exit codes, timeouts and the job's structured result into one of these;
the reconciler turns them into events. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from databuild.core.events import FailureKind, MissingDeps
from databuild.core.model import JobRunId


@dataclass(frozen=True, slots=True)
class RunSucceeded:
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class RunFailed:
    kind: FailureKind
    message: str
    exit_code: int
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class RunMissingDeps:
    missing: tuple[MissingDeps, ...]
    duration_seconds: float


RunOutcome = RunSucceeded | RunFailed | RunMissingDeps


@dataclass(frozen=True, slots=True)
class RunStartedReport:
    job_run_id: JobRunId
    pid: int


@dataclass(frozen=True, slots=True)
class RunFinishedReport:
    job_run_id: JobRunId
    outcome: RunOutcome


ExecutorReport = RunStartedReport | RunFinishedReport
