"""SLA and TTL anchored to data_timestamp, the SLA timer, blame and at-risk prediction.

Through the pure ``Reconciler`` and ``core.sla`` with time passed as ``now``.
"""

from __future__ import annotations

from databuild.core import events as ev
from databuild.core import sla
from databuild.core.model import WantStatus
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunSucceeded
from databuild.core.refs import parse_ref

from .helpers import DAY, HOUR, T0, Sim, graph, job, upstream

DAILY = graph(job("daily", "daily/date={date}"), job("raw", "raw/date={date}", concurrency=2))


def _needs(out: str, *deps: str) -> RunMissingDeps:
    return RunMissingDeps((ev.MissingDeps(parse_ref(out), tuple(parse_ref(d) for d in deps)),), 1.0)


# ---- anchoring -------------------------------------------------------------------------
def test_sla_and_ttl_are_measured_from_the_data_timestamp_not_creation() -> None:
    # "January 1st data ready by 9am January 2nd", asked for on January 5th
    sim = Sim(DAILY, now=T0 + 4 * DAY)
    want_id = sim.want("daily/date=2024-01-01", ts=T0, sla=33 * HOUR, ttl=30 * DAY)
    want = sim.rec.state.wants[want_id].want
    assert want.sla_deadline == T0 + 33 * HOUR
    assert want.expires_at == T0 + 30 * DAY
    # already past its deadline when created: the timer fires in the step that creates it
    assert [m.want_id for m in sim.events_of(ev.SlaMissed)] == [want_id]
    assert sim.rec.next_wakeup() == T0 + 30 * DAY  # only the TTL timer is left


def test_a_want_asked_for_after_its_ttl_expires_at_once() -> None:
    sim = Sim(DAILY, now=T0 + 31 * DAY)
    want_id = sim.want("daily/date=2024-01-01", ts=T0, ttl=30 * DAY)
    assert sim.rec.state.wants[want_id].status is WantStatus.EXPIRED
    assert sim.started == []


def test_ttl_expiry_fires_at_its_time() -> None:
    sim = Sim(graph(job("daily", "daily/date={date}")), slots=0)
    want_id = sim.want("daily/date=2024-01-01", ttl=2 * DAY)
    assert sim.tick(T0 + 2 * DAY - 1) == []
    assert ev.WantExpired(want_id) in sim.tick(T0 + 2 * DAY)


# ---- the SLA timer ---------------------------------------------------------------------
def test_sla_missed_fires_once_at_the_deadline_and_not_again_after_a_restart() -> None:
    sim = Sim(DAILY)
    want_id = sim.want("daily/date=2024-01-01", sla=HOUR)
    assert sim.rec.next_wakeup() == T0 + HOUR  # a timer, not a scan
    assert not [p for p in sim.tick(T0 + HOUR - 1) if isinstance(p, ev.SlaMissed)]
    fired = [p for p in sim.tick(T0 + HOUR) if isinstance(p, ev.SlaMissed)]
    assert fired == [
        ev.SlaMissed(want_id, float(T0 + HOUR), parse_ref("daily/date=2024-01-01"), fired[0].blame)
    ]
    assert "running in job run" in fired[0].blame
    sim.tick(T0 + 2 * HOUR)
    sim.restart()
    sim.tick(T0 + 3 * HOUR)
    sim.restart()
    assert len(sim.events_of(ev.SlaMissed)) == 1
    record = sim.rec.state.wants[want_id]
    assert record.sla_missed and record.sla_blame_ref == "daily/date=2024-01-01"
    assert sim.rec.state.sla_violations == [want_id]


def test_a_want_satisfied_in_time_never_misses() -> None:
    sim = Sim(DAILY)
    sim.want("daily/date=2024-01-01", sla=HOUR)
    sim.now = T0 + 10
    sim.finish(sim.run_of("daily/date=2024-01-01"), RunSucceeded(10.0))
    sim.tick(T0 + 5 * HOUR)
    assert sim.events_of(ev.SlaMissed) == []


