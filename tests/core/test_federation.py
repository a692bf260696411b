"""The pure decisions of cross-graph coordination (core.federation) and the reconciler's
part: an upstream partition made live here (with its cursor), an upstream failure.

The property test plays a follower against a fake upstream log with random disconnects
and restarts: whatever the interruptions, every upstream partition is learned exactly
once, and the cursor recorded here never passes an event not yet applied."""

from __future__ import annotations

import random

from core_helpers import DAY, T0, Sim, job, missing, ref
from hypothesis import given, settings
from hypothesis import strategies as st

from databuild.core import events as ev
from databuild.core.federation import (
    BACKOFF_CAP_SECONDS,
    PatternSet,
    backoff,
    follow_types,
    forwards,
    provided_by,
    resume_plan,
    unneeded,
)
from databuild.core.model import GraphSpec, UpstreamSpec, WantSource, want_id_for
from databuild.core.refs import PartitionPattern
from databuild.core.state import BuildState, canonical

RAW = "raw/date=2024-01-02"
REPORT = "report/date=2024-01-02"


def upstream(name: str = "ingest", *patterns: str) -> UpstreamSpec:
    return UpstreamSpec(
        name=name,
        url="http://127.0.0.1:1",
        partitions=tuple(PartitionPattern.compile(p) for p in patterns or ("raw/date={date}",)),
    )


def fed_graph() -> GraphSpec:
    return GraphSpec(
        name="reports", jobs=(job("report", "report/date={date}"),), upstreams=(upstream(),)
    )


def test_pattern_set_matches_any() -> None:
    patterns = PatternSet(
        (PartitionPattern.compile("raw/date={date}"), PartitionPattern.compile("x/{id}"))
    )
    assert patterns.match("raw/date=2024-01-01") == {"date": "2024-01-01"}
    assert patterns.match("x/7") == {"id": "7"}
    assert patterns.match("y/7") is None


def test_follow_types_are_event_types() -> None:
    assert set(follow_types()) <= ev.EVENT_TYPE_NAMES
    assert "partition_live" in follow_types() and "want_failed" in follow_types()


def test_provided_by_only_the_owner() -> None:
    graph = fed_graph()
    assert provided_by(graph, "ingest", ref(RAW))
    assert not provided_by(graph, "other", ref(RAW))
    assert not provided_by(graph, "ingest", ref(REPORT))  # a local job builds it


def test_resume_plan() -> None:
    assert resume_plan(0, "ingest", 50, "") == resume_plan(0, "ingest", 50, "ingest")
    assert not resume_plan(0, "ingest", 50, "").relist
    assert resume_plan(0, "ingest", 50, "").after == 0  # a first follow reads it all
    plan = resume_plan(40, "ingest", 50, "ingest")
    assert (plan.relist, plan.after) == (False, 40)
    reset = resume_plan(40, "ingest", 12, "ingest")
    assert reset.relist and reset.after == 12 and "reset or replaced" in reset.why
    other = resume_plan(40, "billing", 90, "ingest")
    assert other.relist and other.after == 90 and "'billing'" in other.why


def test_backoff_capped_exponential_with_jitter() -> None:
    assert backoff(0, 0.0) == 0.05 and backoff(0, 0.999) < 0.1
    assert backoff(3, 0.0) == 0.4
    assert all(
        BACKOFF_CAP_SECONDS / 2 <= backoff(a, u) <= BACKOFF_CAP_SECONDS
        for a in (7, 20, 10_000)
        for u in (0.0, 0.5, 0.999)
    )


def test_forwards_one_per_wanted_upstream_partition() -> None:
    sim = Sim(fed_graph())
    sim.want(REPORT, sla=2 * DAY, ttl=5 * DAY)
    sim.finish(sim.run_of(REPORT), missing((REPORT, [RAW])))
    items = forwards(sim.state, upstream())
    assert len(items) == 1
    item = items[0]
    assert (item.ref, item.data_timestamp) == (RAW, T0)
    # a child want never expires on its own (it is released): nor does the forwarded one
    assert item.sla_seconds == 2 * DAY and item.ttl_seconds == 0
    assert item.upstream_want_id == want_id_for(ref(RAW), T0, WantSource.UPSTREAM_GRAPH)
    # looking only at some refs: those the latest events were about
    assert forwards(sim.state, upstream(), [ref(RAW)]) == items
    assert forwards(sim.state, upstream(), [ref(REPORT), ref("raw/date=2024-01-09")]) == []
    # nothing for another upstream, and nothing once it is live here
    assert forwards(sim.state, upstream("other", "other/{x}")) == []
    sim.rec.partition_live_upstream(ref(RAW), "ingest", sim.now, 7)
    sim.take()
    assert forwards(sim.state, upstream()) == []
    assert unneeded([ref(RAW)], sim.state) == []  # live: nothing to cancel


