"""The want and job-run lifecycles as tables.

Every status change the state fold makes is checked against these tables; an illegal one
raises ``IllegalTransition`` before anything changes. docs/lifecycles.md is generated from
them (``databuild docs lifecycles`` / tests/core/test_lifecycle.py keeps it true). Pure.
"""

from __future__ import annotations

from enum import StrEnum

from databuild.core.errors import IllegalTransition
from databuild.core.model import WantStatus

W = WantStatus
ACTIVE_WANT_STATUSES = frozenset({W.PENDING, W.BUILDING, W.WAITING, W.RETRYING})

# new status -> allowed; ``None`` is "does not exist yet".
WANT_TRANSITIONS: dict[WantStatus | None, frozenset[WantStatus]] = {
    None: ACTIVE_WANT_STATUSES,
    # pending -> waiting: its job's input hints name inputs that are not live yet
    W.PENDING: frozenset(
        {W.BUILDING, W.WAITING, W.SATISFIED, W.FAILED, W.UPSTREAM_FAILED, W.EXPIRED, W.CANCELED}
    ),
    W.BUILDING: frozenset(
        {W.PENDING, W.WAITING, W.RETRYING, W.SATISFIED, W.FAILED, W.EXPIRED, W.CANCELED}
    ),
    W.WAITING: frozenset(
        {W.PENDING, W.SATISFIED, W.FAILED, W.UPSTREAM_FAILED, W.EXPIRED, W.CANCELED}
    ),
    # retrying -> failed: a config reload removed the only job that built its partition
    W.RETRYING: frozenset({W.BUILDING, W.SATISFIED, W.FAILED, W.EXPIRED, W.CANCELED}),
    # a failed or canceled want asked for again is reopened with fresh retries
    W.FAILED: ACTIVE_WANT_STATUSES,
    W.UPSTREAM_FAILED: ACTIVE_WANT_STATUSES,
    W.CANCELED: ACTIVE_WANT_STATUSES,
    # satisfied -> active: only once its partition was invalidated (the fold checks that)
    W.SATISFIED: ACTIVE_WANT_STATUSES,
    W.EXPIRED: frozenset(),
}


class JobRunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING_DEPS = "missing_deps"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        # a set lookup: a restart asks this of every run (millions) in recover()
        return self in _RUN_OUTCOMES


R = JobRunStatus
_RUN_OUTCOMES = frozenset({R.SUCCEEDED, R.FAILED, R.MISSING_DEPS, R.CANCELED})
JOB_RUN_TRANSITIONS: dict[JobRunStatus | None, frozenset[JobRunStatus]] = {
    None: frozenset({R.QUEUED}),
    # a run can finish before its start is reported (a spawn error, a very fast job)
    R.QUEUED: frozenset({R.RUNNING}) | _RUN_OUTCOMES,
    R.RUNNING: _RUN_OUTCOMES,
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
    R.MISSING_DEPS: frozenset(),
    R.CANCELED: frozenset(),
}


class PartitionStatus(StrEnum):
    ABSENT = "absent"  # not built; dispatchable when some active want needs it
    BUILDING = "building"
    WAITING = "waiting"  # waits on missing upstream partitions
    BACKOFF = "backoff"  # a run failed; retried at retry_at
    LIVE = "live"
    FAILED = "failed"


def check_want(old: WantStatus | None, new: WantStatus) -> None:
    if new not in WANT_TRANSITIONS[old]:
        raise IllegalTransition(f"want cannot go from {old or 'nothing'} to {new}")


def check_run(old: JobRunStatus | None, new: JobRunStatus) -> None:
    if new not in JOB_RUN_TRANSITIONS[old]:
        raise IllegalTransition(f"job run cannot go from {old or 'nothing'} to {new}")


def mermaid(
    table: dict[WantStatus | None, frozenset[WantStatus]]
    | dict[JobRunStatus | None, frozenset[JobRunStatus]],
) -> str:
    """A Mermaid state diagram of a transition table (for docs/lifecycles.md)."""
    lines = ["stateDiagram-v2"]
    for old, news in table.items():
        for new in sorted(news, key=str):
            lines.append(f"    {'[*]' if old is None else old.value} --> {new.value}")
    return "\n".join(lines)
