"""Job versions in the core: a run records its job's version, the partitions it builds
record it, and a live partition built by another version than the job's current one is
stale (reported, never rebuilt by itself)."""

from __future__ import annotations

import dataclasses

from core_helpers import Sim, job, ok, ref

from databuild.core import events as ev
from databuild.core.model import GraphSpec
from databuild.core.state import canonical
from databuild.core.versions import is_stale, stale_partitions


def spec(version: str) -> GraphSpec:
    return GraphSpec(
        name="test",
        jobs=(
            dataclasses.replace(job("daily", "daily/date={date}"), version=version),
            job("other", "other/{x}"),
        ),
    )


def build(sim: Sim, text: str) -> None:
    sim.want(text)
    run = sim.run_of(text)
    sim.start(run)
    sim.finish(run, ok())


def test_each_partition_records_the_job_version_that_built_it() -> None:
    sim = Sim(spec("v1"))
    build(sim, "daily/date=2024-01-01")
    (queued,) = sim.events_of(ev.JobRunQueued)
    assert queued.job_version == "v1"
    (live,) = sim.events_of(ev.PartitionLive)
    assert live.job_version == "v1"
    part = sim.state.partitions[ref("daily/date=2024-01-01")]
    assert part.job_version == "v1"
    assert not is_stale(sim.state, part)
    assert sim.replayed() == canonical(sim.state)
    rebuilt = Sim(spec("v1"))
    rebuilt.rec.load(sim.log)
    assert rebuilt.state.partitions[part.ref].job_version == "v1"


def test_a_new_version_makes_what_the_old_one_built_stale_and_rebuilds_nothing() -> None:
    sim = Sim(spec("v1"))
    build(sim, "daily/date=2024-01-01")
    build(sim, "other/a")
    runs_before = len(sim.starts())
    sim.rec.reload(spec("v2"), "digest-2", sim.now)
    sim.tick()
    assert len(sim.starts()) == runs_before  # nothing is rebuilt silently
    part = sim.state.partitions[ref("daily/date=2024-01-01")]
    assert is_stale(sim.state, part)
    assert [p.ref for p in stale_partitions(sim.state)] == [ref("daily/date=2024-01-01")]
    # built under v2, it is current again
    sim.rec.reload(spec("v2"), "digest-2", sim.now)
    build(sim, "daily/date=2024-01-02")
    assert not is_stale(sim.state, sim.state.partitions[ref("daily/date=2024-01-02")])


def test_declaring_a_version_makes_earlier_builds_stale_and_none_means_never() -> None:
    sim = Sim(spec(""))
    build(sim, "daily/date=2024-01-01")
    assert list(stale_partitions(sim.state)) == []
    sim.rec.reload(spec("v1"), "digest-1", sim.now)
    assert [p.ref for p in stale_partitions(sim.state)] == [ref("daily/date=2024-01-01")]
