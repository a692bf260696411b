"""The want and job-run lifecycle tables, checked edge by edge.

1. ``check_want`` / ``check_run`` accept exactly the pairs in the tables.
2. An illegal change offered to the fold raises and changes nothing.
3. Every edge the reconciler can take is driven through it by a scenario, observed in the
   event log (replayed one event at a time); the few edges it never takes are listed.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import pytest
from core_helpers import T0, Sim, fail, graph, job, missing, ok, ref

from databuild.core import events as ev
from databuild.core.errors import IllegalTransition
from databuild.core.lifecycle import (
    ACTIVE_WANT_STATUSES,
    JOB_RUN_TRANSITIONS,
    WANT_TRANSITIONS,
    JobRunStatus,
    check_run,
    check_want,
    mermaid,
)
from databuild.core.model import Want, WantSource, WantStatus, want_id_for
from databuild.core.outcomes import RunOutcome
from databuild.core.state import BuildState, canonical

W = WantStatus
R = JobRunStatus
WantEdge = tuple[WantStatus | None, WantStatus]
RunEdge = tuple[JobRunStatus | None, JobRunStatus]

WANT_OLD: list[WantStatus | None] = [None, *WantStatus]
RUN_OLD: list[JobRunStatus | None] = [None, *JobRunStatus]


# ---- 1. the tables -------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), list(itertools.product(WANT_OLD, WantStatus)))
def test_check_want_accepts_exactly_the_table(old: WantStatus | None, new: WantStatus) -> None:
    if new in WANT_TRANSITIONS[old]:
        check_want(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"want cannot go from {old or 'nothing'}"):
            check_want(old, new)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(RUN_OLD, JobRunStatus)))
def test_check_run_accepts_exactly_the_table(old: JobRunStatus | None, new: JobRunStatus) -> None:
    if new in JOB_RUN_TRANSITIONS[old]:
        check_run(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"job run cannot go from {old or 'nothing'}"):
            check_run(old, new)


def test_tables_cover_every_status_and_agree_with_terminal() -> None:
    assert set(WANT_TRANSITIONS) == set(WANT_OLD)
    assert set(JOB_RUN_TRANSITIONS) == set(RUN_OLD)
    assert WANT_TRANSITIONS[None] == ACTIVE_WANT_STATUSES
    for status in WantStatus:
        assert status not in WANT_TRANSITIONS[status], "no self-transitions"
        assert status.terminal == (status not in ACTIVE_WANT_STATUSES)
    # a satisfied want reopens only after its partition was invalidated (the fold checks)
    assert WANT_TRANSITIONS[W.SATISFIED] == ACTIVE_WANT_STATUSES
    assert WANT_TRANSITIONS[W.EXPIRED] == frozenset()
    for run_status in JobRunStatus:
        assert run_status.terminal == (JOB_RUN_TRANSITIONS[run_status] == frozenset())


def test_mermaid_lists_every_edge() -> None:
    text = mermaid(WANT_TRANSITIONS)
    edges = sum(len(v) for v in WANT_TRANSITIONS.values())
    assert text.startswith("stateDiagram-v2")
    assert len(text.splitlines()) == edges + 1
    assert "    [*] --> pending" in text
    assert "    failed --> building" in text
    assert "    queued --> running" in mermaid(JOB_RUN_TRANSITIONS)


# ---- 2. the fold refuses illegal changes and changes nothing -------------------------


def _snapshot(state: BuildState) -> object:
    """Everything the read model shows: canonical() plus every record, field by field."""
    return (
        canonical(state),
        copy.deepcopy(dict(state.wants.items())),
        copy.deepcopy(state.partitions),
        copy.deepcopy(dict(state.runs.items())),
        state.last_sequence,
        state.run_count,
    )


def _assert_refused(sim: Sim, payload: ev.EventPayload) -> None:
    state = sim.state
    before = _snapshot(state)
    with pytest.raises(IllegalTransition):
        state.apply(ev.Event(len(sim.log) + 1, sim.now + 1, payload))
    assert _snapshot(state) == before


def _graph_sim() -> Sim:
    return Sim(graph(job("daily", "daily/date={date}"), job("raw", "raw/date={date}")))


def test_satisfying_a_satisfied_want_is_refused_and_changes_nothing() -> None:
    sim = _graph_sim()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), ok())
    assert sim.status(want_id) == "satisfied"
    _assert_refused(sim, ev.WantSatisfied(want_id, None))
    _assert_refused(sim, ev.WantFailed(want_id, ev.WantFailureReason.JOB_FAILED, "x"))
    _assert_refused(sim, ev.WantCanceled(want_id, "x"))
    _assert_refused(sim, ev.WantExpired(want_id))


def test_reopening_a_satisfied_or_active_want_is_refused_and_changes_nothing() -> None:
    sim = _graph_sim()
    done = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), ok())
    _assert_refused(sim, ev.WantReopened(done, None))
    building = sim.want("daily/date=2")
    assert sim.status(building) == "building"
    _assert_refused(sim, ev.WantReopened(building, None))
    pending = sim.want("daily/date=3", slots=0)
    assert sim.status(pending) == "pending"
    _assert_refused(sim, ev.WantReopened(pending, None))


def test_creating_a_want_twice_is_refused() -> None:
    sim = _graph_sim()
    want_id = sim.want("daily/date=1")
    created = sim.events_of(ev.WantCreated)[0]
    _assert_refused(sim, created)
    assert want_id == created.want.want_id


def test_illegal_run_transitions_are_refused_and_change_nothing() -> None:
    sim = _graph_sim()
    sim.want("daily/date=1")
    run_id = sim.run_of("daily/date=1")
    sim.finish(run_id, ok())
    _assert_refused(sim, ev.JobRunStarted(run_id, 1))
    _assert_refused(sim, ev.JobRunSucceeded(run_id, 1.0))
    _assert_refused(sim, ev.JobRunFailed(run_id, ev.FailureKind.EXIT_NONZERO, "x", 1, 1.0, 0.0))
    _assert_refused(sim, ev.JobRunMissingDeps(run_id, (), 1.0))
    _assert_refused(sim, ev.JobRunCanceled(run_id, "x"))
    queued = sim.events_of(ev.JobRunQueued)[0]
    _assert_refused(sim, queued)


def test_finishing_a_canceled_queued_run_is_refused_and_changes_nothing() -> None:
    sim = _graph_sim()
    want_id = sim.want("daily/date=1")
    run_id = sim.run_of("daily/date=1")
    sim.cancel(want_id)
    assert sim.state.runs[run_id].status is R.CANCELED
    _assert_refused(sim, ev.JobRunSucceeded(run_id, 5.0))
    _assert_refused(sim, ev.JobRunMissingDeps(run_id, (), 5.0))


def test_building_a_waiting_partition_is_refused_and_changes_nothing() -> None:
    sim = _graph_sim()
    want_id = sim.want("daily/date=1")
    sim.finish(sim.run_of("daily/date=1"), missing(("daily/date=1", ["raw/date=1"])))
    assert sim.status(want_id) == "waiting"
    _assert_refused(sim, ev.PartitionBuilding(ref("daily/date=1"), sim.run_of("raw/date=1")))


# ---- 3. every edge the reconciler takes, driven through it ---------------------------


def want_transitions(sim: Sim) -> set[WantEdge]:
    """Every (old, new) want status change in the log, replayed one event at a time."""
    state = BuildState(sim.graph)
    seen: set[WantEdge] = set()
    for event in sim.log:
        before = {k: w.status for k, w in state.wants.items()}
        state.apply(event)
        for want_id, record in state.wants.items():
            old = before.get(want_id)
            if old is not record.status:
                seen.add((old, record.status))
    return seen


def run_transitions(sim: Sim) -> set[RunEdge]:
    state = BuildState(sim.graph)
    seen: set[RunEdge] = set()
    for event in sim.log:
        before = {k: r.status for k, r in state.runs.items()}
        state.apply(event)
        for run_id, record in state.runs.items():
            old = before.get(run_id)
            if old is not record.status:
                seen.add((old, record.status))
    return seen


A = "daily/date=1"
DEP = "raw/date=1"


def _two_sources_share(a_ends: Callable[[Sim], None]) -> Sim:
    """Want A (cli) on A ends as ``a_ends`` leaves it; then want B (api) on A starts a build;
    then A is asked for again and joins B's build (terminal -> building)."""
    sim = _graph_sim()
    sim.want(A)
    a_ends(sim)
    sim.want(A, source=WantSource.API)
    sim.want(A)  # reopen
    return sim


