"""A run the executor reports ``lost`` (a Ray worker or node gone under it): retried at once,
never counted against the job's retries, and a late result of the lost attempt (at-least-once
dispatch: the old worker may still finish) changes nothing."""

from __future__ import annotations

from core_helpers import Sim, fail, graph, job, ok, ref

from databuild.core import events as ev


def test_lost_runs_retry_at_once_uncounted_and_their_late_results_are_ignored() -> None:
    sim = Sim(graph(job("daily", "daily/date={date}", retries=0, backoff=60.0)))
    want = sim.want("daily/date=1")
    attempts = []
    for _ in range(3):  # lost again and again: still retried, though retries = 0
        run_id = sim.run_of("daily/date=1")
        attempts.append(run_id)
        sim.start(run_id)
        sim.finish(run_id, fail(ev.FailureKind.LOST, "the Ray worker was lost"))
        (failed,) = [f for f in sim.step_events if isinstance(f, ev.JobRunFailed)]
        assert failed.retry_at == sim.now, "a lost run waits for no backoff"
        sim.tick()
    assert len(set(attempts)) == 3, "each attempt is a run of its own"
    assert sim.state.partitions[ref("daily/date=1")].failures == 0
    current = sim.run_of("daily/date=1")
    assert current not in attempts
    sim.start(current)
    # the first, superseded attempt reports success late: it does not count
    sim.finish(attempts[0], ok())
    assert sim.events_of(ev.PartitionLive) == []
    assert sim.status(want) != "satisfied"
    sim.finish(current, ok())
    assert len(sim.events_of(ev.PartitionLive)) == 1
    assert sim.status(want) == "satisfied"
