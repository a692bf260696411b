"""SPEC §2, rule by rule, through the Reconciler with a simulated clock.

Each test drives the reconciler with inputs (want requests, run reports, ticks) and asserts
on what it said: the events it appended and the effects it asked for.
"""

from __future__ import annotations

import pytest
from core_helpers import DAY, T0, Sim, fail, graph, job, missing, ok, ref, request

from databuild.core import events as ev
from databuild.core.errors import NotFound
from databuild.core.model import WantId, WantSource, want_id_for
from databuild.core.reconcile import KillOrphan, KillRun, Reconciler, StartRun
from databuild.core.state import canonical

HOUR = 3600


def daily_raw(
    *,
    max_batch: int = 1,
    concurrency: int = 4,
    retries: int = 2,
    backoff: float = 10.0,
) -> Sim:
    return Sim(
        graph(
            job(
                "daily",
                "daily/date={date}",
                max_batch=max_batch,
                concurrency=concurrency,
                retries=retries,
                backoff=backoff,
            ),
            job("raw", "raw/date={date}", concurrency=4, retries=retries, backoff=backoff),
        )
    )


def child_id(text: str, ts: int = T0) -> WantId:
    return want_id_for(ref(text), ts, WantSource.DERIVED)


# ---- rule 1: a new want is dispatched at once ----------------------------------------


def test_new_want_is_dispatched_immediately() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    assert sim.step_starts() == [
        StartRun(sim.run_of("daily/date=1"), "daily", (ref("daily/date=1"),))
    ]
    kinds = [type(p) for p in sim.step_events]
    assert kinds == [ev.WantCreated, ev.JobRunQueued, ev.PartitionBuilding]
    queued = sim.events_of(ev.JobRunQueued)[0]
    assert queued.want_ids == (want_id,)
    assert sim.status(want_id) == "building"
    assert sim.replayed() == canonical(sim.state)


def test_asking_twice_is_one_want() -> None:
    sim = daily_raw()
    first = sim.want("daily/date=1")
    second = sim.want("daily/date=1")
    assert first == second == request("daily/date=1").want_id
    assert len(sim.events_of(ev.WantCreated)) == 1
    assert len(sim.starts()) == 1


def test_want_without_a_free_slot_waits_for_one() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1", slots=0)
    assert sim.starts() == []
    assert sim.status(want_id) == "pending"
    sim.tick(slots=1)
    assert len(sim.starts()) == 1
    assert sim.status(want_id) == "building"


# ---- rule 2: sharing, batching, earliest deadline first ------------------------------


def test_two_wants_for_one_partition_share_one_run() -> None:
    sim = daily_raw()
    cli = sim.want("daily/date=1", source=WantSource.CLI)
    api = sim.want("daily/date=1", source=WantSource.API)
    assert cli != api
    assert len(sim.starts()) == 1
    run_id = sim.run_of("daily/date=1")
    sim.finish(run_id, ok())
    satisfied = sim.events_of(ev.WantSatisfied)
    assert {(s.want_id, s.job_run_id) for s in satisfied} == {(cli, run_id), (api, run_id)}


def test_two_wants_requested_together_are_in_one_run() -> None:
    sim = daily_raw()
    rec = sim.rec
    a = rec.request_want(request("daily/date=1", source=WantSource.CLI), sim.now)
    b = rec.request_want(request("daily/date=1", source=WantSource.API), sim.now)
    sim.tick()
    (queued,) = sim.events_of(ev.JobRunQueued)
    assert queued.partition_refs == (ref("daily/date=1"),)
    assert set(queued.want_ids) == {a, b}


def test_wants_for_one_job_are_batched_up_to_max_batch() -> None:
    sim = daily_raw(max_batch=3, concurrency=1)
    for day in range(1, 6):
        sim.rec.request_want(request(f"daily/date={day}"), sim.now)
    sim.tick()
    (first,) = sim.starts()
    assert len(first.partition_refs) == 3
    sim.finish(first.job_run_id, ok())
    second = sim.step_starts()
    assert len(second) == 1 and len(second[0].partition_refs) == 2
    assert set(first.partition_refs) | set(second[0].partition_refs) == {
        ref(f"daily/date={d}") for d in range(1, 6)
    }
    sim.finish(second[0].job_run_id, ok())
    assert len(sim.events_of(ev.WantSatisfied)) == 5


