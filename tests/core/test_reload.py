"""A config reload in the pure core (issue 16, row 8): ``Reconciler.reload``.

New jobs build new wants; wants that failed only because no job built their partition are
reopened (their root want); runs in flight finish under their old spec; partitions whose
job was removed fail as unbuildable instead of waiting for ever; a ``config_reloaded`` event
records the change and replaying the log gives the same state.
"""

from __future__ import annotations

from core_helpers import Sim, fail, graph, job, missing, ok, ref

from databuild.core import events as ev
from databuild.core.model import WantStatus
from databuild.core.state import canonical

INGEST = job("ingest", "raw/date={date}")
CLEAN = job("clean", "daily/date={date}")


def test_a_new_job_builds_a_want_that_failed_as_unbuildable() -> None:
    sim = Sim(graph(INGEST))
    want_id = sim.want("daily/date=2024-01-01")
    assert sim.status(want_id) == "failed"
    summary = sim.rec.reload(graph(INGEST, CLEAN), "digest-2", sim.now)
    sim.tick()
    assert summary.jobs_added == ("clean",)
    assert summary.jobs_changed == () and summary.jobs_removed == ()
    assert summary.wants_retried == (want_id,)
    (reloaded,) = sim.events_of(ev.ConfigReloaded)
    assert reloaded == ev.ConfigReloaded("digest-2", ("clean",), (), ())
    assert sim.status(want_id) == "building"
    assert sim.starts()[-1].job_name == "clean"
    sim.finish(sim.run_of("daily/date=2024-01-01"), ok())
    assert sim.status(want_id) == "satisfied"


def test_the_root_want_is_reopened_when_an_input_had_no_job() -> None:
    sim = Sim(graph(CLEAN))
    root = sim.want("daily/date=2024-01-01")
    sim.finish(
        sim.run_of("daily/date=2024-01-01"),
        missing(("daily/date=2024-01-01", ["raw/date=2024-01-01"])),
    )
    assert sim.status(root) == "upstream_failed"
    summary = sim.rec.reload(graph(INGEST, CLEAN), "d2", sim.now)
    sim.tick()
    assert summary.wants_retried == (root,)
    # the root is dispatched again, finds its input missing again, and now it is buildable
    sim.finish(
        sim.run_of("daily/date=2024-01-01"),
        missing(("daily/date=2024-01-01", ["raw/date=2024-01-01"])),
    )
    sim.finish(sim.run_of("raw/date=2024-01-01"), ok())
    sim.finish(sim.run_of("daily/date=2024-01-01"), ok())
    assert sim.status(root) == "satisfied"
    sim.graph = graph(INGEST, CLEAN)  # a restart reads the new file
    assert sim.replayed() == canonical(sim.state)


def test_wants_that_failed_for_other_reasons_are_not_retried() -> None:
    sim = Sim(graph(job("ingest", "raw/date={date}", retries=0)))
    want_id = sim.want("raw/date=2024-01-01")
    sim.finish(sim.run_of("raw/date=2024-01-01"), fail())
    assert sim.status(want_id) == "failed"
    summary = sim.rec.reload(
        graph(job("ingest", "raw/date={date}", retries=3), CLEAN), "d", sim.now
    )
    sim.tick()
    assert summary.jobs_changed == ("ingest",)
    assert summary.wants_retried == ()
    assert sim.status(want_id) == "failed"


def test_a_run_in_flight_finishes_under_its_old_spec_when_its_job_is_removed() -> None:
    sim = Sim(graph(job("ingest", "raw/date={date}", retries=1), CLEAN))
    want_id = sim.want("raw/date=2024-01-01")
    run_id = sim.run_of("raw/date=2024-01-01")
    sim.start(run_id)
    summary = sim.rec.reload(graph(CLEAN), "d", sim.now)
    sim.tick()
    assert summary.jobs_removed == ("ingest",)
    assert sim.status(want_id) == "building"  # not failed under the running job's feet
    sim.finish(run_id, fail())  # the old spec allows one retry: backoff
    assert sim.status(want_id) == "retrying"
    events = sim.tick(sim.now + 10)  # the retry is due: no job builds raw/ any more
    assert sim.status(want_id) == "failed"
    failed = [e for e in events if isinstance(e, ev.WantFailed)]
    assert failed and failed[0].reason is ev.WantFailureReason.UNBUILDABLE
    assert "no job builds partition 'raw/date=2024-01-01'" in failed[0].message


def test_a_queued_partition_of_a_removed_job_fails_as_unbuildable() -> None:
    sim = Sim(graph(INGEST, CLEAN))
    first = sim.want("raw/date=2024-01-01", slots=0)  # no free slot: it stays queued
    assert sim.status(first) == "pending"
    sim.rec.reload(graph(CLEAN), "d", sim.now)
    sim.tick()
    assert sim.status(first) == "failed"
    assert sim.state.wants[first].message.startswith("no job builds partition")


def test_a_queued_partition_moves_to_the_job_that_now_owns_it() -> None:
    sim = Sim(graph(INGEST))
    want_id = sim.want("raw/date=2024-01-01", slots=0)
    sim.rec.reload(graph(job("ingest_v2", "raw/date={date}")), "d", sim.now)
    sim.tick()
    assert sim.status(want_id) == "building"
    assert sim.starts()[-1].job_name == "ingest_v2"


def test_replaying_a_log_with_a_reload_gives_the_same_state() -> None:
    sim = Sim(graph(INGEST))
    want_id = sim.want("daily/date=2024-01-01")
    new = graph(INGEST, CLEAN)
    sim.rec.reload(new, "d", sim.now)
    sim.tick()
    sim.finish(sim.run_of("daily/date=2024-01-01"), ok())
    assert sim.status(want_id) == "satisfied"
    sim.graph = new  # a restart reads the new file
    assert sim.replayed() == canonical(sim.state)
    assert ref("daily/date=2024-01-01") in sim.state.partitions


def test_a_reload_with_nothing_new_changes_no_want() -> None:
    sim = Sim(graph(INGEST))
    want_id = sim.want("raw/date=2024-01-01")
    summary = sim.rec.reload(graph(INGEST), "same", sim.now)
    assert (summary.jobs_added, summary.jobs_changed, summary.jobs_removed) == ((), (), ())
    assert summary.wants_retried == ()
    assert sim.state.wants[want_id].status is WantStatus.BUILDING
