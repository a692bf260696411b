"""The flagship test: a Hypothesis state machine drives the reconciler through random
graphs, wants, job outcomes, cancels, clock ticks and restarts, and checks the invariants
of SPEC §2 after every step.

The graph is a small layered DAG: layer 0 partitions have no inputs, each partition of a
higher layer reads a random subset of the layer below; one job per layer with random
batching, concurrency and retries; sometimes one input partition no job builds. Jobs are
simulated: an *honest* job succeeds when all its inputs are live in the reconciler's state
and otherwise reports exactly the inputs that are not; it may also fail, fail for good, or
time out. A restart builds a new Reconciler from the event log and recovers.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from core_helpers import DAY, T0
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from databuild.core import events as ev
from databuild.core import invalidation, sla
from databuild.core.lifecycle import ACTIVE_WANT_STATUSES, PartitionStatus
from databuild.core.model import (
    ExternalSpec,
    GraphSpec,
    JobRunId,
    JobSpec,
    WantId,
    WantRequest,
    WantSource,
)
from databuild.core.model import WantStatus as W
from databuild.core.outcomes import (
    OutputFailed,
    RunFailed,
    RunFinishedReport,
    RunMissingDeps,
    RunOutcome,
    RunPartial,
    RunStartedReport,
    RunSucceeded,
)
from databuild.core.reconcile import Effect, KillOrphan, KillRun, Reconciler, StartRun
from databuild.core.refs import PartitionPattern, PartitionRef, parse_ref
from databuild.core.state import BuildState, canonical

UNBUILDABLE = parse_ref("nojob/p=0")
# partitions from outside the graph (issue 11): wants wait on them until declared live
EXTERNAL = ExternalSpec("outside", (PartitionPattern.compile("ext/p={p}"),))
EXTERNAL_REFS = (parse_ref("ext/p=0"), parse_ref("ext/p=1"))
PARTITION_OF_WANT = {
    W.PENDING: {PartitionStatus.ABSENT},
    W.BUILDING: {PartitionStatus.BUILDING},
    W.WAITING: {PartitionStatus.WAITING},
    W.RETRYING: {PartitionStatus.BACKOFF},
}


@dataclass(frozen=True)
class Model:
    spec: GraphSpec
    deps: dict[PartitionRef, tuple[PartitionRef, ...]]
    partitions: tuple[PartitionRef, ...]  # every partition a want may name


def hints_for(layer: int, layers: int) -> st.SearchStrategy[list[str]]:
    """Input hints a job may declare, true or not (they are advisory): the partition of the
    same ``p`` one layer down (often a real input), one layer up (against the real edges: a
    cycle with discovery), itself, or one nothing builds."""
    options = [f"l{layer}/p={{p}}", "nope/p={p}"]
    if layer > 0:
        options.append(f"l{layer - 1}/p={{p}}")
    if layer < layers - 1:
        options.append(f"l{layer + 1}/p={{p}}")
    return st.lists(st.sampled_from(options), unique=True, max_size=2) | st.just([])


@st.composite
def models(draw: st.DrawFn) -> Model:
    layers = draw(st.integers(2, 4))
    sizes = [draw(st.integers(1, 4)) for _ in range(layers)]
    names = [[parse_ref(f"l{layer}/p={i}") for i in range(n)] for layer, n in enumerate(sizes)]
    if draw(st.booleans()):
        names[0].append(UNBUILDABLE)  # an input no job builds
    with_external = draw(st.booleans())
    if with_external:
        names[0].extend(EXTERNAL_REFS)  # inputs that land from outside
    deps: dict[PartitionRef, tuple[PartitionRef, ...]] = {}
    for layer in range(1, layers):
        below = names[layer - 1]
        for partition in names[layer]:
            chosen = draw(st.lists(st.sampled_from(below), unique=True, max_size=len(below)))
            deps[partition] = tuple(sorted(chosen))
    jobs = tuple(
        JobSpec(
            name=f"job{layer}",
            outputs=(PartitionPattern.compile(f"l{layer}/p={{p}}"),),
            command=("true",),
            max_batch=draw(st.integers(1, 3)),
            concurrency=draw(st.integers(1, 2)),
            retries=draw(st.integers(0, 2)),
            retry_backoff_seconds=1.0,
            retry_backoff_max_seconds=4.0,
            inputs=tuple(
                PartitionPattern.compile(h) for h in draw(hints_for(layer, layers), label="hints")
            ),
        )
        for layer in range(layers)
    )
    every = tuple(p for layer in names for p in layer)
    externals = (EXTERNAL,) if with_external else ()
    return Model(GraphSpec(name="random", jobs=jobs, externals=externals), deps, every)


OUTCOMES = st.sampled_from(
    ["honest", "honest", "honest_built", "fail", "permanent", "timeout", "per_output"]
)


class ReconcilerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: Model | None = None
        self.rec: Reconciler | None = None
        self.log: list[ev.Event] = []
        self.now = float(T0)
        self.want_ids: list[WantId] = []
        self.started: list[StartRun] = []
        self.live_seen: set[PartitionRef] = set()
        self.invalidated: set[PartitionRef] = set()  # since invalidated, not live again
        self.sla_missed: set[WantId] = set()
        self.checked_upto = 0
        self.last_tick: tuple[float, int, int] | None = None  # (now, free_slots, started)

    # ---- plumbing --------------------------------------------------------------------
    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @property
    def r(self) -> Reconciler:
        assert self.rec is not None
        return self.rec

    @property
    def state(self) -> BuildState:
        return self.r.state

    def take(self) -> tuple[list[ev.EventPayload], list[Effect]]:
        events, effects = self.r.take()
        # the compact fold: finished records leave for the (copying) history store at every
        # step, as a service's flush does; replay_equals_incremental compares with a fold
        # that keeps them all pending
        self.state.flush_history()
        for event in events:
            assert event.timestamp == self.now
            hypothesis_event(ev.event_type_name(event.payload))  # --hypothesis-show-statistics
            self.log.append(ev.Event(len(self.log) + 1, event.timestamp, event.payload))
        for effect in effects:
            if isinstance(effect, StartRun):
                run = self.state.runs[effect.job_run_id]
                assert run.status.value == "queued"
                assert run.partition_refs == effect.partition_refs
                assert len(effect.partition_refs) <= self.m.spec.job(effect.job_name).max_batch
                self.started.append(effect)
            elif isinstance(effect, KillRun):
                assert self.state.runs[effect.job_run_id].status.value == "canceled"
            elif isinstance(effect, KillOrphan):
                assert self.state.runs[effect.job_run_id].pid == effect.pid
        return [e.payload for e in events], effects

    def in_flight(self) -> list[JobRunId]:
        return sorted(r.job_run_id for r in self.state.runs.values() if not r.status.terminal)

    def honest(self, run_id: JobRunId, say_built: bool = False) -> RunOutcome:
        run = self.state.runs[run_id]
        blocked = []
        for output in run.partition_refs:
            lacking = tuple(d for d in self.m.deps.get(output, ()) if not self.state.is_live(d))
            if lacking:
                blocked.append(ev.MissingDeps(output, lacking))
        if blocked:
            blocked_outputs = {m.partition_ref for m in blocked}
            built = (
                tuple(r for r in run.partition_refs if r not in blocked_outputs)
                if say_built
                else ()
            )
            return RunMissingDeps(tuple(blocked), 1.0, built)
        return RunSucceeded(1.0)

    def one_output_failed(self, data: st.DataObject, run_id: JobRunId) -> RunOutcome:
        honest = self.honest(run_id)
        run = self.state.runs[run_id]
        bad = data.draw(st.sampled_from(run.partition_refs), label="failed output")
        kind = data.draw(
            st.sampled_from([ev.FailureKind.PERMANENT, ev.FailureKind.EXIT_NONZERO]), label="kind"
        )
        lacking = honest.missing if isinstance(honest, RunMissingDeps) else ()
        return RunPartial(
            (OutputFailed(bad, kind, f"{bad} broke"),),
            tuple(m for m in lacking if m.partition_ref != bad),
            0,
            1.0,
        )

    def do_tick(self, free_slots: int) -> None:
        self.r.tick(self.now, free_slots)
        _, effects = self.take()
        started = sum(isinstance(e, StartRun) for e in effects)
        self.last_tick = (self.now, free_slots, started)

    # ---- rules -----------------------------------------------------------------------
    @initialize(model=models())
    def build(self, model: Model) -> None:
        self.model = model
        self.rec = Reconciler(model.spec)

    @rule(
        data=st.data(),
        source=st.sampled_from([WantSource.CLI, WantSource.API, WantSource.SCHEDULED]),
        day=st.sampled_from([0, 1]),
        sla=st.sampled_from([0, 0, 300, 3600]),
        ttl=st.sampled_from([0, 0, 0, 600, 7200]),
        tick=st.booleans(),
    )
    def create_want(
        self, data: st.DataObject, source: WantSource, day: int, sla: int, ttl: int, tick: bool
    ) -> None:
        partition = data.draw(st.sampled_from(self.m.partitions), label="partition")
        request = WantRequest(partition, T0 + day * DAY, source, ttl_seconds=ttl, sla_seconds=sla)
        was = self.state.wants.get(request.want_id)
        old_status = was.status if was is not None else None
        was_live = self.state.is_live(partition)
        want_id = self.r.request_want(request, self.now)
        assert want_id == request.want_id
        payloads, _ = self.take()
        if old_status in ACTIVE_WANT_STATUSES or (old_status is W.SATISFIED and was_live):
            assert payloads == [], "asking again for an active or satisfied want changes nothing"
        if old_status is W.SATISFIED and not was_live:
            # its partition was invalidated (and the want not reopened then, having expired)
            assert payloads[0] == ev.WantReopened(want_id, None), payloads
        if self.state.is_live(partition) and old_status is None:
            assert self.state.wants[want_id].status in (W.SATISFIED, W.EXPIRED)
        if partition == UNBUILDABLE and self.state.wants[want_id].status is not W.EXPIRED:
            assert self.state.wants[want_id].status is W.FAILED
            assert UNBUILDABLE in self.state.wants[want_id].message
        if want_id not in self.want_ids:
            self.want_ids.append(want_id)
        if tick:
            self.do_tick(4)

    @rule(data=st.data(), root=st.sampled_from(["b1", "b2"]), tick=st.booleans())
    def create_backfill(self, data: st.DataObject, root: str, tick: bool) -> None:
        """A backfill set: several wants, each with its own data date, one root, one step
        (the fair dispatch between roots is then exercised by every invariant)."""
        chosen = data.draw(
            st.lists(st.sampled_from(self.m.partitions), min_size=1, max_size=6, unique=True),
            label="partitions",
        )
        requests = [
            WantRequest(p, T0 + i * DAY, WantSource.CLI, root_want_id=WantId(root))
            for i, p in enumerate(chosen)
        ]
        for request in requests:
            self.r.request_want(request, self.now)
        self.take()
        for request in requests:
            want = self.state.wants[request.want_id].want
            # a new want joins the set; one asked before keeps the root it was made with
            assert want.root_want_id in (root, request.want_id, "b1", "b2")
            if request.want_id not in self.want_ids:
                self.want_ids.append(request.want_id)
        if tick:
            self.do_tick(4)

    @precondition(lambda self: bool(self.want_ids))
    @rule(data=st.data(), tick=st.booleans())
    def cancel_want(self, data: st.DataObject, tick: bool) -> None:
        want_id = data.draw(st.sampled_from(self.want_ids), label="want")
        was_active = self.state.wants[want_id].active
        status = self.r.cancel_want(want_id, "test", self.now)
        self.take()
        if was_active:
            assert status is W.CANCELED
        if tick:
            self.do_tick(4)

    @precondition(lambda self: any(not r.status.terminal for r in self.state.runs.values()))
    @rule(data=st.data())
    def report_started(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(self.in_flight()), label="run")
        self.r.run_started(RunStartedReport(run_id, 1000 + int(run_id[1:])), self.now)
        self.take()

    @precondition(lambda self: any(not r.status.terminal for r in self.state.runs.values()))
    @rule(data=st.data(), outcome=OUTCOMES, tick=st.booleans())
    def finish_run(self, data: st.DataObject, outcome: str, tick: bool) -> None:
        run_id = data.draw(st.sampled_from(self.in_flight()), label="run")
        result: RunOutcome
        if outcome == "honest":
            result = self.honest(run_id)
        elif outcome == "honest_built":  # a batch that says what it built (the SDK does)
            result = self.honest(run_id, say_built=True)
        elif outcome == "fail":
            result = RunFailed(ev.FailureKind.EXIT_NONZERO, "exit 1", 1, 1.0)
        elif outcome == "timeout":
            result = RunFailed(ev.FailureKind.TIMEOUT, "timed out", -9, 1.0)
        elif outcome == "per_output":  # issue 16: one output fails, the others are honest
            result = self.one_output_failed(data, run_id)
        else:
            result = RunFailed(ev.FailureKind.PERMANENT, "bad data", 2, 1.0)
        self.r.run_finished(RunFinishedReport(run_id, result), self.now)
        self.take()
        assert self.state.runs[run_id].status.terminal
        if tick:
            self.do_tick(4)

    @precondition(lambda self: any(r.status.terminal for r in self.state.runs.values()))
    @rule(data=st.data())
    def late_report(self, data: st.DataObject) -> None:
        """A report for a run that already finished (lost, canceled, duplicated) is ignored."""
        done = sorted(r.job_run_id for r in self.state.runs.values() if r.status.terminal)
        run_id = data.draw(st.sampled_from(done), label="run")
        before = canonical(self.state)
        self.r.run_started(RunStartedReport(run_id, 1), self.now)
        self.r.run_finished(RunFinishedReport(run_id, RunSucceeded(1.0)), self.now)
        payloads, effects = self.take()
        assert payloads == [] and effects == []
        assert canonical(self.state) == before

    @precondition(lambda self: bool(self.m.spec.externals))
    @rule(data=st.data(), tick=st.booleans())
    def declare_external_live(self, data: st.DataObject, tick: bool) -> None:
        """An external partition lands: every want on it, and every partition waiting only
        on it, goes on in this same step. Declaring it again changes nothing."""
        ref = data.draw(st.sampled_from(EXTERNAL_REFS), label="external")
        was_live = self.state.is_live(ref)
        waiting = [w for w in sorted(self.state.partition(ref).active_wants)]
        waiters = sorted(self.state.waiters.get(ref, ()))
        self.r.externals_live((ref,), self.now)
        payloads, effects = self.take()
        assert effects == []
        if was_live:
            assert payloads == []
        assert self.state.is_live(ref)
        for want_id in waiting:
            assert self.state.wants[want_id].status is W.SATISFIED
        for waiter in waiters:
            assert ref not in self.state.partition(waiter).waiting_on
        if tick:
            self.do_tick(4)

    @precondition(lambda self: any(self.state.is_live(r) for r in self.state.partitions))
    @rule(data=st.data(), downstream=st.booleans(), tick=st.booleans())
    def invalidate(self, data: st.DataObject, downstream: bool, tick: bool) -> None:
        """A live partition turns out wrong: it (and, asked, what was built from it) is
        absent at once, never served live until a new build; its client wants reopen."""
        live = sorted(r for r, p in self.state.partitions.items() if self.state.is_live(r))
        ref = data.draw(st.sampled_from(live), label="invalidate")
        if self.state.partitions[ref].upstream and not self.state.partitions[
            ref
        ].upstream.startswith("external "):
            return
        refs = invalidation.plan(self.state, (ref,), downstream=downstream)
        assert refs[0] == ref and len(set(refs)) == len(refs)
        if not downstream:
            assert refs == (ref,)
        chosen, reopened = self.r.invalidate(refs, "wrong", "tests", self.now)
        payloads, effects = self.take()
        assert effects == []
        assert payloads[0] == ev.PartitionsInvalidated(chosen, "wrong", "tests")
        for r in chosen:
            assert not self.state.is_live(r)
        for want_id in reopened:
            assert self.state.wants[want_id].active
        self.invalidated.update(chosen)
        if tick:
            self.do_tick(4)

    @rule(
        advance=st.sampled_from([0.0, 0.5, 1.0, 3.0, 60.0, 400.0, 3000.0]), slots=st.integers(0, 4)
    )
    def tick(self, advance: float, slots: int) -> None:
        self.now += advance
        self.do_tick(slots)

    @rule(slots=st.integers(0, 4))
    def restart(self, slots: int) -> None:
        before = canonical(self.state)
        in_flight = self.in_flight()
        self.rec = Reconciler(self.m.spec)
        self.rec.load(list(self.log))
        assert canonical(self.state) == before, "the log holds the whole state"
        self.rec.recover(self.now)
        payloads, effects = self.take()
        lost = [p for p in payloads if isinstance(p, ev.JobRunFailed)]
        assert sorted(p.job_run_id for p in lost) == in_flight
        assert all(p.kind is ev.FailureKind.LOST for p in lost)
        orphans = {e.job_run_id for e in effects if isinstance(e, KillOrphan)}
        assert orphans == {r for r in in_flight if self.state.runs[r].pid}
        self.do_tick(slots)

    # ---- invariants ------------------------------------------------------------------
    @invariant()
    def one_run_per_partition_and_concurrency(self) -> None:
        if self.rec is None:
            return
        building: Counter[PartitionRef] = Counter()
        per_job: Counter[str] = Counter()
        for run in self.state.runs.values():
            if not run.status.terminal:
                building.update(run.partition_refs)
                per_job[run.job_name] += 1
                for ref in run.partition_refs:
                    part = self.state.partitions[ref]
                    assert part.status is PartitionStatus.BUILDING, (ref, part.status)
                    assert part.job_run_id == run.job_run_id
        assert all(n == 1 for n in building.values()), building
        for name, count in per_job.items():
            assert count <= self.m.spec.job(name).concurrency, (name, count)

    @invariant()
    def live_partitions_are_never_queued_again(self) -> None:
        for event in self.log[self.checked_upto :]:
            payload = event.payload
            if isinstance(payload, ev.PartitionLive):
                assert payload.partition_ref not in self.live_seen, "made live twice"
                self.live_seen.add(payload.partition_ref)
                self.invalidated.discard(payload.partition_ref)
            elif isinstance(payload, ev.PartitionsInvalidated):
                # an invalidated partition is live no more: rebuilt only from here on
                self.live_seen.difference_update(payload.partition_refs)
            elif isinstance(payload, ev.JobRunQueued):
                rebuilt = set(payload.partition_refs) & self.live_seen
                assert not rebuilt, f"live partitions queued again: {rebuilt}"
            elif isinstance(payload, ev.PartitionBuilding | ev.PartitionFailed):
                assert payload.partition_ref not in self.live_seen
            elif isinstance(payload, ev.SlaMissed):
                assert payload.want_id not in self.sla_missed, "SLA missed raised twice"
                self.sla_missed.add(payload.want_id)
                want = self.state.wants[payload.want_id].want
                assert payload.deadline == want.sla_deadline <= event.timestamp
        self.checked_upto = len(self.log)

    @invariant()
    def every_want_is_terminal_or_being_worked_on(self) -> None:
        if self.rec is None:
            return
        state = self.state
        for want_id, record in state.wants.items():
            part = state.partitions[record.want.partition_ref]
            if record.status is W.SATISFIED:
                # or its partition was invalidated since (a derived want: rebuilt when
                # a rebuild discovers it again, or an expired one)
                assert part.status is PartitionStatus.LIVE or part.ref in self.invalidated, (
                    want_id,
                    part.status,
                )
                continue
            if not record.active:
                assert want_id not in part.active_wants
                continue
            assert want_id in part.active_wants
            assert part.status in PARTITION_OF_WANT[record.status], (record.status, part.status)
            if part.status is PartitionStatus.ABSENT:
                external = state.graph.route(part.ref).external
                assert state.job_of(part.ref) is not None or external is not None, (
                    f"{part.ref} can never be dispatched"
                )
            # it ends, or it waits on a named partition: never "held by nothing"
            held = sla.blame(state, want_id)
            assert held.reason not in (sla.BlameReason.NOT_HELD, sla.BlameReason.UNBUILDABLE), (
                want_id,
                held,
            )
            if held.reason is sla.BlameReason.EXTERNAL:
                assert held.ref in EXTERNAL_REFS and not state.is_live(held.ref)
                assert held.text == f"waiting on external outside: {held.ref}"
            if part.status is PartitionStatus.BACKOFF:
                assert part.retry_at > 0
            if part.status is PartitionStatus.WAITING:
                assert part.waiting_on, f"{part.ref} waits on nothing"
                for dep in part.waiting_on:
                    dep_part = state.partitions.get(dep)
                    assert dep_part is not None and dep_part.status is not PartitionStatus.LIVE
                    assert dep_part.active_wants, (
                        f"{part.ref} waits on {dep}, which no active want asks for: a hang"
                    )

    @invariant()
    def replay_equals_incremental(self) -> None:
        if self.rec is None:
            return
        fresh = BuildState(self.m.spec)
        for event in self.log:
            fresh.apply(event)
        assert canonical(fresh) == canonical(self.state)

    @invariant()
    def the_active_want_count_is_the_count_of_active_wants(self) -> None:
        if self.rec is None:
            return
        assert self.state.active_want_count == len(self.state.active_wants())

    @invariant()
    def memory_holds_active_work_and_the_fold_counts_every_record(self) -> None:
        if self.rec is None:
            return
        state = self.state
        wants, runs = state.wants.values(), state.runs.values()
        assert all(w.active for w in state.wants.hot.values())
        assert all(not r.status.terminal for r in state.runs.hot.values())
        assert len(state.wants) == len(wants) and len(state.runs) == len(runs)
        by_status = Counter(w.status for w in wants)
        assert {s: n for s, n in state.want_counts.items() if n} == dict(by_status)
        finished = Counter((r.job_name, r.status) for r in runs if r.status.terminal)
        counted = Counter(
            {
                (job, s): n
                for job, stats in state.run_stats.items()
                for s, n in stats.outcomes.items()
            }
        )
        assert counted == finished

    @invariant()
    def a_tick_with_free_slots_leaves_no_dispatchable_work_behind(self) -> None:
        if self.rec is None or self.last_tick is None:
            return
        now, free_slots, started = self.last_tick
        self.last_tick = None
        for record in self.state.wants.values():
            if record.active and record.want.sla_deadline <= now:
                assert record.sla_missed, f"{record.want.want_id} is past its SLA, unreported"
        if started >= free_slots:
            return
        running: Counter[str] = Counter(
            r.job_name for r in self.state.runs.values() if not r.status.terminal
        )
        for part in self.state.partitions.values():
            if not part.active_wants:
                continue
            ready = part.status is PartitionStatus.ABSENT or (
                part.status is PartitionStatus.BACKOFF and part.retry_at <= now
            )
            job = self.state.job_of(part.ref)
            if ready and job is not None:
                assert running[job] >= self.m.spec.job(job).concurrency, (
                    f"{part.ref} is ready and job {job} has room, yet the tick left it"
                )

    @invariant()
    def want_timestamps_and_links_are_sound(self) -> None:
        if self.rec is None:
            return
        for record in self.state.wants.values():
            want = record.want
            if want.parent_want_id is None:
                # its own root, or the backfill set it was made in
                assert want.root_want_id in (want.want_id, "b1", "b2")
            else:
                parent = self.state.wants[want.parent_want_id]
                assert want.root_want_id == parent.want.root_want_id
                assert want.data_timestamp == parent.want.data_timestamp
                assert want.source is WantSource.DERIVED

    def teardown(self) -> None:
        """Drain: with honest jobs and a clock that moves only past retry backoffs, every
        want ends terminal or waits on an external partition; once those land, every want
        ends terminal (nothing hangs)."""
        if self.rec is None:
            return
        self.drain()
        if self.m.spec.externals:
            for want in self.state.active_wants():
                held = sla.blame(self.state, want.want.want_id)
                assert held.reason is sla.BlameReason.EXTERNAL, (want.want.partition_ref, held)
            self.r.externals_live(EXTERNAL_REFS, self.now)
            self.take()
            self.drain()
        stuck = [(w.want.partition_ref, w.status.value) for w in self.state.active_wants()]
        assert not stuck, f"wants still active after draining: {stuck}"
        self.replay_equals_incremental()

    def drain(self) -> None:
        for _ in range(200):
            if not self.state.active_wants():
                break
            for run_id in self.in_flight():
                self.r.run_finished(RunFinishedReport(run_id, self.honest(run_id)), self.now)
                self.take()
            self.now += 5.0
            self.do_tick(8)
            self.one_run_per_partition_and_concurrency()
            self.live_partitions_are_never_queued_again()
            self.every_want_is_terminal_or_being_worked_on()
            self.a_tick_with_free_slots_leaves_no_dispatchable_work_behind()


ReconcilerMachine.TestCase.settings = settings(
    # CI runs 300; DATABUILD_STATEFUL_EXAMPLES=3000 for a deeper run before a release
    max_examples=int(os.environ.get("DATABUILD_STATEFUL_EXAMPLES", "300")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestReconcilerMachine = ReconcilerMachine.TestCase