def test_batch_success_makes_every_partition_live_at_once() -> None:
    sim = daily_raw(max_batch=2, concurrency=1)
    sim.rec.request_want(request("daily/date=1"), sim.now)
    sim.rec.request_want(request("daily/date=2"), sim.now)
    sim.tick()
    (run,) = sim.starts()
    sim.finish(run.job_run_id, ok())
    kinds = [type(p).__name__ for p in sim.step_events]
    assert kinds[0] == "JobRunSucceeded"
    assert sorted(p.partition_ref for p in sim.events_of(ev.PartitionLive)) == sorted(
        run.partition_refs
    )


def test_concurrency_limit_holds_runs_back() -> None:
    sim = daily_raw(max_batch=1, concurrency=2)
    for day in range(1, 5):
        sim.want(f"daily/date={day}")
    assert len(sim.starts()) == 2
    sim.finish(sim.starts()[0].job_run_id, ok())
    assert len(sim.starts()) == 3


def test_earliest_sla_goes_first_with_concurrency_one() -> None:
    sim = daily_raw(max_batch=1, concurrency=1)
    sim.want("daily/date=1", sla=2 * DAY)  # runs at once
    sim.want("daily/date=2", sla=2 * DAY)
    sim.want("daily/date=3", sla=2 * DAY)
    sim.want("daily/date=4")  # no SLA: last
    urgent = sim.want("daily/date=9", sla=HOUR)
    assert [s.partition_refs for s in sim.starts()] == [(ref("daily/date=1"),)]
    order: list[str] = []
    for _ in range(4):
        sim.finish(sim.starts()[-1].job_run_id, ok())
        (next_run,) = sim.step_starts()
        order.append(next_run.partition_refs[0])
    sim.finish(sim.starts()[-1].job_run_id, ok())
    assert order[0] == "daily/date=9"
    assert order[-1] == "daily/date=4"
    assert set(order[1:3]) == {"daily/date=2", "daily/date=3"}
    assert sim.status(urgent) == "satisfied"


def test_batches_are_filled_earliest_deadline_first() -> None:
    sim = daily_raw(max_batch=2, concurrency=1)
    sim.want("daily/date=0", sla=DAY)  # occupies the only slot
    sim.want("daily/date=1", sla=3 * DAY)
    sim.want("daily/date=2", sla=2 * DAY)
    sim.want("daily/date=3", sla=HOUR)
    sim.finish(sim.run_of("daily/date=0"), ok())
    (batch,) = sim.step_starts()
    assert set(batch.partition_refs) == {ref("daily/date=3"), ref("daily/date=2")}


# ---- rule 3: outcomes ----------------------------------------------------------------


def test_missing_deps_become_child_wants_linked_to_parent_and_root() -> None:
    sim = daily_raw()
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1", "raw/date=2"])))
    created = {c.want.partition_ref: c.want for c in sim.events_of(ev.WantCreated)}
    for dep in ("raw/date=1", "raw/date=2"):
        child = created[ref(dep)]
        assert child.want_id == child_id(dep)
        assert child.parent_want_id == parent
        assert child.root_want_id == parent
        assert child.source is WantSource.DERIVED
        assert child.data_timestamp == T0
    assert sim.status(parent) == "waiting"
    assert sim.state.wants[parent].children == [child_id("raw/date=1"), child_id("raw/date=2")]
    assert len(sim.step_starts()) == 2  # both children dispatched at once


def test_grandchildren_keep_the_root_want_id() -> None:
    sim = Sim(graph(job("a", "a/{x}"), job("b", "b/{x}"), job("c", "c/{x}")))
    root = sim.want("a/1")
    sim.finish(sim.run_of("a/1"), missing(("a/1", ["b/1"])))
    sim.finish(sim.run_of("b/1"), missing(("b/1", ["c/1"])))
    grandchild = sim.state.wants[child_id("c/1")].want
    assert grandchild.root_want_id == root
    assert grandchild.parent_want_id == child_id("b/1")
    sim.finish(sim.run_of("c/1"), ok())
    sim.finish(sim.run_of("b/1"), ok())
    sim.finish(sim.run_of("a/1"), ok())
    assert sim.status(root) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_two_runs_missing_the_same_dep_make_one_child_want() -> None:
    sim = daily_raw()
    first = sim.want("daily/date=1")
    second = sim.want("daily/date=2")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=0"])))
    sim.finish(sim.run_of("daily/date=2"), missing(("daily/date=2", ["raw/date=0"])))
    children = [c for c in sim.events_of(ev.WantCreated) if c.want.partition_ref == "raw/date=0"]
    assert len(children) == 1
    assert len([s for s in sim.starts() if ref("raw/date=0") in s.partition_refs]) == 1
    sim.finish(sim.run_of("raw/date=0"), ok())
    assert {s.partition_refs[0] for s in sim.step_starts()} == {
        ref("daily/date=1"),
        ref("daily/date=2"),
    }
    sim.finish(sim.run_of("daily/date=1"), ok())
    sim.finish(sim.run_of("daily/date=2"), ok())
    assert sim.status(first) == sim.status(second) == "satisfied"


