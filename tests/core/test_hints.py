"""Input hints through the Reconciler: a job's ``inputs`` patterns are wanted before its run.

A hinted input that is not live waits the partition (``PartitionWaiting``) and becomes a
child want exactly as an input a run reported missing would; the job runs once, when they
are live. Hints are advisory (discovery still applies), failures cascade as for discovered
inputs, and hints that form a cycle are ignored so that the run's discovery decides: it
always terminates.
"""

from __future__ import annotations

from collections.abc import Callable

from core_helpers import T0, Sim, fail, graph, job, missing, ok, ref

from databuild.core import events as ev
from databuild.core.invalidation import plan
from databuild.core.model import WantId, WantSource, want_id_for
from databuild.core.outcomes import RunOutcome
from databuild.core.reconcile import StartRun
from databuild.core.state import canonical


def child_id(text: str, ts: int = T0) -> WantId:
    return want_id_for(ref(text), ts, WantSource.DERIVED)


def hinted(*, retries: int = 2, daily_inputs: tuple[str, ...] = ("raw/date={date}",)) -> Sim:
    return Sim(
        graph(
            job("daily", "daily/date={date}", inputs=daily_inputs, retries=retries),
            job("raw", "raw/date={date}", concurrency=4, retries=retries, backoff=10.0),
        )
    )


def runs_of(sim: Sim, text: str) -> list[StartRun]:
    return [s for s in sim.starts() if ref(text) in s.partition_refs]


def test_a_hinted_input_not_live_is_wanted_first_and_the_job_runs_once() -> None:
    sim = hinted()
    parent = sim.want("daily/date=1", sla=3600)
    assert runs_of(sim, "daily/date=1") == []
    (waiting,) = sim.events_of(ev.PartitionWaiting)
    assert waiting == ev.PartitionWaiting(ref("daily/date=1"), "daily", (ref("raw/date=1"),))
    child = sim.state.wants[child_id("raw/date=1")].want
    # the same child want a discovered missing input makes: id, lineage, SLA, no TTL
    assert child.parent_want_id == parent and child.root_want_id == parent
    assert child.source is WantSource.DERIVED and child.data_timestamp == T0
    assert child.sla_seconds == 3600 and child.ttl_seconds == 0
    assert sim.status(parent) == "waiting"
    assert sim.state.partitions[ref("daily/date=1")].waiting_on == {ref("raw/date=1")}
    sim.finish(sim.run_of("raw/date=1"), ok())
    (daily,) = runs_of(sim, "daily/date=1")  # dispatched in the same step raw went live
    sim.finish(daily.job_run_id, ok())
    assert sim.status(parent) == "satisfied"
    assert sim.events_of(ev.JobRunMissingDeps) == []
    assert sim.replayed() == canonical(sim.state)


def test_hinted_inputs_already_live_dispatch_at_once() -> None:
    sim = hinted()
    sim.want("raw/date=1")
    sim.finish(sim.run_of("raw/date=1"), ok())
    want_id = sim.want("daily/date=1")
    assert len(runs_of(sim, "daily/date=1")) == 1
    assert sim.events_of(ev.PartitionWaiting) == []
    assert sim.status(want_id) == "building"