def test_a_restart_before_the_deadline_still_fires_once() -> None:
    sim = Sim(DAILY)
    want_id = sim.want("daily/date=2024-01-01", sla=HOUR)
    sim.now = T0 + 60
    sim.restart()
    sim.tick(T0 + HOUR)
    sim.restart()
    sim.tick(T0 + 2 * HOUR)
    assert [m.want_id for m in sim.events_of(ev.SlaMissed)] == [want_id]


# ---- blame -----------------------------------------------------------------------------
def test_blame_follows_the_chain_to_the_partition_that_holds_it_up() -> None:
    sim = Sim(DAILY)
    want_id = sim.want("daily/date=2024-01-01", sla=HOUR)
    sim.finish(
        sim.run_of("daily/date=2024-01-01"), _needs("daily/date=2024-01-01", "raw/date=2024-01-01")
    )
    found = sla.blame(sim.rec.state, want_id)
    assert (found.ref, found.reason) == ("raw/date=2024-01-01", sla.BlameReason.RUNNING)
    # the raw job fails: it is blamed for the failure, with the retry time
    sim.finish(
        sim.run_of("raw/date=2024-01-01"),
        RunFailed(ev.FailureKind.EXIT_NONZERO, "disk full", 1, 2.0),
    )
    found = sla.blame(sim.rec.state, want_id)
    assert found.reason is sla.BlameReason.RETRYING
    assert "job failed (disk full)" in found.text
    missed = [p for p in sim.tick(T0 + HOUR) if isinstance(p, ev.SlaMissed)]
    assert [(m.blame_ref, m.blame) for m in missed if m.want_id == want_id] == [
        ("raw/date=2024-01-01", found.text)
    ]


def test_blame_names_the_upstream_graph_a_partition_waits_on() -> None:
    spec = graph(
        job("daily", "daily/date={date}"), upstreams=(upstream("ingest", "raw/date={date}"),)
    )
    sim = Sim(spec)
    want_id = sim.want("daily/date=2024-01-01")
    sim.finish(
        sim.run_of("daily/date=2024-01-01"), _needs("daily/date=2024-01-01", "raw/date=2024-01-01")
    )
    found = sla.blame(sim.rec.state, want_id)
    assert found.ref == "raw/date=2024-01-01"
    assert found.reason is sla.BlameReason.UPSTREAM_GRAPH
    assert found.text == "waiting on upstream graph 'ingest'"


def test_blame_of_a_queued_partition_and_the_worst_of_several_inputs() -> None:
    sim = Sim(
        graph(job("daily", "daily/date={date}"), job("raw", "raw/date={date}", concurrency=1))
    )
    want_id = sim.want("daily/date=2024-01-01")
    sim.finish(
        sim.run_of("daily/date=2024-01-01"),
        _needs("daily/date=2024-01-01", "raw/date=2024-01-01", "raw/date=2024-01-02"),
    )
    # raw has concurrency 1: one input runs, the other is queued behind it
    found = sla.blame(sim.rec.state, want_id)
    assert found.reason is sla.BlameReason.QUEUED
    assert found.ref == "raw/date=2024-01-02"
    assert "queued behind 1 running run(s) of job 'raw'" in found.text


def test_blame_of_a_failed_want_and_of_an_expired_one() -> None:
    sim = Sim(graph(job("daily", "daily/date={date}", retries=0)))
    failed = sim.want("daily/date=2024-01-01", sla=HOUR)
    sim.finish(
        sim.run_of("daily/date=2024-01-01"),
        RunFailed(ev.FailureKind.PERMANENT, "bad input", 1, 1.0),
    )
    assert sim.rec.state.wants[failed].status is WantStatus.FAILED
    assert sla.blame(sim.rec.state, failed).reason is sla.BlameReason.JOB_FAILED
    (missed,) = [p for p in sim.tick(T0 + HOUR) if isinstance(p, ev.SlaMissed)]
    assert missed.blame.startswith("failed: job daily failed")
    expired = sim.want("daily/date=2023-12-31", ts=T0 - DAY, ttl=1)
    assert sla.blame(sim.rec.state, expired).reason is sla.BlameReason.EXPIRED