def test_waiting_want_is_retried_when_the_last_missing_partition_is_live() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1", "raw/date=2"])))
    sim.finish(sim.run_of("raw/date=1"), ok())
    assert sim.step_starts() == []  # raw/date=2 is still missing
    assert sim.status(want_id) == "waiting"
    assert sim.state.partitions[ref("daily/date=1")].waiting_on == {ref("raw/date=2")}
    sim.finish(sim.run_of("raw/date=2"), ok())
    (retry,) = sim.step_starts()  # the same step, not a poll later
    assert retry.partition_refs == (ref("daily/date=1"),)
    assert sim.status(want_id) == "building"
    sim.finish(retry.job_run_id, ok())
    assert sim.status(want_id) == "satisfied"


def test_missing_dep_that_is_already_live_is_retried_at_once() -> None:
    sim = daily_raw()
    sim.want("raw/date=1")
    sim.finish(sim.run_of("raw/date=1"), ok())
    want_id = sim.want("daily/date=1")
    first = sim.run_of("daily/date=1")
    sim.finish(first, missing(("daily/date=1", ["raw/date=1"])))
    assert sim.run_of("daily/date=1") != first
    assert sim.status(want_id) == "building"
    assert not [c for c in sim.events_of(ev.WantCreated) if c.want.source is WantSource.DERIVED]


def test_malformed_missing_deps_result_is_a_permanent_failure() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=2", ["raw/date=1"])))
    (failed,) = sim.events_of(ev.JobRunFailed)
    assert failed.kind is ev.FailureKind.BAD_RESULT and failed.retry_at == 0.0
    assert "which it was not asked to build" in failed.message
    assert sim.status(want_id) == "failed"


def test_failure_is_retried_with_exponential_backoff_then_fails() -> None:
    sim = daily_raw(retries=2, backoff=10.0)
    want_id = sim.want("daily/date=1")
    t = sim.now
    sim.finish(sim.run_of("daily/date=1"), fail())
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at == pytest.approx(t + 10)
    assert sim.status(want_id) == "retrying"
    assert sim.rec.next_wakeup() == pytest.approx(t + 10)
    sim.tick(t + 9.9)
    assert sim.step_starts() == []
    sim.tick(t + 10)
    assert len(sim.step_starts()) == 1
    t2 = t + 50
    sim.now = t2
    sim.finish(sim.run_of("daily/date=1"), fail(ev.FailureKind.TIMEOUT))
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at == pytest.approx(t2 + 20)
    sim.tick(t2 + 20)
    assert len(sim.step_starts()) == 1
    sim.finish(sim.run_of("daily/date=1"), fail())
    last = sim.events_of(ev.JobRunFailed)[-1]
    assert last.retry_at == 0.0
    assert len(sim.starts()) == 3
    (part_failed,) = sim.events_of(ev.PartitionFailed)
    assert "failed after 3 attempt(s)" in part_failed.message
    (want_failed,) = sim.events_of(ev.WantFailed)
    assert want_failed.reason is ev.WantFailureReason.JOB_FAILED
    assert sim.status(want_id) == "failed"


def test_permanent_failure_is_not_retried() -> None:
    sim = daily_raw(retries=5)
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), fail(ev.FailureKind.PERMANENT, "bad input"))
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at == 0.0
    assert sim.status(want_id) == "failed"
    assert "bad input" in sim.state.wants[want_id].message


def test_a_spawn_out_of_resources_is_retried_with_backoff_not_failed_for_good() -> None:
    sim = daily_raw(retries=2, backoff=10.0)
    want_id = sim.want("daily/date=1")
    t = sim.now
    message = "could not start job 'daily': 'python': Too many open files"
    sim.finish(sim.run_of("daily/date=1"), fail(ev.FailureKind.NO_RESOURCES, message))
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at == pytest.approx(t + 10)
    assert sim.status(want_id) == "retrying"
    sim.tick(t + 10)
    assert len(sim.step_starts()) == 1
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(want_id) == "satisfied"