def _fail_for_good(sim: Sim) -> None:
    sim.finish(sim.run_of(A), fail(ev.FailureKind.PERMANENT))


def _upstream_fail(sim: Sim) -> None:
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    sim.finish(sim.run_of(DEP), fail(ev.FailureKind.PERMANENT))


def _cancel_a(sim: Sim) -> None:
    sim.cancel(want_id_for(ref(A), T0, WantSource.CLI))


def _reopen_into(state_maker: Callable[[Sim], None]) -> Callable[[], Sim]:
    """A fails (permanently), another source's want moves the partition on, A is reopened."""

    def scenario() -> Sim:
        sim = _graph_sim()
        sim.want(A)
        _fail_for_good(sim)
        sim.want(A, source=WantSource.API)
        state_maker(sim)
        sim.want(A)
        return sim

    return scenario


def _scenario_want_pending_then_building() -> Sim:
    sim = _graph_sim()
    sim.want(A, slots=0)
    sim.tick()
    return sim


def _scenario_second_want_joins_build() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.want(A, source=WantSource.API)
    return sim


def _scenario_want_on_waiting() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    sim.want(A, source=WantSource.API)
    sim.finish(sim.run_of(DEP), ok())  # WAITING -> PENDING (-> BUILDING)
    return sim


def _scenario_want_on_backoff() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), fail())
    sim.want(A, source=WantSource.API)
    sim.tick(sim.now + 1000)  # RETRYING -> BUILDING
    return sim


