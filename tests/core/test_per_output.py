"""A batch run whose outputs end differently (``RunPartial``, issue 16 row 2): each want
gets its own outcome and message, retryable per-output failures retry that output only,
and the log replays to the same state, including logs written before ``retry_at``."""

from __future__ import annotations

import pytest
from core_helpers import Sim, graph, job, missing, ok, ref, request
from hypothesis import given, settings
from hypothesis import strategies as st

from databuild.core import events as ev
from databuild.core.model import WantId, WantRequest, WantStatus
from databuild.core.outcomes import OutputFailed, RunMissingDeps, RunPartial
from databuild.core.state import BuildState, canonical

REGIONS = ("east", "west", "north", "south", "up", "down")


def trips(*, retries: int = 2, max_batch: int = 8) -> Sim:
    return Sim(
        graph(
            job("trips", "trips/region={region}", max_batch=max_batch, retries=retries),
            job("raw", "raw/region={region}", max_batch=8),
        )
    )


def partial(
    *failed: tuple[str, ev.FailureKind, str],
    lacking: tuple[tuple[str, list[str]], ...] = (),
    exit_code: int = 0,
) -> RunPartial:
    return RunPartial(
        tuple(OutputFailed(ref(r), kind, message) for r, kind, message in failed),
        missing(*lacking).missing,
        exit_code,
        1.0,
    )


def test_three_regions_two_built_one_failed_each_want_its_own_outcome() -> None:
    sim = trips()
    wants = {r: sim.rec.request_want(_req(r), sim.now) for r in ("east", "west", "north")}
    sim.tick()
    (run,) = sim.starts()
    assert len(run.partition_refs) == 3
    sim.finish(
        run.job_run_id,
        partial(("trips/region=north", ev.FailureKind.PERMANENT, "no file raw/north.csv")),
    )
    assert sim.status(wants["east"]) == "satisfied"
    assert sim.status(wants["west"]) == "satisfied"
    assert sim.status(wants["north"]) == "failed"
    north = sim.state.wants[wants["north"]].message
    assert north == "job trips failed after 1 attempt(s): no file raw/north.csv"
    assert sim.state.wants[wants["east"]].message == ""
    (run_failed,) = sim.events_of(ev.JobRunFailed)
    assert run_failed.message == "1 of 3 outputs failed: trips/region=north: no file raw/north.csv"
    assert run_failed.kind is ev.FailureKind.PERMANENT and run_failed.retry_at == 0.0
    assert sim.state.runs[run.job_run_id].status.value == "failed"
    assert sim.replayed() == canonical(sim.state)


def test_a_retryable_output_failure_retries_that_output_alone_then_fails_it() -> None:
    sim = trips(retries=1)
    east, north = (sim.rec.request_want(_req(r), sim.now) for r in ("east", "north"))
    sim.tick()
    (run,) = sim.starts()
    t = sim.now
    sim.finish(run.job_run_id, partial(("trips/region=north", ev.FailureKind.EXIT_NONZERO, "busy")))
    assert sim.status(east) == "satisfied"
    assert sim.status(north) == "retrying"
    (backoff,) = sim.events_of(ev.PartitionFailed)
    assert backoff.retry_at == pytest.approx(t + 1.0)
    assert sim.state.partitions[ref("trips/region=north")].failures == 1
    (run_failed,) = sim.events_of(ev.JobRunFailed)
    assert run_failed.message == "1 of 2 outputs failed: trips/region=north: busy (will retry)"
    sim.tick(t + 1.0)
    (retry,) = sim.step_starts()
    assert retry.partition_refs == (ref("trips/region=north"),)  # east is not built again
    sim.finish(
        retry.job_run_id, partial(("trips/region=north", ev.FailureKind.EXIT_NONZERO, "busy"))
    )
    assert sim.status(north) == "failed"
    assert "failed after 2 attempt(s): busy" in sim.state.wants[north].message
    assert sim.replayed() == canonical(sim.state)


def test_built_missing_and_failed_in_one_run() -> None:
    sim = trips()
    east, west, north = (sim.rec.request_want(_req(r), sim.now) for r in ("east", "west", "north"))
    sim.tick()
    (run,) = sim.starts()
    sim.finish(
        run.job_run_id,
        partial(
            ("trips/region=north", ev.FailureKind.PERMANENT, "bad header"),
            lacking=(("trips/region=west", ["raw/region=west"]),),
        ),
    )
    assert sim.status(east) == "satisfied"
    assert sim.status(west) == "waiting"
    assert sim.status(north) == "failed"
    assert sim.state.runs[run.job_run_id].status.value == "missing_deps"
    raw_run = sim.run_of("raw/region=west")
    sim.finish(raw_run, ok())
    (again,) = (s for s in sim.step_starts() if s.job_name == "trips")
    assert again.partition_refs == (ref("trips/region=west"),)
    sim.finish(again.job_run_id, ok())
    assert sim.status(west) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_what_a_batch_built_beside_missing_inputs_goes_live_and_only_the_rest_runs_again() -> None:
    """The calendar's flake (CI at b48ef66): a batch of a first try and second tries
    reported only the first's input missing; the second tries, built, ran a third time."""
    sim = trips()
    east, west, north = (sim.rec.request_want(_req(r), sim.now) for r in ("east", "west", "north"))
    sim.tick()
    (run,) = sim.starts()
    lacking = missing(("trips/region=west", ["raw/region=west"]))
    built = (ref("trips/region=east"), ref("trips/region=north"))
    sim.finish(run.job_run_id, RunMissingDeps(lacking.missing, 1.0, built))
    assert (sim.status(east), sim.status(west), sim.status(north)) == (
        "satisfied",
        "waiting",
        "satisfied",
    )
    lives = sim.events_of(ev.PartitionLive)
    assert [(e.partition_ref, e.job_run_id) for e in lives] == [(r, run.job_run_id) for r in built]
    assert sim.state.runs[run.job_run_id].status.value == "missing_deps"
    sim.finish(sim.run_of("raw/region=west"), ok())
    (again,) = (s for s in sim.step_starts() if s.job_name == "trips")
    assert again.partition_refs == (ref("trips/region=west"),)
    sim.finish(again.job_run_id, ok())
    assert sim.status(west) == "satisfied"
    assert sim.replayed() == canonical(sim.state)