def test_a_spawn_error_is_not_retried() -> None:
    sim = daily_raw(retries=5)
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), fail(ev.FailureKind.SPAWN_ERROR, "not found"))
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at == 0.0
    assert sim.status(want_id) == "failed"


def test_failed_partition_fails_its_ancestors_as_upstream_failed() -> None:
    sim = Sim(graph(job("a", "a/{x}"), job("b", "b/{x}"), job("c", "c/{x}", retries=0)))
    root = sim.want("a/1")
    other = sim.want("b/1", source=WantSource.API)  # a second root waiting on c/1 via b/1
    sim.finish(sim.run_of("a/1"), missing(("a/1", ["b/1"])))
    sim.finish(sim.run_of("b/1"), missing(("b/1", ["c/1"])))
    sim.finish(sim.run_of("c/1"), fail())
    failures = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failures[child_id("c/1")].reason is ev.WantFailureReason.JOB_FAILED
    for want_id in (root, other, child_id("b/1")):
        assert failures[want_id].reason is ev.WantFailureReason.UPSTREAM_FAILED
        assert failures[want_id].upstream_ref == "c/1"
        assert sim.status(want_id) == "upstream_failed"
    assert "upstream partition c/1 failed" in sim.state.wants[root].message


# ---- rule 4: TTL and SLA -------------------------------------------------------------


def test_ttl_expiry_on_tick_stops_the_work() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1", ttl=DAY)
    run_id = sim.run_of("daily/date=1")
    assert sim.rec.next_wakeup() == T0 + DAY
    sim.tick(T0 + DAY - 1)
    assert sim.status(want_id) == "building"
    sim.tick(T0 + DAY)
    assert sim.status(want_id) == "expired"
    assert KillRun(run_id, f"no longer needed: want {want_id} expired") in sim.step_effects
    sim.finish(run_id, ok())  # its late result no longer counts
    assert sim.events_of(ev.PartitionLive) == []


def test_want_already_past_its_ttl_expires_at_once() -> None:
    sim = daily_raw()
    sim.now = T0 + 2 * DAY
    want_id = sim.want("daily/date=1", ttl=DAY)
    assert sim.status(want_id) == "expired"
    assert sim.starts() == []


def test_sla_missed_exactly_once_with_blame_even_after_a_restart() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1", sla=HOUR)
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    sim.start(sim.run_of("raw/date=1"), pid=77)
    sim.tick(T0 + HOUR - 1)
    assert sim.events_of(ev.SlaMissed) == []
    sim.tick(T0 + HOUR + 5)
    sim.tick(T0 + HOUR + 50)
    (missed,) = [m for m in sim.events_of(ev.SlaMissed) if m.want_id == want_id]
    assert missed.deadline == T0 + HOUR
    assert missed.blame_ref == "raw/date=1"
    assert "running in job run" in missed.blame
    assert sim.state.wants[want_id].sla_missed
    # a new process rebuilt from the log does not raise it again
    fresh = Reconciler(sim.graph)
    fresh.load(list(sim.log))
    fresh.tick(T0 + HOUR + 100, 8)
    events, _ = fresh.take()
    assert not [e for e in events if isinstance(e.payload, ev.SlaMissed)]
    sim.restart()
    sim.tick(T0 + 2 * HOUR)
    assert len([m for m in sim.events_of(ev.SlaMissed) if m.want_id == want_id]) == 1


def test_want_satisfied_in_time_raises_no_sla_event() -> None:
    sim = daily_raw()
    sim.want("daily/date=1", sla=HOUR)
    sim.finish(sim.run_of("daily/date=1"), ok())
    sim.tick(T0 + 2 * HOUR)
    assert sim.events_of(ev.SlaMissed) == []


def test_blame_names_a_queued_partition_behind_running_runs() -> None:
    sim = daily_raw(concurrency=1)
    sim.want("daily/date=1")
    late = sim.want("daily/date=2", sla=HOUR)
    blame_ref, why = sim.rec.blame(late)
    assert blame_ref == "daily/date=2"
    assert "queued behind 1 running run(s) of job 'daily'" in why


# ---- rule 5: unbuildable -------------------------------------------------------------