def _scenario_live_at_once() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), ok())
    sim.want(A, source=WantSource.API)
    return sim


def _scenario_hinted_input_not_live() -> Sim:
    sim = Sim(graph(job("a", "a/{x}", inputs=["dep/{x}"]), job("dep", "dep/{x}")))
    sim.want("a/1", slots=0)
    sim.tick()  # PENDING -> WAITING: its hinted input is wanted before a/1 runs
    return sim


def _scenario_unbuildable() -> Sim:
    sim = _graph_sim()
    sim.want("nope/x")
    return sim


def _scenario_expired_pending() -> Sim:
    sim = _graph_sim()
    sim.want(A, ttl=10, slots=0)
    sim.tick(T0 + 11, slots=0)
    return sim


def _scenario_cancel_pending() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A, slots=0)
    sim.cancel(want_id, slots=0)
    return sim


def _scenario_missing_but_live_meanwhile() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.want(DEP)
    sim.finish(sim.run_of(DEP), ok())
    sim.finish(sim.run_of(A), missing((A, [DEP])), slots=0)  # BUILDING -> PENDING
    return sim


def _scenario_missing() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    return sim


def _scenario_retry() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), fail())
    return sim


def _scenario_success() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.start(sim.run_of(A))
    sim.finish(sim.run_of(A), ok())
    return sim


def _scenario_permanent_failure() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    _fail_for_good(sim)
    return sim


def _scenario_expire_building() -> Sim:
    sim = _graph_sim()
    sim.want(A, ttl=10)
    sim.tick(T0 + 11)
    return sim


def _scenario_cancel_building() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A)
    sim.start(sim.run_of(A))
    sim.cancel(want_id)
    return sim


def _scenario_waiting_live_upstream() -> Sim:
    sim = _scenario_missing()
    sim.rec.partition_live_upstream(ref(A), "other-graph", sim.now)
    sim.take()
    return sim


def _scenario_cycle() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    sim.finish(sim.run_of(DEP), missing((DEP, [A])))
    return sim


def _scenario_upstream_failed() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    _upstream_fail(sim)
    return sim


def _scenario_expire_waiting() -> Sim:
    sim = _graph_sim()
    sim.want(A, ttl=100)
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    sim.tick(T0 + 101)
    return sim


def _scenario_cancel_waiting() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A)
    sim.finish(sim.run_of(A), missing((A, [DEP])))
    sim.cancel(want_id)
    return sim


def _scenario_backoff_live_upstream() -> Sim:
    sim = _scenario_retry()
    sim.rec.partition_live_upstream(ref(A), "other-graph", sim.now)
    sim.take()
    return sim


def _scenario_expire_retrying() -> Sim:
    sim = _graph_sim()
    sim.want(A, ttl=100)
    sim.finish(sim.run_of(A), fail())
    sim.tick(T0 + 101, slots=0)
    return sim


def _scenario_cancel_retrying() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A)
    sim.finish(sim.run_of(A), fail())
    sim.cancel(want_id)
    return sim


def _scenario_retrying_job_removed_by_a_reload() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), fail())
    sim.graph = graph(job("raw", "raw/date={date}"))  # no job builds daily/ any more
    sim.rec.reload(sim.graph, "reloaded", sim.now)
    sim.tick(sim.now + 60)
    return sim


def _scenario_reopen_failed() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    _fail_for_good(sim)
    sim.want(A, slots=0)
    return sim


def _scenario_reopen_upstream_failed() -> Sim:
    sim = _graph_sim()
    sim.want(A)
    _upstream_fail(sim)
    sim.want(A, slots=0)
    return sim


def _scenario_reopen_canceled() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A, slots=0)
    sim.cancel(want_id, slots=0)
    sim.want(A, slots=0)
    return sim