def test_forward_sla_is_the_most_urgent_and_ttl_the_longest() -> None:
    sim = Sim(fed_graph())
    sim.want(RAW, sla=3 * DAY, ttl=4 * DAY)
    sim.want(RAW, source=WantSource.API, sla=DAY, ttl=9 * DAY)
    (item,) = forwards(sim.state, upstream())
    assert (item.sla_seconds, item.ttl_seconds) == (DAY, 9 * DAY)
    sim.want(RAW, source=WantSource.SCHEDULED)  # no TTL: the upstream want needs none
    (item,) = forwards(sim.state, upstream())
    assert item.ttl_seconds == 0


def test_cancel_forwards_only_when_no_local_want_needs_it() -> None:
    sim = Sim(fed_graph())
    first = sim.want(RAW)
    second = sim.want(RAW, source=WantSource.API)
    sim.cancel(first)
    assert unneeded([ref(RAW)], sim.state) == []
    sim.cancel(second)
    assert unneeded([ref(RAW)], sim.state) == [RAW]


def test_upstream_live_retries_waiting_wants_in_the_same_step() -> None:
    sim = Sim(fed_graph())
    root = sim.want(REPORT)
    sim.finish(sim.run_of(REPORT), missing((REPORT, [RAW])))
    assert sim.status(root) == "waiting"
    sim.rec.partition_live_upstream(ref(RAW), "ingest", sim.now, 42)
    sim.rec.tick(sim.now, 8)
    sim.take()
    assert sim.step_starts() and sim.step_starts()[0].partition_refs == (ref(REPORT),)
    live = sim.events_of(ev.PartitionLive)
    assert live == [ev.PartitionLive(ref(RAW), None, "ingest", upstream_sequence=42)]
    assert sim.state.upstream_cursors == {"ingest": 42}
    # heard again (a resume re-reads it): nothing recorded
    sim.rec.partition_live_upstream(ref(RAW), "ingest", sim.now, 42)
    assert sim.take() == []
    assert sim.replayed() == canonical(sim.state)
    fresh = BuildState(sim.graph)
    for event in sim.log:
        fresh.apply(event)
    assert fresh.upstream_cursors == {"ingest": 42}


def test_upstream_failure_fails_waiting_wants() -> None:
    sim = Sim(fed_graph())
    root = sim.want(REPORT)
    sim.finish(sim.run_of(REPORT), missing((REPORT, [RAW])))
    sim.rec.upstream_failed(ref(RAW), "ingest", "want w1 failed: job ingest failed", sim.now)
    sim.take()
    assert sim.status(root) == "upstream_failed"
    message = sim.state.wants[root].message
    assert "upstream graph ingest: want w1 failed: job ingest failed" in message
    # nothing active on it any more: a second report changes nothing
    sim.rec.upstream_failed(ref(RAW), "ingest", "again", sim.now)
    assert sim.take() == []


class FakeUpstream:
    """An upstream log of partition_live events (and others the filter passes by)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self.events: list[tuple[int, str | None]] = []
        for sequence in range(1, size + 1):
            live = rng.random() < 0.5
            self.events.append((sequence, f"raw/date=2024-{sequence:04d}" if live else None))

    def page(self, after: int, limit: int) -> tuple[list[tuple[int, str]], int]:
        """Matching events after ``after`` and the sequence scanned up to."""
        out: list[tuple[int, str]] = []
        scanned = after
        for sequence, live in self.events[after:]:
            scanned = sequence
            if live is not None:
                out.append((sequence, live))
                if len(out) == limit:
                    break
        return out, scanned


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 120))
def test_follower_cursor_exactly_once_with_random_disconnects(seed: int, size: int) -> None:
    """Pages are lost in flight, the follower is restarted from its recorded cursor at
    random points: every live partition is recorded here once, in upstream order."""
    rng = random.Random(seed)
    graph = GraphSpec(name="down", jobs=(), upstreams=(upstream("up", "raw/date={d}"),))
    source = FakeUpstream(rng, size)
    sim = Sim(graph)
    cursor = sim.state.upstream_cursors.get("up", 0)
    for _ in range(10 * size + 10):
        plan = resume_plan(sim.state.upstream_cursors.get("up", 0), "up", size, "up")
        assert not plan.relist
        if rng.random() < 0.2:  # a restart: the in-memory cursor is lost
            sim.restart()
            cursor = plan.after
        events, scanned = source.page(cursor, rng.randint(1, 5))
        if rng.random() < 0.2:
            continue  # the connection dropped before the answer arrived
        refs = [ref(r) for _, r in events if provided_by(graph, "up", ref(r))]
        for (sequence, _), r in zip(events, refs, strict=True):
            sim.rec.partition_live_upstream(r, "up", sim.now, sequence)
        sim.take()
        cursor = scanned
        if cursor == size:
            break
    while cursor < size:  # finish without faults
        events, cursor = source.page(cursor, 5)
        for sequence, text in events:
            sim.rec.partition_live_upstream(ref(text), "up", sim.now, sequence)
        sim.take()
    learned = [(p.upstream_sequence, p.partition_ref) for p in sim.events_of(ev.PartitionLive)]
    expected = [(s, r) for s, r in source.events if r is not None]
    assert learned == expected
    recorded = sim.state.upstream_cursors.get("up", 0)
    assert recorded == (expected[-1][0] if expected else 0)