def test_unbuildable_partition_fails_the_want_at_once_naming_the_ref() -> None:
    sim = daily_raw()
    want_id = sim.want("monthly/month=2024-01")
    assert sim.status(want_id) == "failed"
    (failed,) = sim.events_of(ev.WantFailed)
    assert failed.reason is ev.WantFailureReason.UNBUILDABLE
    assert "no job builds partition 'monthly/month=2024-01'" in failed.message
    assert "daily/date={date}" in failed.message  # says what would have matched
    assert sim.starts() == []


def test_unbuildable_child_fails_the_parent_as_upstream_failed() -> None:
    sim = daily_raw()
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["lookup/nowhere"])))
    child = child_id("lookup/nowhere")
    assert sim.status(child) == "failed"
    assert sim.status(parent) == "upstream_failed"
    failures = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failures[child].reason is ev.WantFailureReason.UNBUILDABLE
    assert failures[parent].upstream_ref == "lookup/nowhere"
    assert "lookup/nowhere" in failures[parent].message


def test_ambiguous_route_is_an_immediate_error() -> None:
    sim = Sim(graph(job("one", "x/{a}"), job("two", "x/{b}")))
    want_id = sim.want("x/1")
    assert sim.status(want_id) == "failed"
    assert "ambiguous" in sim.state.wants[want_id].message


# ---- rule 6: cancel ------------------------------------------------------------------


def test_cancel_kills_a_run_only_it_needed() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    run_id = sim.run_of("daily/date=1")
    sim.start(run_id)
    sim.cancel(want_id)
    assert sim.status(want_id) == "canceled"
    assert [k.job_run_id for k in sim.kills()] == [run_id]
    assert sim.events_of(ev.JobRunCanceled)[0].job_run_id == run_id
    assert sim.starts()[-1].job_run_id == run_id  # nothing restarted


def test_cancel_leaves_a_run_another_want_needs() -> None:
    sim = daily_raw()
    mine = sim.want("daily/date=1", source=WantSource.CLI)
    theirs = sim.want("daily/date=1", source=WantSource.API)
    sim.cancel(mine)
    assert sim.kills() == []
    assert sim.events_of(ev.JobRunCanceled) == []
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(theirs) == "satisfied"
    assert sim.status(mine) == "canceled"


def test_cancel_stops_the_dependency_chain_only_it_needed() -> None:
    sim = daily_raw()
    mine = sim.want("daily/date=1")
    theirs = sim.want("daily/date=2")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1", "raw/date=0"])))
    sim.finish(sim.run_of("daily/date=2"), missing(("daily/date=2", ["raw/date=0"])))
    sim.cancel(mine)
    assert [k.job_run_id for k in sim.kills()] == [sim.run_of("raw/date=1")]
    assert sim.status(child_id("raw/date=1")) == "canceled"
    assert sim.status(child_id("raw/date=0")) == "building"  # daily/date=2 still needs it
    sim.finish(sim.run_of("raw/date=0"), ok())
    sim.finish(sim.run_of("daily/date=2"), ok())
    assert sim.status(theirs) == "satisfied"


def test_cancel_of_a_derived_want_fails_its_waiters_instead_of_hanging() -> None:
    """Found by the simulation (tests/sim): canceling by hand the child want a waiting
    partition needs left the parent waiting on a partition nobody would build."""
    sim = daily_raw()
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    assert sim.status(parent) == "waiting"
    sim.cancel(child_id("raw/date=1"))
    assert sim.status(child_id("raw/date=1")) == "canceled"
    assert sim.status(parent) == "upstream_failed"
    assert [k.job_run_id for k in sim.kills()] == [sim.run_of("raw/date=1")]
    again = sim.want("daily/date=1")  # asking again reopens it and builds it
    assert again == parent and sim.status(parent) != "upstream_failed"


def test_cancel_of_a_batched_partition_keeps_the_batch_for_the_others() -> None:
    sim = daily_raw(max_batch=2, concurrency=1)
    a = sim.rec.request_want(request("daily/date=1"), sim.now)
    b = sim.rec.request_want(request("daily/date=2"), sim.now)
    sim.tick()
    sim.cancel(a)
    assert sim.kills() == []
    sim.finish(sim.starts()[0].job_run_id, ok())
    assert sim.status(b) == "satisfied"


