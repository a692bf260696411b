"""What a job run came to, as the executor reports it to the reconciler.

The executor turns exit codes, timeouts and the job's structured result into one of these;
the reconciler turns them into events. Pure data.

A batch run's outputs may end differently (``RunPartial``): each requested output is
built, lacks inputs (``missing``) or failed on its own (``failed``); one not named in
either was built.
"""

from __future__ import annotations

from dataclasses import dataclass

from databuild.core.events import FailureKind, MissingDeps
from databuild.core.model import JobRunId
from databuild.core.refs import PartitionRef


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
    """Some outputs lack inputs; ``built`` are those the job says it built meanwhile (a
    batch: they go live, only the others run again). Outputs in neither run again."""

    missing: tuple[MissingDeps, ...]
    duration_seconds: float
    built: tuple[PartitionRef, ...] = ()


@dataclass(frozen=True, slots=True)
class OutputFailed:
    """One output of a run failed on its own: ``kind`` is ``PERMANENT`` or a retryable one
    (``EXIT_NONZERO``), which goes through the job's retry policy for this output only."""

    partition_ref: PartitionRef
    kind: FailureKind
    message: str


@dataclass(frozen=True, slots=True)
class RunPartial:
    """Some outputs failed on their own (at least one), some may lack inputs, the rest
    were built. An output is in at most one of ``failed`` and ``missing``."""

    failed: tuple[OutputFailed, ...]
    missing: tuple[MissingDeps, ...]
    exit_code: int
    duration_seconds: float


RunOutcome = RunSucceeded | RunFailed | RunMissingDeps | RunPartial


@dataclass(frozen=True, slots=True)
class RunStartedReport:
    job_run_id: JobRunId
    pid: int
    at: float = 0.0  # when the controller received it (its clock); 0: the step's time


@dataclass(frozen=True, slots=True)
class RunFinishedReport:
    job_run_id: JobRunId
    outcome: RunOutcome


ExecutorReport = RunStartedReport | RunFinishedReport