# ---- prediction and at-risk ------------------------------------------------------------
def _chain_graph(expected_raw: float = 0.0) -> Sim:
    spec = graph(
        job("daily", "daily/date={date}", expected=600.0),
        job("raw", "raw/date={date}", concurrency=4, expected=expected_raw),
    )
    return Sim(spec)


def test_expected_duration_is_the_median_of_recorded_runs_then_the_hint_then_the_default() -> None:
    sim = _chain_graph()
    state = sim.rec.state
    assert sla.expected_job_seconds(state, "daily") == 600.0  # the hint
    assert sla.expected_job_seconds(state, "raw") == sla.DEFAULT_JOB_SECONDS
    for day, seconds in ((1, 100.0), (2, 300.0), (3, 200.0)):
        sim.want(f"raw/date=2024-01-0{day}")
        sim.finish(sim.run_of(f"raw/date=2024-01-0{day}"), RunSucceeded(seconds))
    assert sla.expected_job_seconds(state, "raw") == 200.0  # the median


def test_predicted_finish_sums_the_jobs_still_ahead_in_the_chain() -> None:
    sim = _chain_graph(expected_raw=120.0)
    want_id = sim.want("daily/date=2024-01-01", sla=HOUR)
    run = sim.run_of("daily/date=2024-01-01")
    sim.start(run)
    # running for 100s of its expected 600s
    prediction = sla.predict(sim.rec.state, want_id, T0 + 100)
    assert prediction.predicted_finish == T0 + 100 + 500
    sim.now = T0 + 100
    sim.finish(run, _needs("daily/date=2024-01-01", "raw/date=2024-01-01", "raw/date=2024-01-02"))
    sim.finish(sim.run_of("raw/date=2024-01-01"), RunSucceeded(120.0))
    prediction = sla.predict(sim.rec.state, want_id, T0 + 100)
    # daily again (600) + the raw partition not yet live (its run just started: 120 left)
    assert [a.ref for a in prediction.ahead] == ["daily/date=2024-01-01", "raw/date=2024-01-02"]
    assert prediction.predicted_finish == T0 + 100 + 600 + 120
    assert prediction.slack_seconds == HOUR - 100 - 720


def test_at_risk_lists_exactly_the_wants_predicted_to_miss_their_deadline() -> None:
    # no free slot: every want waits with its whole 30 minute job ahead of it
    sim = Sim(graph(job("daily", "daily/date={date}", expected=1800.0)), slots=0)
    tight = sim.want("daily/date=2024-01-01", sla=HOUR)  # deadline in 60 min: in time
    doomed = sim.want("daily/date=2024-01-03", ts=T0 - HOUR + 20 * 60, sla=HOUR)  # in 20 min
    roomy = sim.want("daily/date=2024-01-04", sla=DAY)
    sim.want("daily/date=2024-01-05")  # no SLA: never at risk
    risky = sla.at_risk(sim.rec.state, float(T0))
    assert [p.want_id for p in risky] == [doomed]
    assert risky[0].predicted_finish == T0 + 1800.0
    assert risky[0].slack_seconds == -600.0
    # 40 minutes pass without progress: the tight one is at risk too, earliest deadline first
    risky = sla.at_risk(sim.rec.state, T0 + 40 * 60)
    assert [p.want_id for p in risky] == [doomed, tight]
    assert roomy not in [p.want_id for p in risky]
    # once the deadline passes it is a violation, no longer "at risk"
    sim.tick(T0 + 20 * 60)
    assert [p.want_id for p in sla.at_risk(sim.rec.state, T0 + 40 * 60)] == [tight]