def test_cancel_of_unknown_or_finished_want() -> None:
    sim = daily_raw()
    with pytest.raises(NotFound, match="no want with id"):
        sim.rec.cancel_want(WantId("wnope"), "x", sim.now)
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), ok())
    before = len(sim.log)
    assert sim.rec.cancel_want(want_id, "x", sim.now).value == "satisfied"
    sim.take()
    assert len(sim.log) == before


# ---- reopen and cycles ---------------------------------------------------------------


def test_reopened_failed_want_retries_with_fresh_attempts() -> None:
    sim = daily_raw(retries=1, backoff=5.0)
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), fail())
    sim.tick(sim.now + 5)
    sim.finish(sim.run_of("daily/date=1"), fail())
    assert sim.status(want_id) == "failed"
    assert len(sim.starts()) == 2
    again = sim.want("daily/date=1")
    assert again == want_id
    assert isinstance(sim.step_events[0], ev.WantReopened)
    assert sim.status(want_id) == "building"
    assert len(sim.starts()) == 3
    sim.finish(sim.run_of("daily/date=1"), fail())
    assert sim.events_of(ev.JobRunFailed)[-1].retry_at > 0  # counted from zero again
    assert sim.status(want_id) == "retrying"


def test_reopened_canceled_want_builds_again() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.cancel(want_id)
    sim.want("daily/date=1")
    assert sim.status(want_id) == "building"
    assert len(sim.starts()) == 2


def test_dependency_cycle_is_detected() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    sim.finish(sim.run_of("raw/date=1"), missing(("raw/date=1", ["daily/date=1"])))
    failures = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failures[child_id("raw/date=1")].reason is ev.WantFailureReason.DEPENDENCY_CYCLE
    assert "dependency cycle: raw/date=1 -> daily/date=1 -> raw/date=1" in (
        failures[child_id("raw/date=1")].message
    )
    assert sim.status(want_id) == "upstream_failed"
    assert not any(w.active for w in sim.state.wants.values()), "nothing hangs on a cycle"


def test_self_dependency_is_a_cycle() -> None:
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["daily/date=1"])))
    assert sim.status(want_id) == "failed"
    assert "dependency cycle" in sim.state.wants[want_id].message


# ---- rule 7: restart -----------------------------------------------------------------


def test_recover_turns_in_flight_runs_into_lost_and_retries_them() -> None:
    sim = daily_raw(concurrency=4)
    started = sim.want("daily/date=1")
    queued = sim.want("daily/date=2")
    sim.start(sim.run_of("daily/date=1"), pid=4321)
    old_started, old_queued = sim.run_of("daily/date=1"), sim.run_of("daily/date=2")
    sim.now += 30
    sim.restart()
    assert sim.orphans() == [KillOrphan(old_started, 4321)]  # the queued one had no pid
    lost = {f.job_run_id: f for f in sim.events_of(ev.JobRunFailed)}
    assert set(lost) == {old_started, old_queued}
    for failure in lost.values():
        assert failure.kind is ev.FailureKind.LOST
        assert failure.retry_at == sim.now
    new_runs = {s.partition_refs[0]: s.job_run_id for s in sim.step_starts()}
    assert set(new_runs) == {ref("daily/date=1"), ref("daily/date=2")}
    assert old_started not in new_runs.values()
    # a late report from the old process does not count
    sim.finish(old_started, ok())
    assert sim.events_of(ev.PartitionLive) == []
    for run_id in new_runs.values():
        sim.finish(run_id, ok())
    assert sim.status(started) == sim.status(queued) == "satisfied"
    # lost runs are not counted as failures
    assert sim.state.partitions[ref("daily/date=1")].failures == 0


def test_restart_does_not_rerun_live_partitions_and_converges() -> None:
    sim = daily_raw()
    done = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), ok())
    waiting = sim.want("daily/date=2")
    sim.finish(sim.run_of("daily/date=2"), missing(("daily/date=2", ["raw/date=2"])))
    before = canonical(sim.state)
    starts = len(sim.starts())
    fresh = Reconciler(sim.graph)
    fresh.load(list(sim.log))
    assert canonical(fresh.state) == before
    sim.restart()
    restarted = [s.partition_refs for s in sim.starts()[starts:]]
    assert (ref("daily/date=1"),) not in restarted
    assert restarted == [(ref("raw/date=2"),)]  # only the lost run is retried
    sim.finish(sim.run_of("raw/date=2"), ok())
    sim.finish(sim.run_of("daily/date=2"), ok())
    assert sim.status(done) == sim.status(waiting) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