def _scenario_reopen_invalidated() -> Sim:
    """A satisfied want whose partition is invalidated is reopened in the same step."""
    sim = _graph_sim()
    sim.want(A)
    sim.finish(sim.run_of(A), ok())
    sim.rec.invalidate((ref(A),), "wrong", "tests", sim.now)
    sim.take()
    return sim


def _to_waiting(sim: Sim) -> None:
    sim.finish(sim.run_of(A), missing((A, [DEP])))


def _to_backoff(sim: Sim) -> None:
    sim.finish(sim.run_of(A), fail())


def _nothing(sim: Sim) -> None:
    pass


WANT_SCENARIOS: dict[WantEdge, Callable[[], Sim]] = {
    (None, W.PENDING): _scenario_want_pending_then_building,
    (None, W.BUILDING): _scenario_second_want_joins_build,
    (None, W.WAITING): _scenario_want_on_waiting,
    (None, W.RETRYING): _scenario_want_on_backoff,
    (W.PENDING, W.BUILDING): _scenario_want_pending_then_building,
    (W.PENDING, W.SATISFIED): _scenario_live_at_once,
    (W.PENDING, W.WAITING): _scenario_hinted_input_not_live,
    (W.PENDING, W.FAILED): _scenario_unbuildable,
    (W.PENDING, W.EXPIRED): _scenario_expired_pending,
    (W.PENDING, W.CANCELED): _scenario_cancel_pending,
    (W.BUILDING, W.PENDING): _scenario_missing_but_live_meanwhile,
    (W.BUILDING, W.WAITING): _scenario_missing,
    (W.BUILDING, W.RETRYING): _scenario_retry,
    (W.BUILDING, W.SATISFIED): _scenario_success,
    (W.BUILDING, W.FAILED): _scenario_permanent_failure,
    (W.BUILDING, W.EXPIRED): _scenario_expire_building,
    (W.BUILDING, W.CANCELED): _scenario_cancel_building,
    (W.WAITING, W.PENDING): _scenario_want_on_waiting,
    (W.WAITING, W.SATISFIED): _scenario_waiting_live_upstream,
    (W.WAITING, W.FAILED): _scenario_cycle,
    (W.WAITING, W.UPSTREAM_FAILED): _scenario_upstream_failed,
    (W.WAITING, W.EXPIRED): _scenario_expire_waiting,
    (W.WAITING, W.CANCELED): _scenario_cancel_waiting,
    (W.RETRYING, W.BUILDING): _scenario_want_on_backoff,
    (W.RETRYING, W.SATISFIED): _scenario_backoff_live_upstream,
    (W.RETRYING, W.EXPIRED): _scenario_expire_retrying,
    (W.RETRYING, W.CANCELED): _scenario_cancel_retrying,
    (W.RETRYING, W.FAILED): _scenario_retrying_job_removed_by_a_reload,
    (W.FAILED, W.PENDING): _scenario_reopen_failed,
    (W.FAILED, W.BUILDING): _reopen_into(_nothing),
    (W.FAILED, W.WAITING): _reopen_into(_to_waiting),
    (W.FAILED, W.RETRYING): _reopen_into(_to_backoff),
    (W.UPSTREAM_FAILED, W.PENDING): _scenario_reopen_upstream_failed,
    (W.UPSTREAM_FAILED, W.BUILDING): lambda: _two_sources_share(_upstream_fail),
    (W.CANCELED, W.PENDING): _scenario_reopen_canceled,
    (W.SATISFIED, W.PENDING): _scenario_reopen_invalidated,
    (W.CANCELED, W.BUILDING): lambda: _two_sources_share(_cancel_a),
}

# Edges in the table that the reconciler does not take today, and why.
WANT_EDGES_NOT_DRIVEN: dict[WantEdge, str] = {
    (W.PENDING, W.UPSTREAM_FAILED): "only wants of waiting partitions become upstream-failed; "
    "a pending want's partition is absent, so nothing it waits on can fail",
    **{
        (W.SATISFIED, new): "a satisfied want reopens only once its partition was invalidated "
        "(absent: pending); into building, waiting or retrying only when discovery reopens a "
        "derived want whose invalidated partition another want already builds, waits on or "
        "retries (tests/core/test_stateful.py reaches it)"
        for new in (W.BUILDING, W.WAITING, W.RETRYING)
    },
}


def _scenario_reopen_canceled_into(maker: Callable[[Sim], None]) -> Callable[[], Sim]:
    def scenario() -> Sim:
        sim = _graph_sim()
        a_id = sim.want(A)
        sim.want(A, source=WantSource.API)
        sim.cancel(a_id)  # B still needs the build
        maker(sim)
        sim.want(A)
        return sim

    return scenario


