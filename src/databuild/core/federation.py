"""Cross-graph coordination, the pure decisions (issue 9; docs/federation.md).

A graph follows each of its ``[upstreams.NAME]`` through the upstream's GraphService API
(``runtime.upstreams`` does the I/O). What is decided here, without I/O:

- which partition patterns and event types a follower asks the upstream for (filtered
  server-side: ``follow_types``, ``PatternSet``);
- where it resumes: after the cursor recorded in this graph's own Build Event Log (the
  ``upstream_sequence`` of the newest ``PartitionLive`` learned from that upstream), or,
  when the upstream cannot be resumed (another graph answers at its URL, or its log ends
  before the cursor: it was reset or replaced), by a relist of the partitions it provides
  (``resume_plan``);
- which refs an upstream may make live here (``provided_by``: only those it provides, so
  an upstream never makes a locally built partition live);
- which local wants are forwarded to an upstream, with what data timestamp, SLA and TTL
  (``forwards``), and which forwarded wants are no longer needed (``unneeded``);
- the back-off between reconnects: capped exponential with full jitter (``backoff``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from databuild.core.model import GraphSpec, UpstreamSpec, WantSource, want_id_for
from databuild.core.refs import PartitionPattern, PartitionRef
from databuild.core.state import BuildState

# What a follower asks an upstream for: availability, and the end of the wants it forwarded.
LIVE_TYPES = ("partition_live",)
WANT_END_TYPES = ("want_failed", "want_expired", "want_canceled")

BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class PatternSet:
    """Several partition patterns; a ref matches the set when it matches one of them."""

    patterns: tuple[PartitionPattern, ...]

    def match(self, ref: str) -> dict[str, str] | None:
        for pattern in self.patterns:
            found = pattern.match(ref)
            if found is not None:
                return found
        return None


def follow_types() -> tuple[str, ...]:
    """The event types a follower asks its upstream for (server-side filter)."""
    return LIVE_TYPES + WANT_END_TYPES


def provided_by(graph: GraphSpec, upstream: str, ref: PartitionRef) -> bool:
    """Whether ``upstream`` is the one owner of ``ref`` in ``graph`` (so it may make it
    live here). A ref a local job builds, or no upstream of that name provides, is not."""
    route = graph.route(ref)
    return route.upstream is not None and route.upstream.name == upstream


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """``relist``: list the upstream's partitions again (the cursor cannot be resumed);
    ``after``: the upstream sequence to follow from; ``why``: for the log and status."""

    relist: bool
    after: int
    why: str = ""


def resume_plan(
    cursor: int,
    upstream_graph: str,
    upstream_last_sequence: int,
    known_graph: str,
) -> ResumePlan:
    """Where a follower resumes, from what the upstream's ``/healthz`` says.

    ``cursor``: the newest upstream sequence recorded here (0: never followed).
    ``known_graph``: the graph name this follower last saw at that URL ("" if none yet).
    A first follow (cursor 0) reads the upstream's log from its start (filtered there, so
    it learns every partition made live before it followed); a different graph, or an
    upstream log shorter than the cursor (reset, replaced), is a gap that cannot be
    resumed: relist, then follow from the upstream's current end."""
    if known_graph and upstream_graph != known_graph:
        return ResumePlan(
            True,
            upstream_last_sequence,
            f"the upstream is now graph {upstream_graph!r}, not {known_graph!r}: relisting",
        )
    if upstream_last_sequence < cursor:
        return ResumePlan(
            True,
            upstream_last_sequence,
            f"the upstream's log ends at event {upstream_last_sequence}, before this "
            f"graph's cursor {cursor} (its log was reset or replaced): relisting",
        )
    return ResumePlan(False, cursor)


def backoff(attempt: int, unit: float) -> float:
    """Delay before reconnect ``attempt`` (0-based), given ``unit`` uniform in [0, 1):
    exponential from 0.1 s, capped at 10 s, full jitter over the upper half."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** min(attempt, 16))
    return ceiling / 2 + unit * ceiling / 2


@dataclass(frozen=True, slots=True)
class Forward:
    """A want to create in the upstream on behalf of local wants on ``ref``.

    ``upstream_want_id`` is the id the upstream gives it (deterministic: its ref, data
    timestamp and source ``upstream_graph``), so forwarding again is idempotent."""

    upstream: str
    ref: PartitionRef
    data_timestamp: int
    sla_seconds: int
    ttl_seconds: int
    upstream_want_id: str


def _seconds_from(anchor: int, at: float) -> int:
    if math.isinf(at):
        return 0
    return max(1, math.ceil(at - anchor))


def forwards(
    state: BuildState, upstream: UpstreamSpec, among: Iterable[PartitionRef] | None = None
) -> list[Forward]:
    """The wants this graph needs from ``upstream``: one per partition it provides that
    has active local wants and is not live here (of ``among`` only, when given: the refs
    the events since the last look were about, so a look costs what changed). Its data timestamp is the earliest of
    those wants'; its SLA and TTL reach the earliest SLA deadline and the latest expiry
    among them (0: none of them has one), so the upstream works for the most urgent
    want and keeps working while any still needs it."""
    out: list[Forward] = []
    if among is None:
        candidates = list(state.partitions.items())
    else:
        found = ((r, state.partitions.get(r)) for r in set(among))
        candidates = [(r, p) for r, p in found if p is not None]
    for ref, part in candidates:
        if not part.active_wants or state.is_live(ref) or not upstream.provides(ref):
            continue
        wants = [state.wants[w].want for w in part.active_wants]
        stamp = min(w.data_timestamp for w in wants)
        sla_deadlines = [w.sla_deadline for w in wants if w.sla_seconds]
        sla = _seconds_from(stamp, min(sla_deadlines)) if sla_deadlines else 0
        ttl = (
            0
            if any(not w.ttl_seconds for w in wants)
            else _seconds_from(stamp, max(w.expires_at for w in wants))
        )
        out.append(
            Forward(
                upstream.name,
                ref,
                stamp,
                sla,
                ttl,
                want_id_for(ref, stamp, WantSource.UPSTREAM_GRAPH),
            )
        )
    out.sort(key=lambda f: f.ref)
    return out


def unneeded(forwarded: Iterable[PartitionRef], state: BuildState) -> list[PartitionRef]:
    """Of the refs forwarded so far, those no active local want needs any more and that
    are not live here: their forwarded wants are canceled in the upstream."""
    out = []
    for ref in forwarded:
        part = state.partitions.get(ref)
        if (part is None or not part.active_wants) and not state.is_live(ref):
            out.append(ref)
    return sorted(out)


__all__ = [
    "LIVE_TYPES",
    "WANT_END_TYPES",
    "Forward",
    "PatternSet",
    "ResumePlan",
    "backoff",
    "follow_types",
    "forwards",
    "provided_by",
    "resume_plan",
    "unneeded",
]
