"""Observed lineage: which inputs each job was found to need, learned from the log.

Every ``job_run_missing_deps`` event says that a run of job J lacked input partitions. The
fold (``state``) calls ``observe`` for each such event; it files every missing ref under the
owner that routes it (a job's or an upstream's output pattern, or nobody) and counts it, so
the graph can show observed job -> job edges beside the declared jobs: "clean needs
``raw/date={date}`` of job ingest, seen 8 times, last at T". ``observed_edges`` lists them.

The owner is the one the graph in force at the time of the event routes the ref to (after
a config reload, older edges keep the owner they were seen with). Kept per (job, owner,
pattern), so its size is that of the graph, not of the log. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from databuild.core.model import GraphSpec
from databuild.core.refs import PartitionRef


class OwnerKind(StrEnum):
    JOB = "job"
    UPSTREAM = "upstream"
    NONE = "none"  # no job or upstream matched the ref when it was reported


@dataclass(frozen=True, slots=True)
class NeedKey:
    job: str  # the job whose run reported the input missing
    owner_kind: OwnerKind
    owner: str  # the job or upstream that provides the input ("" for none)
    pattern: str  # the owner's pattern that matched ("" for none)


@dataclass(slots=True)
class ObservedNeed:
    key: NeedKey
    count: int  # missing refs of this kind reported by runs of the job, over all runs
    first_seen: float
    last_seen: float
    example_ref: PartitionRef  # the latest such ref


def observe(
    needs: dict[NeedKey, ObservedNeed],
    job: str,
    missing_refs: Iterable[PartitionRef],
    graph: GraphSpec,
    now: float,
) -> None:
    """Fold one run's missing inputs (each ref once per run) into ``needs``."""
    for ref in dict.fromkeys(missing_refs):
        key = _key(job, ref, graph)
        need = needs.get(key)
        if need is None:
            needs[key] = ObservedNeed(key, 1, now, now, ref)
        else:
            need.count += 1
            need.last_seen = now
            need.example_ref = ref


def _key(job: str, ref: PartitionRef, graph: GraphSpec) -> NeedKey:
    for spec in graph.jobs:
        for pattern in spec.outputs:
            if pattern.match(ref) is not None:
                return NeedKey(job, OwnerKind.JOB, spec.name, pattern.template)
    for upstream in graph.upstreams:
        for pattern in upstream.partitions:
            if pattern.match(ref) is not None:
                return NeedKey(job, OwnerKind.UPSTREAM, upstream.name, pattern.template)
    return NeedKey(job, OwnerKind.NONE, "", "")


def observed_edges(needs: Mapping[NeedKey, ObservedNeed]) -> list[ObservedNeed]:
    """Every observed need, by job, then owner, then pattern."""
    return [needs[key] for key in sorted(needs, key=_order)]


def _order(key: NeedKey) -> tuple[str, str, str, str]:
    return (key.job, key.owner_kind.value, key.owner, key.pattern)