def _upstream_failed_then(then: Callable[[Sim], None]) -> Callable[[], Sim]:
    """A's want fails upstream (raw/date=1 fails); another source's want moves A on (to
    waiting on raw/date=2, or to backoff); then A's want is asked for again."""

    def scenario() -> Sim:
        sim = _graph_sim()
        sim.want(A)
        _upstream_fail(sim)
        sim.want(A, source=WantSource.API)
        then(sim)
        sim.want(A)  # reopen
        return sim

    return scenario


def _to_waiting_on_another(sim: Sim) -> None:
    sim.finish(sim.run_of(A), missing((A, ["raw/date=2"])))


WANT_SCENARIOS[(W.CANCELED, W.WAITING)] = _scenario_reopen_canceled_into(_to_waiting)
WANT_SCENARIOS[(W.CANCELED, W.RETRYING)] = _scenario_reopen_canceled_into(_to_backoff)
WANT_SCENARIOS[(W.UPSTREAM_FAILED, W.WAITING)] = _upstream_failed_then(_to_waiting_on_another)
WANT_SCENARIOS[(W.UPSTREAM_FAILED, W.RETRYING)] = _upstream_failed_then(_to_backoff)


RUN_SCENARIOS: dict[RunEdge, Callable[[], Sim]] = {
    (None, R.QUEUED): _scenario_success,
    (R.QUEUED, R.RUNNING): _scenario_success,
    (R.QUEUED, R.SUCCEEDED): _scenario_live_at_once,
    (R.QUEUED, R.FAILED): _scenario_retry,
    (R.QUEUED, R.MISSING_DEPS): _scenario_missing,
    (R.QUEUED, R.CANCELED): lambda: _cancel_queued(),
    (R.RUNNING, R.SUCCEEDED): _scenario_success,
    (R.RUNNING, R.FAILED): lambda: _started_then(fail()),
    (R.RUNNING, R.MISSING_DEPS): lambda: _started_then(missing((A, [DEP]))),
    (R.RUNNING, R.CANCELED): _scenario_cancel_building,
}


def _cancel_queued() -> Sim:
    sim = _graph_sim()
    want_id = sim.want(A)
    sim.cancel(want_id)
    return sim


def _started_then(outcome: RunOutcome) -> Sim:
    sim = _graph_sim()
    sim.want(A)
    sim.start(sim.run_of(A))
    sim.finish(sim.run_of(A), outcome)
    return sim


def test_every_want_edge_is_driven_or_explained() -> None:
    table = {(old, new) for old, news in WANT_TRANSITIONS.items() for new in news}
    assert set(WANT_SCENARIOS) | set(WANT_EDGES_NOT_DRIVEN) == table
    assert not set(WANT_SCENARIOS) & set(WANT_EDGES_NOT_DRIVEN)


def test_every_run_edge_is_driven() -> None:
    table = {(old, new) for old, news in JOB_RUN_TRANSITIONS.items() for new in news}
    assert set(RUN_SCENARIOS) == table


@pytest.mark.parametrize("edge", list(WANT_SCENARIOS), ids=lambda e: f"{e[0]}->{e[1]}")
def test_reconciler_drives_want_edge(edge: WantEdge) -> None:
    sim = WANT_SCENARIOS[edge]()
    assert edge in want_transitions(sim)
    assert sim.replayed() == canonical(sim.state)


@pytest.mark.parametrize("edge", list(RUN_SCENARIOS), ids=lambda e: f"{e[0]}->{e[1]}")
def test_reconciler_drives_run_edge(edge: RunEdge) -> None:
    sim = RUN_SCENARIOS[edge]()
    assert edge in run_transitions(sim)
    assert sim.replayed() == canonical(sim.state)


def test_no_scenario_takes_an_edge_outside_the_tables() -> None:
    want_table = {(old, new) for old, news in WANT_TRANSITIONS.items() for new in news}
    run_table = {(old, new) for old, news in JOB_RUN_TRANSITIONS.items() for new in news}
    for scenario in [*WANT_SCENARIOS.values(), *RUN_SCENARIOS.values()]:
        sim = scenario()
        assert want_transitions(sim) <= want_table
        assert run_transitions(sim) <= run_table


def test_want_record_keeps_its_want() -> None:
    sim = _graph_sim()
    want_id = sim.want(A)
    record = sim.state.wants[want_id]
    assert isinstance(record.want, Want)
    assert record.want.partition_ref == A