def test_built_outside_the_run_or_also_missing_is_a_bad_result() -> None:
    for built, expected in (
        ("trips/region=south", "as built, which it was not asked to build"),
        ("trips/region=west", "both as built and as missing inputs"),
    ):
        sim = trips()
        sim.rec.request_want(_req("east"), sim.now)
        sim.rec.request_want(_req("west"), sim.now)
        sim.tick()
        (run,) = sim.starts()
        lacking = missing(("trips/region=west", ["raw/region=west"]))
        sim.finish(run.job_run_id, RunMissingDeps(lacking.missing, 1.0, (ref(built),)))
        (failed,) = sim.events_of(ev.JobRunFailed)
        assert failed.kind is ev.FailureKind.BAD_RESULT and expected in failed.message
        assert not sim.events_of(ev.PartitionLive)


def test_a_per_output_failure_of_an_output_not_asked_for_is_a_bad_result() -> None:
    sim = trips()
    want = sim.want("trips/region=east")
    sim.finish(
        sim.run_of("trips/region=east"),
        partial(("trips/region=mars", ev.FailureKind.PERMANENT, "x")),
    )
    (failed,) = sim.events_of(ev.JobRunFailed)
    assert failed.kind is ev.FailureKind.BAD_RESULT
    assert "'trips/region=mars', which it was not asked to build" in failed.message
    assert sim.status(want) == "failed"


def test_a_log_from_before_retry_at_replays() -> None:
    """PartitionFailed without retry_at (old logs) still means failed for good."""
    old = ev.PartitionFailed(ref("trips/region=east"), None, "gone")
    assert old.retry_at == 0.0
    state = BuildState(trips().graph)
    state.apply(ev.Event(1, 1.0, old))
    assert state.partitions[ref("trips/region=east")].status.value == "failed"


# ---- the merge, as a property ----------------------------------------------------------

FATES = st.sampled_from(["built", "missing", "failed", "retryable"])


@settings(max_examples=150, deadline=None)
@given(fates=st.lists(FATES, min_size=1, max_size=len(REGIONS)))
def test_any_mix_of_outputs_gives_each_want_exactly_one_outcome(fates: list[str]) -> None:
    if "failed" not in fates and "retryable" not in fates:
        fates = [*fates[:-1], "failed"]
    sim = trips(retries=2)
    regions = REGIONS[: len(fates)]
    wants: dict[str, WantId] = {r: sim.rec.request_want(_req(r), sim.now) for r in regions}
    sim.tick()
    (run,) = sim.starts()
    assert len(run.partition_refs) == len(fates)
    failed = [
        (f"trips/region={r}", _kind(fate), f"{r} broke")
        for r, fate in zip(regions, fates, strict=True)
        if fate in ("failed", "retryable")
    ]
    lacking = tuple(
        (f"trips/region={r}", [f"raw/region={r}"])
        for r, fate in zip(regions, fates, strict=True)
        if fate == "missing"
    )
    sim.finish(run.job_run_id, partial(*failed, lacking=lacking))

    expected = {
        "built": WantStatus.SATISFIED,
        "missing": WantStatus.WAITING,
        "failed": WantStatus.FAILED,
        "retryable": WantStatus.RETRYING,
    }
    finals = {"satisfied", "failed"}
    for region, fate in zip(regions, fates, strict=True):
        record = sim.state.wants[wants[region]]
        assert record.status is expected[fate], (region, fate)
        outcomes = [
            p
            for p in sim.payloads
            if isinstance(p, ev.WantSatisfied | ev.WantFailed) and p.want_id == wants[region]
        ]
        assert len(outcomes) == (1 if record.status.value in finals else 0)
        if fate in ("failed", "retryable"):
            assert record.message == "" or record.message.endswith(f"{region} broke")
            part = sim.state.partitions[ref(f"trips/region={region}")]
            assert part.message.endswith(f"{region} broke")  # its own message, no other's
    assert sim.state.runs[run.job_run_id].status.terminal
    assert sim.replayed() == canonical(sim.state)


def _kind(fate: str) -> ev.FailureKind:
    return ev.FailureKind.PERMANENT if fate == "failed" else ev.FailureKind.EXIT_NONZERO


def _req(region: str) -> WantRequest:
    return request(f"trips/region={region}")