def test_hints_are_advisory_the_run_may_still_report_more_missing_inputs() -> None:
    sim = hinted()
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=0"])))
    assert sim.status(parent) == "waiting"
    assert sim.state.wants[child_id("raw/date=0")].want.parent_want_id == parent
    sim.finish(sim.run_of("raw/date=0"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(parent) == "satisfied"
    assert len(runs_of(sim, "daily/date=1")) == 2


def test_a_hint_the_job_does_not_read_costs_a_build_of_it_only() -> None:
    sim = hinted(daily_inputs=("raw/date={date}", "lookup/date={date}"))
    sim.graph = graph(*sim.graph.jobs, job("lookup", "lookup/date={date}"))
    sim.rec.reload(sim.graph, "digest", sim.now)
    parent = sim.want("daily/date=1")
    assert {s.job_name for s in sim.starts()} == {"raw", "lookup"}
    sim.finish(sim.run_of("raw/date=1"), ok())
    assert runs_of(sim, "daily/date=1") == []  # lookup/date=1 is hinted too
    sim.finish(sim.run_of("lookup/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(parent) == "satisfied"


def test_a_hinted_input_that_fails_fails_the_want_as_upstream_failed() -> None:
    sim = hinted(retries=0)
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("raw/date=1"), fail())
    assert sim.status(child_id("raw/date=1")) == "failed"
    assert sim.status(parent) == "upstream_failed"
    failed = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failed[parent].upstream_ref == "raw/date=1"
    assert runs_of(sim, "daily/date=1") == []
    # asking again: a hint does not ask for a failed input again (that would retry a failing
    # input for ever); the job runs, and its discovery reopens the input, as without hints
    sim.want("daily/date=1")
    assert sim.status(parent) == "building"
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    assert sim.status(child_id("raw/date=1")) == "building"
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(parent) == "satisfied"


def test_an_unroutable_hinted_input_fails_the_want_at_once_not_wedges_it() -> None:
    sim = hinted(daily_inputs=("lookup/date={date}",))
    parent = sim.want("daily/date=1")
    assert sim.status(child_id("lookup/date=1")) == "failed"
    assert sim.status(parent) == "upstream_failed"
    failed = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failed[child_id("lookup/date=1")].reason is ev.WantFailureReason.UNBUILDABLE
    assert "no job builds partition 'lookup/date=1'" in failed[parent].message
    assert sim.starts() == [] and not any(w.active for w in sim.state.wants.values())


def test_a_partition_retried_after_a_failure_goes_to_its_job_without_waiting() -> None:
    sim = hinted()
    parent = sim.want("daily/date=1")
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), fail())
    assert sim.status(parent) == "retrying"
    sim.tick(sim.now + 60)
    assert len(runs_of(sim, "daily/date=1")) == 2
    assert len(sim.events_of(ev.PartitionWaiting)) == 1


def test_a_hinted_partition_is_waiting_after_a_restart_and_then_builds() -> None:
    sim = hinted()
    parent = sim.want("daily/date=1")
    raw_run = sim.run_of("raw/date=1")
    sim.restart()  # raw's run was in flight: lost, retried at once
    assert sim.replayed() == canonical(sim.state)
    assert sim.status(parent) == "waiting"
    sim.finish(sim.run_of("raw/date=1"), ok())
    assert sim.run_of("raw/date=1") != raw_run
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(parent) == "satisfied"
    assert len(runs_of(sim, "daily/date=1")) == 1


def test_cancel_releases_the_hinted_inputs_only_it_needed() -> None:
    sim = hinted()
    parent = sim.want("daily/date=1")
    sim.cancel(parent)
    assert sim.status(child_id("raw/date=1")) == "canceled"
    assert sim.kills() and sim.kills()[0].job_run_id == sim.run_of("raw/date=1")


def test_invalidating_a_hinted_input_reaches_what_was_built_from_it() -> None:
    sim = hinted()
    sim.want("daily/date=1")
    sim.finish(sim.run_of("raw/date=1"), ok())
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert plan(sim.state, [ref("raw/date=1")], downstream=True) == (
        ref("raw/date=1"),
        ref("daily/date=1"),
    )
    # the graph's observed edges count the hinted input as discovery would have
    (need,) = sim.state.observed_needs.values()
    assert (need.key.job, need.key.owner, need.count) == ("daily", "raw", 1)


# ---- cycles ------------------------------------------------------------------------------

Behaviour = Callable[[StartRun], RunOutcome]


def run_to_rest(sim: Sim, behaviour: Behaviour, limit: int = 200) -> int:
    """Finish every run as ``behaviour`` says and fire every timer, until nothing is left to
    do; the number of runs. Fails if it is still going after ``limit`` runs."""
    done: set[str] = set()
    while True:
        pending = [s for s in sim.starts() if s.job_run_id not in done]
        if not pending:
            wakeup = sim.rec.next_wakeup()
            if wakeup is None:
                return len(done)
            sim.tick(max(sim.now, wakeup))
            if not [s for s in sim.starts() if s.job_run_id not in done]:
                assert sim.rec.next_wakeup() != wakeup, "a timer fires and does nothing"
            continue
        for start in pending:
            done.add(start.job_run_id)
            assert len(done) <= limit, "still running: the build does not terminate"
            sim.finish(start.job_run_id, behaviour(start))


def mutual(retries: int) -> Sim:
    return Sim(
        graph(
            job("a", "a/{x}", inputs=["b/{x}"], retries=retries),
            job("b", "b/{x}", inputs=["a/{x}"], retries=retries),
        )
    )


def needs_the_other(start: StartRun) -> RunOutcome:
    out = start.partition_refs[0]
    other = ("b/" if out.startswith("a/") else "a/") + out.split("/", 1)[1]
    return missing((out, [other]))


def test_two_jobs_that_hint_each_other_with_no_retries_terminate_as_a_cycle() -> None:
    sim = mutual(retries=0)
    root = sim.want("a/1")
    # a waits on its hint b/1; b's hint a/1 leads back to b/1, so it is ignored and b runs
    assert [s.job_name for s in sim.starts()] == ["b"]
    runs = run_to_rest(sim, needs_the_other)
    # b reports a/1 missing: a cycle through a's hint wait, which is released; a runs and
    # reports b/1 missing: a cycle the runs reported, which fails, as without hints
    assert runs == 2
    assert [s.job_name for s in sim.starts()] == ["b", "a"]
    assert sim.status(root) == "failed"
    failed = {f.want_id: f for f in sim.events_of(ev.WantFailed)}
    assert failed[root].reason is ev.WantFailureReason.DEPENDENCY_CYCLE
    assert "dependency cycle: a/1 -> b/1 -> a/1" in failed[root].message
    assert sim.status(child_id("b/1")) == "upstream_failed"
    assert not any(w.active for w in sim.state.wants.values())
    assert sim.rec.next_wakeup() is None
    assert sim.replayed() == canonical(sim.state)


def test_two_jobs_that_hint_each_other_and_fail_terminate_whatever_the_retries() -> None:
    for retries in (0, 1, 3):
        sim = mutual(retries=retries)
        root = sim.want("a/1")
        runs = run_to_rest(sim, lambda start: fail())
        assert runs == retries + 1  # b's attempts; a never ran: it waited on b
        assert sim.status(root) == "upstream_failed"
        assert not any(w.active for w in sim.state.wants.values())


def test_two_jobs_that_hint_each_other_wrongly_both_build() -> None:
    sim = mutual(retries=0)
    root = sim.want("a/1")
    runs = run_to_rest(sim, lambda start: ok())
    assert runs == 2  # b (its hint ignored), then a (its hint now live)
    assert sim.status(root) == "satisfied"


def test_a_want_on_both_ends_of_a_hint_cycle_terminates() -> None:
    sim = mutual(retries=0)
    first = sim.want("a/1", slots=0)
    second = sim.want("b/1", slots=0)
    sim.tick()
    run_to_rest(sim, needs_the_other)
    assert not any(w.active for w in sim.state.wants.values())
    assert {sim.status(first), sim.status(second)} <= {"failed", "upstream_failed"}


def test_a_three_job_hint_cycle_terminates() -> None:
    sim = Sim(
        graph(
            job("a", "a/{x}", inputs=["b/{x}"], retries=0),
            job("b", "b/{x}", inputs=["c/{x}"], retries=0),
            job("c", "c/{x}", inputs=["a/{x}"], retries=0),
        )
    )
    root = sim.want("a/1")

    def next_in_ring(start: StartRun) -> RunOutcome:
        out = start.partition_refs[0]
        following = {"a": "b", "b": "c", "c": "a"}[out[0]]
        return missing((out, [f"{following}/{out[2:]}"]))

    assert run_to_rest(sim, next_in_ring) == 3  # as many as discovery alone takes
    assert sim.status(root) in ("failed", "upstream_failed")
    reasons = {f.reason for f in sim.events_of(ev.WantFailed)}
    assert ev.WantFailureReason.DEPENDENCY_CYCLE in reasons
    assert not any(w.active for w in sim.state.wants.values())


def test_a_wrong_hint_against_the_real_dependency_does_not_fail_the_build() -> None:
    # a hints b/1 (wrongly); b really reads a/1. Discovery closes the cycle a -> b -> a
    # through a's hint wait: the wait is released, a builds, then b: what no hint gives.
    sim = Sim(graph(job("a", "a/{x}", inputs=["b/{x}"], retries=0), job("b", "b/{x}")))
    root = sim.want("a/1")

    def b_reads_a(start: StartRun) -> RunOutcome:
        out = start.partition_refs[0]
        if out.startswith("b/") and not sim.state.is_live(ref("a/1")):
            return missing((out, ["a/1"]))
        return ok()

    assert run_to_rest(sim, b_reads_a) == 3  # b (reports a/1), a, b
    assert sim.status(root) == "satisfied"
    assert sim.state.is_live(ref("b/1"))
    released = [e for e in sim.events_of(ev.PartitionWaiting) if not e.waiting_on]
    assert released == [ev.PartitionWaiting(ref("a/1"), "a", ())]
    assert sim.replayed() == canonical(sim.state)


def test_a_partition_hinting_itself_is_dispatched() -> None:
    # the loader refuses this configuration; a graph built by hand still cannot wedge
    sim = Sim(graph(job("a", "a/{x}", inputs=["a/{x}"], retries=0)))
    root = sim.want("a/1")
    assert len(sim.starts()) == 1 and sim.events_of(ev.PartitionWaiting) == []
    sim.finish(sim.run_of("a/1"), ok())
    assert sim.status(root) == "satisfied"


def test_a_report_that_closes_several_hint_cycles_at_once_releases_them_all() -> None:
    # q/1 and q/2 both hint p/x; p/x's run then reports both missing: two cycles through
    # hint waits close in one report. Releasing the first cycle's hint left the second in
    # place (q/2 waited on p/x, p/x on q/2: a hang the stateful test found); each is
    # released, the q's run, and everything ends.
    sim = Sim(
        graph(
            job("q", "q/{n}", concurrency=4, inputs=("p/x",)),
            job("p", "p/{name}"),
        )
    )
    first, second = sim.want("q/1"), sim.want("q/2")
    assert {w.partition_ref for w in sim.events_of(ev.PartitionWaiting)} == {
        ref("q/1"),
        ref("q/2"),
    }
    sim.finish(sim.run_of("p/x"), missing(("p/x", ["q/1", "q/2"])))
    released = [w for w in sim.events_of(ev.PartitionWaiting) if not w.waiting_on]
    assert {w.partition_ref for w in released} == {ref("q/1"), ref("q/2")}
    for text in ("q/1", "q/2"):
        sim.finish(sim.run_of(text), ok())
    sim.finish(sim.run_of("p/x"), ok())
    assert sim.status(first) == sim.status(second) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_a_run_released_later_in_the_same_dispatch_pass_is_never_started() -> None:
    """Found by the stateful test: one pass queues a run for l1/p=0, then meets l0/p=0,
    which hints l1/p=0 and an input no job builds; that fails l0 and, up the chain, every
    want that needed l1/p=0, which releases the run queued a moment before. It must not
    start (and then be killed): the step's effects hold neither its start nor a kill."""
    sim = Sim(
        graph(
            job("job0", "l0/p={p}", inputs=["nope/p={p}", "l1/p={p}"]),
            job("job1", "l1/p={p}", max_batch=2),
            job("job2", "l2/p={p}"),
        )
    )
    top = sim.want("l2/p=2")
    sim.finish(sim.run_of("l2/p=2"), missing(("l2/p=2", ["l1/p=0", "l1/p=1"])))
    both = sim.run_of("l1/p=0")
    sim.finish(both, missing(("l1/p=1", ["l0/p=0"])))
    # that pass: l1/p=0 is queued again, then l0/p=0 (for l1/p=1) fails at once
    assert sim.status(top) == "upstream_failed"
    (canceled,) = sim.events_of(ev.JobRunCanceled)
    assert canceled.job_run_id != both
    assert canceled.job_run_id not in {s.job_run_id for s in sim.step_starts()}
    assert not sim.kills()
    assert sim.state.runs[canceled.job_run_id].status.value == "canceled"
    assert sim.replayed() == canonical(sim.state)
