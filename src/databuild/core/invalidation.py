"""Invalidation: which live partitions a ``databuild partition invalidate`` makes absent.

A partition that turned out wrong is *invalidated*: it stops being live (no job's liveness
query and no want sees it live), and it is rebuilt when wanted. With ``downstream``, every
partition built from it is invalidated too, transitively. What was built from what is
learned from the log: each ``job_run_missing_deps`` event names, per output, the inputs a
run lacked, and the fold keeps them on the run (``JobRunRecord.missing``). A run that found
all its inputs live reported none, so an edge is known only once a build discovered it
(a cold build discovers all of them); docs/concepts.md says so. Inputs a partition waited on
because its job's ``inputs`` hints named them (``PartitionWaiting``) are edges too.

``by_version`` picks the live partitions of one job built under another version of it
(``core.versions``): ``invalidate --job NAME --older-than-version``.

Pure: reads a ``BuildState``; the reconciler records the decided set as one
``PartitionsInvalidated`` event. Errors are ``InvalidInput`` naming the ref.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from databuild.core.errors import InvalidInput
from databuild.core.lifecycle import PartitionStatus
from databuild.core.refs import PartitionRef
from databuild.core.state import BuildState
from databuild.core.versions import is_stale

MAX_INVALIDATE = 100_000  # refs in one invalidation (the event is one log record)


def dependents(
    state: BuildState, refs: Iterable[PartitionRef]
) -> dict[PartitionRef, set[PartitionRef]]:
    """input ref (of ``refs``) -> the outputs whose runs reported it missing (built from
    it since), or that waited on it through a hint. Finished runs' edges are asked of the
    history store by input, so a step of the walk costs its frontier, not the history."""
    wanted = set(refs)
    edges: defaultdict[PartitionRef, set[PartitionRef]] = defaultdict(set)
    for run in state.runs.in_memory():
        for item in run.missing:
            for dep in item.missing_refs:
                if dep in wanted:
                    edges[dep].add(item.partition_ref)
    for stored, outs in state.history.dependents_of(sorted(wanted)).items():
        edges[PartitionRef(stored)].update(PartitionRef(o) for o in outs)
    for ref, deps in state.hinted_inputs.items():  # inputs waited on before a run (hints)
        for dep in deps:
            if dep in wanted:
                edges[dep].add(ref)
    return edges


def plan(
    state: BuildState, refs: Iterable[PartitionRef], *, downstream: bool
) -> tuple[PartitionRef, ...]:
    """The live partitions to invalidate, in a stable order: ``refs`` first (each must be
    live and not an upstream graph's), then, with ``downstream``, every live partition
    built from them, breadth first. Partitions downstream that are not live are skipped
    (nothing to invalidate there)."""
    chosen: dict[PartitionRef, None] = {}
    for ref in refs:
        part = state.partitions.get(ref)
        if part is None or part.status is not PartitionStatus.LIVE:
            status = part.status.value if part is not None else "unknown to this graph"
            raise InvalidInput(f"cannot invalidate {ref}: it is {status}, not live")
        _check_local(state, ref)
        chosen[ref] = None
    if downstream:
        frontier = list(chosen)
        while frontier:
            nxt: list[PartitionRef] = []
            edges = dependents(state, frontier)
            for ref in frontier:
                for out in sorted(edges.get(ref, ())):
                    if out not in chosen and state.is_live(out):
                        chosen[out] = None
                        nxt.append(out)
            frontier = nxt
    if len(chosen) > MAX_INVALIDATE:
        raise InvalidInput(
            f"invalidation of {len(chosen)} partitions refused: at most {MAX_INVALIDATE} at once"
        )
    return tuple(chosen)


def by_version(state: BuildState, job: str) -> tuple[PartitionRef, ...]:
    """The live partitions of ``job`` built under another version than it declares now."""
    spec = next((j for j in state.graph.jobs if j.name == job), None)
    if spec is None:
        known = ", ".join(sorted(j.name for j in state.graph.jobs)) or "none"
        raise InvalidInput(f"unknown job {job!r} (jobs: {known})")
    if not spec.version:
        raise InvalidInput(
            f"job {job!r} declares no version in databuild.toml: nothing is older than it"
        )
    return tuple(
        p.ref
        for p in state.partitions.values()
        if is_stale(state, p) and state.job_of(p.ref) == job
    )


def _check_local(state: BuildState, ref: PartitionRef) -> None:
    part = state.partitions[ref]
    if part.upstream and not part.upstream.startswith("external "):
        raise InvalidInput(
            f"cannot invalidate {ref}: upstream graph {part.upstream} owns it (invalidate it there)"
        )
