"""Input hints: the inputs a job's ``inputs`` patterns name for one of its output partitions.

A job may declare ``inputs = ["raw/date={date}"]`` in ``databuild.toml``: patterns whose
``{field}``s are filled from the fields of the output pattern that matches the partition to
build. The reconciler asks ``resolve`` just before it dispatches a partition, and wants the
hinted inputs that are not live first (``Reconciler._wait_for_hints``), so that a job whose
inputs are known runs once instead of twice (once to report them missing, once to build).
Hints are advisory: the run's own discovery stays the source of truth.

Pure: no I/O. The loader checks at load time that every field a hint names is a field of
each of the job's output patterns (``missing_fields``); ``resolve`` skips, rather than
raises on, a hint it cannot fill (a graph assembled by hand, not by the loader).
"""

from __future__ import annotations

from databuild.core.errors import InvalidPartitionRef
from databuild.core.model import JobSpec
from databuild.core.refs import PartitionPattern, PartitionRef


def resolve(job: JobSpec, ref: PartitionRef) -> tuple[PartitionRef, ...]:
    """The inputs ``job``'s hints name for its output ``ref``, in hint order, without
    repeats and without ``ref`` itself (a partition never waits on itself)."""
    if not job.inputs:
        return ()
    values: dict[str, str] | None = None
    for pattern in job.outputs:
        values = pattern.match(ref)
        if values is not None:
            break
    if values is None:
        return ()
    found: dict[PartitionRef, None] = {}
    for hint in job.inputs:
        if any(name not in values for name in hint.fields):
            continue
        try:
            dep = hint.format(**values)
        except InvalidPartitionRef:
            continue
        if dep != ref:
            found[dep] = None
    return tuple(found)


def missing_fields(hint: PartitionPattern, output: PartitionPattern) -> tuple[str, ...]:
    """The fields ``hint`` names that ``output`` lacks (the loader refuses such a hint)."""
    own = set(output.fields)
    return tuple(name for name in hint.fields if name not in own)
