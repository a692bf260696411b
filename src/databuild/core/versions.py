"""Job versions: which live partitions were built by another version of their job.

A job may declare ``version = "..."`` in ``databuild.toml``; each run records the version it
was dispatched under (``JobRunQueued.job_version``) and each partition it builds records it
too (``PartitionLive.job_version``). A live partition is *stale* when the job that builds it
now declares a version and the partition was built under a different one (an older
version, or before any was declared). Nothing is rebuilt because of it: staleness is
reported (``databuild partitions --stale``), and rebuilding is asked for explicitly.

Called by the views. Pure: reads a ``BuildState``, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from databuild.core.lifecycle import PartitionStatus
from databuild.core.state import BuildState, PartitionRecord


def is_stale(state: BuildState, part: PartitionRecord) -> bool:
    """Live, built by a run of a job that now declares another version."""
    if part.status is not PartitionStatus.LIVE or part.job_run_id is None:
        return False
    job_name = state.job_of(part.ref)
    if job_name is None:
        return False
    current = state.graph.job(job_name).version
    return bool(current) and part.job_version != current


def stale_partitions(state: BuildState) -> Iterator[PartitionRecord]:
    """Every stale partition, in the state's order (one pass over the partitions)."""
    return (p for p in state.partitions.values() if is_stale(state, p))
