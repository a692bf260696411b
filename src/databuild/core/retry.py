"""Retry policy: whether a failed run is tried again, and when. Pure; returns a decision."""

from __future__ import annotations

from dataclasses import dataclass

from databuild.core.events import FailureKind
from databuild.core.model import JobSpec


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_at: float  # 0.0 = give up

    @property
    def give_up(self) -> bool:
        return self.retry_at == 0.0


def decide_retry(
    job: JobSpec, kind: FailureKind, failures_so_far: int, now: float
) -> RetryDecision:
    """``failures_so_far`` counts earlier counted failures of the partitions of this run.

    A lost run (the service stopped under it) is retried at once and not counted; other
    retryable failures back off exponentially up to the job's limit.
    """
    if kind is FailureKind.LOST:
        return RetryDecision(max(now, 1e-6))  # 0.0 would read as "give up"
    if not kind.retryable or failures_so_far + 1 > job.retries:
        return RetryDecision(0.0)
    delay = min(job.retry_backoff_max_seconds, job.retry_backoff_seconds * 2**failures_so_far)
    return RetryDecision(max(now + delay, now + 1e-6))