# ---- a live partition is never rebuilt -----------------------------------------------


def test_want_for_a_live_partition_is_satisfied_at_once() -> None:
    sim = daily_raw()
    sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), ok())
    starts = len(sim.starts())
    for source in (WantSource.API, WantSource.SCHEDULED, WantSource.DASHBOARD):
        want_id = sim.want("daily/date=1", source=source)
        assert sim.status(want_id) == "satisfied"
        assert isinstance(sim.step_events[-1], ev.WantSatisfied)
        assert sim.step_events[-1].job_run_id is None
    assert len(sim.starts()) == starts


def test_next_wakeup_is_none_without_timers() -> None:
    sim = daily_raw()
    assert sim.rec.next_wakeup() is None
    sim.want("daily/date=1")
    assert sim.rec.next_wakeup() is None
    sim.want("daily/date=2", sla=HOUR, ttl=DAY)
    assert sim.rec.next_wakeup() == T0 + HOUR


# ---- regressions found by the state machine (tests/core/test_stateful.py) ------------


def test_reopened_want_on_a_waiting_partition_asks_for_its_inputs_again() -> None:
    """Cancel released the child want of a waiting partition; asking for the partition
    again must ask for its inputs again, or it waits forever."""
    sim = daily_raw()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    raw_run = sim.run_of("raw/date=1")
    sim.cancel(want_id)
    assert sim.status(child_id("raw/date=1")) == "canceled"
    assert [k.job_run_id for k in sim.kills()] == [raw_run]
    sim.want("daily/date=1")  # reopen
    assert sim.status(want_id) == "waiting"
    assert sim.status(child_id("raw/date=1")) == "building"
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(want_id) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_new_want_on_a_waiting_partition_nobody_else_wants_asks_for_its_inputs() -> None:
    sim = daily_raw()
    first = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    sim.cancel(first)
    second = sim.want("daily/date=1", source=WantSource.API)
    assert sim.status(second) == "waiting"
    assert sim.status(child_id("raw/date=1")) == "building"
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(second) == "satisfied"


def test_new_want_on_a_partition_in_backoff_whose_retry_time_passed_is_dispatched() -> None:
    """The retry timer fired while nobody wanted the partition; a later want must still
    get it built."""
    sim = daily_raw(backoff=10.0)
    first = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), fail())
    sim.cancel(first)
    sim.tick(sim.now + 10)  # the retry timer fires; nobody wants the partition now
    assert sim.step_starts() == []
    second = sim.want("daily/date=1", source=WantSource.API)
    assert sim.status(second) == "building"
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(second) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_expired_parent_does_not_strand_a_later_parent_of_the_same_child() -> None:
    """Child want ids leave out the TTL, so a child is shared by parents with different
    TTLs; the child must not expire while a longer-lived parent still needs it."""
    sim = Sim(graph(job("a", "a/{x}"), job("b", "b/{x}"), job("c", "c/{x}")))
    short = sim.want("b/1", ttl=600)
    sim.finish(sim.run_of("b/1"), missing(("b/1", ["c/1"])))
    sim.tick(T0 + 3000)
    assert sim.status(short) == "expired"
    assert sim.status(child_id("c/1")) == "canceled"  # released, not expired: reopenable
    long = sim.want("a/1")
    sim.finish(sim.run_of("a/1"), missing(("a/1", ["b/1"])))
    assert sim.status(child_id("c/1")) == "building"
    sim.finish(sim.run_of("c/1"), ok())
    sim.finish(sim.run_of("b/1"), ok())
    sim.finish(sim.run_of("a/1"), ok())
    assert sim.status(long) == "satisfied"


def test_child_of_a_short_ttl_parent_keeps_building_for_a_long_ttl_parent() -> None:
    sim = daily_raw(retries=2, backoff=10.0)
    short = sim.want("daily/date=1", ttl=600)
    long = sim.want("daily/date=2", source=WantSource.API)
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    sim.finish(sim.run_of("daily/date=2"), missing(("daily/date=2", ["raw/date=1"])))
    sim.finish(sim.run_of("raw/date=1"), fail())  # backoff, then the short parent expires
    sim.tick(T0 + 3000)
    assert sim.status(short) == "expired"
    assert sim.status(child_id("raw/date=1")) == "building"  # retried for the long parent
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=2"), ok())
    assert sim.status(long) == "satisfied"
