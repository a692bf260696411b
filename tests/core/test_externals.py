"""External partitions in the core: wants wait on them (never unbuildable), they become live
by ``Reconciler.externals_live`` and the waiting wants go on in that same step; blame names
them; the check protocol's pure parts."""

from __future__ import annotations

import pytest
from core_helpers import DAY, T0, Sim, job, missing, ok, ref

from databuild.core import events as ev
from databuild.core import sla
from databuild.core.errors import InvalidInput
from databuild.core.externals import (
    check_delay,
    check_live_refs,
    parse_check_output,
    waiting_refs,
)
from databuild.core.model import ExternalSpec, GraphSpec
from databuild.core.refs import PartitionPattern
from databuild.core.state import canonical


def vendor(**kwargs: float) -> ExternalSpec:
    return ExternalSpec(
        "vendor", (PartitionPattern.compile("vendor/date={date}"),), ("check",), **kwargs
    )


def calendar() -> GraphSpec:
    return GraphSpec(name="test", jobs=(job("daily", "daily/date={date}"),), externals=(vendor(),))


def test_a_want_on_an_external_partition_waits_and_blames_it() -> None:
    sim = Sim(calendar())
    want_id = sim.want("vendor/date=2024-01-01")
    assert sim.status(want_id) == "pending"
    assert not sim.events_of(ev.WantFailed) and not sim.events_of(ev.PartitionFailed)
    assert not sim.starts()
    found = sla.blame(sim.state, want_id)
    assert found.reason is sla.BlameReason.EXTERNAL
    assert found.text == "waiting on external vendor: vendor/date=2024-01-01"
    assert waiting_refs(sim.state, "vendor") == [ref("vendor/date=2024-01-01")]


def test_declared_live_the_waiting_want_is_satisfied_in_the_same_step() -> None:
    sim = Sim(calendar())
    want_id = sim.want("vendor/date=2024-01-01")
    sim.rec.externals_live((ref("vendor/date=2024-01-01"),), sim.now)
    step = sim.take()
    assert [type(p) for p in step] == [ev.PartitionLive, ev.WantSatisfied]
    live = step[0]
    assert isinstance(live, ev.PartitionLive) and live.external == "vendor"
    assert sim.status(want_id) == "satisfied"
    assert waiting_refs(sim.state, "vendor") == []
    # idempotent: declaring it live again records nothing
    sim.rec.externals_live((ref("vendor/date=2024-01-01"),), sim.now)
    assert sim.take() == []
    assert sim.replayed() == canonical(sim.state)


def test_a_job_missing_an_external_input_waits_then_builds_when_it_lands() -> None:
    sim = Sim(calendar(), now=float(T0 + DAY))
    root = sim.want("daily/date=2024-01-01")
    run = sim.run_of("daily/date=2024-01-01")
    sim.start(run)
    sim.finish(run, missing(("daily/date=2024-01-01", ["vendor/date=2024-01-01"])))
    assert sim.status(root) == "waiting"
    assert not sim.events_of(ev.WantFailed)
    found = sla.blame(sim.state, root)
    assert found.reason is sla.BlameReason.EXTERNAL
    assert found.ref == "vendor/date=2024-01-01"
    sim.rec.externals_live((ref("vendor/date=2024-01-01"),), sim.now)
    sim.rec.tick(sim.now, 8)
    step = sim.take()
    # woken in the same step: the daily is queued again at once
    assert any(isinstance(p, ev.JobRunQueued) for p in step)
    rerun = sim.run_of("daily/date=2024-01-01")
    assert rerun != run
    sim.start(rerun)
    sim.finish(rerun, ok())
    assert sim.status(root) == "satisfied"


def test_only_external_refs_can_be_declared_live_and_then_none_is() -> None:
    sim = Sim(calendar())
    sim.want("vendor/date=2024-01-01")
    with pytest.raises(InvalidInput) as caught:
        sim.rec.externals_live(
            (ref("vendor/date=2024-01-01"), ref("daily/date=2024-01-01")), sim.now
        )
    assert "'daily/date=2024-01-01' is not an external partition" in str(caught.value)
    assert "job 'daily' builds it" in str(caught.value)
    assert sim.take() == []
    assert not sim.state.is_live(ref("vendor/date=2024-01-01"))
    with pytest.raises(InvalidInput, match="no job builds partition 'nosuch/x'"):
        check_live_refs(sim.graph, [ref("nosuch/x")])
    with pytest.raises(InvalidInput, match="at least one"):
        check_live_refs(sim.graph, [])


def test_a_want_on_an_external_partition_expires_by_its_ttl() -> None:
    sim = Sim(calendar(), now=float(T0))
    want_id = sim.want("vendor/date=2024-01-01", ttl=DAY)
    sim.tick(float(T0 + DAY + 1))
    assert sim.status(want_id) == "expired"
    assert waiting_refs(sim.state, "vendor") == []


def test_the_waiting_index_survives_a_restart() -> None:
    sim = Sim(calendar())
    sim.want("vendor/date=2024-01-02")
    sim.restart()
    assert waiting_refs(sim.state, "vendor") == [ref("vendor/date=2024-01-02")]


def test_an_external_pattern_overlapping_a_job_makes_the_ref_ambiguous() -> None:
    spec = GraphSpec(
        name="t",
        jobs=(job("daily", "vendor/date={date}"),),
        externals=(vendor(),),
    )
    route = spec.route(ref("vendor/date=2024-01-01"))
    assert "external 'vendor'" in route.problem and "job 'daily'" in route.problem


def test_check_back_off_doubles_and_is_capped() -> None:
    spec = vendor(check_interval_seconds=10.0, check_interval_max_seconds=45.0)
    assert [check_delay(spec, n) for n in range(5)] == [10.0, 20.0, 40.0, 45.0, 45.0]
    assert check_delay(spec, 10_000) == 45.0


def test_check_output_is_the_asked_refs_that_exist() -> None:
    asked = [ref("vendor/date=2024-01-01"), ref("vendor/date=2024-01-02")]
    answer = parse_check_output(
        asked, "  vendor/date=2024-01-02 \n\nvendor/date=2024-01-02\nsomething else\n"
    )
    assert answer.found == (ref("vendor/date=2024-01-02"),)
    assert answer.unknown == ("something else",)


def test_a_diamond_waiting_on_one_external_is_blamed_on_it_not_a_cycle() -> None:
    # tests/core (stateful): two inputs that both wait on one external ref were blamed as
    # "waiting on its own inputs (cycle)": the second path met an already visited ref
    spec = GraphSpec(
        name="test",
        jobs=(job("mid", "mid/{x}"), job("top", "top/{x}")),
        externals=(vendor(),),
    )
    sim = Sim(spec)
    root = sim.want("top/t")
    sim.start(sim.run_of("top/t"))
    sim.finish(sim.run_of("top/t"), missing(("top/t", ["mid/a", "mid/b"])))
    for name in ("mid/a", "mid/b"):
        sim.start(sim.run_of(name))
        sim.finish(sim.run_of(name), missing((name, ["vendor/date=2024-01-01"])))
    found = sla.blame(sim.state, root)
    assert found.reason is sla.BlameReason.EXTERNAL, found
    assert found.text == "waiting on external vendor: vendor/date=2024-01-01"
