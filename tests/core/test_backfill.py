"""Backfills: expanding a pattern and a range into want requests, and fair dispatch
between roots (a big backfill does not starve other wants; SLA priority still first)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from core_helpers import Sim, graph, job, ok, request
from hypothesis import given
from hypothesis import strategies as st

from databuild.core import backfill
from databuild.core.errors import InvalidInput
from databuild.core.model import WantSource
from databuild.core.state import canonical

DAY = dt.timedelta(days=1)
dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2090, 12, 31))


@given(dates, st.integers(min_value=0, max_value=800))
def test_a_daily_backfill_has_one_want_per_day_each_with_its_own_date(
    start: dt.date, length: int
) -> None:
    end = start + length * DAY
    spec = backfill.parse_backfill("daily/date={date}", start.isoformat(), end.isoformat())
    made = backfill.requests(spec, WantSource.CLI)
    assert len(made) == length + 1 == backfill.step_count(spec)
    assert len({r.want_id for r in made}) == len(made)  # deduplicated
    for index, req in enumerate(made):
        day = start + index * DAY
        assert req.partition_ref == f"daily/date={day}"
        assert req.data_timestamp == int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        assert req.root_want_id == spec.backfill_id


@given(dates, dates, st.sampled_from(["day", "week", "month"]))
def test_steps_stay_in_the_range_in_order_and_start_at_its_start(
    a: dt.date, b: dt.date, step: str
) -> None:
    start, end = min(a, b), max(a, b)
    if backfill.step_count(backfill.Backfill("x/date={date}", start, end, backfill.Step(step))) > (
        backfill.MAX_BACKFILL_PARTITIONS
    ):
        return
    spec = backfill.parse_backfill("x/date={date}", start.isoformat(), end.isoformat(), step)
    days = backfill.dates(spec)
    assert days[0] == start
    assert all(start <= d <= end for d in days)
    assert days == sorted(set(days))
    if step == "week":
        assert all((y - x).days == 7 for x, y in itertools.pairwise(days))
        assert end - days[-1] < 7 * DAY
    if step == "month":
        assert [(d.year, d.month) for d in days] == sorted({(d.year, d.month) for d in days})


def test_week_and_month_fields_are_merged_to_one_want_each() -> None:
    spec = backfill.parse_backfill("weekly/week={week}", "2024-01-01", "2024-01-31")
    refs = [r for r, _ in backfill.expand(spec)]
    assert refs == [f"weekly/week=2024-W0{n}" for n in range(1, 6)]
    spec = backfill.parse_backfill("monthly/month={month}", "2024-01-31", "2024-04-01", "month")
    assert [r for r, _ in backfill.expand(spec)] == [
        "monthly/month=2024-01",
        "monthly/month=2024-02",
        "monthly/month=2024-03",
    ]
    assert backfill.dates(spec)[1] == dt.date(2024, 2, 29)  # clamped to the month's end


def test_the_same_backfill_has_the_same_id() -> None:
    one = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-12-31")
    two = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-12-31")
    other = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-12-30")
    assert one.backfill_id == two.backfill_id != other.backfill_id


@pytest.mark.parametrize(
    ("pattern", "start", "end", "step", "message"),
    [
        ("daily/date={date}", None, "2024-01-01", "day", "needs a date range"),
        ("daily/date={date}", "2024-01-02", "2024-01-01", "day", "the range is inverted"),
        ("daily/date={date}", "2024-02-30", "2024-03-01", "day", "is not a date"),
        ("daily/date={date}", "yesterday", "2024-03-01", "day", "is not a date"),
        ("daily/date={date}", "1000-01-01", "9999-12-31", "day", "3,287,182 partitions"),
        ("summary/all", "2024-01-01", "2024-01-02", "day", "no field to fill"),
        ("x/date={date}/h={hour}", "2024-01-01", "2024-01-02", "day", "exactly one field"),
        ("x/{day}", "2024-01-01", "2024-01-02", "day", "exactly one field"),
        ("x/date={date", "2024-01-01", "2024-01-02", "day", "not closed"),
        ("daily/date={date}", "2024-01-01", "2024-01-02", "hour", "not one of day, week, month"),
    ],
)
def test_bad_backfills_say_what_is_wrong(
    pattern: str, start: str | None, end: str | None, step: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        backfill.parse_backfill(pattern, start, end, step)


def test_a_backfill_of_the_limit_is_accepted_and_one_more_is_not() -> None:
    start = dt.date(1900, 1, 1)
    last = start + (backfill.MAX_BACKFILL_PARTITIONS - 1) * DAY
    spec = backfill.parse_backfill("d/date={date}", start.isoformat(), last.isoformat())
    assert backfill.step_count(spec) == backfill.MAX_BACKFILL_PARTITIONS
    with pytest.raises(InvalidInput, match="at most 100,000"):
        backfill.parse_backfill("d/date={date}", start.isoformat(), (last + DAY).isoformat())


def _built_order(sim: Sim, count: int) -> list[str]:
    """Finish runs one at a time (one slot) and say which partitions were built, in order."""
    order: list[str] = []
    for _ in range(count):
        (start,) = sim.step_starts()
        order.extend(start.partition_refs)
        sim.start(start.job_run_id)
        sim.finish(start.job_run_id, ok(), slots=1)
    return order


def test_a_want_made_after_a_big_backfill_is_built_next_not_last() -> None:
    sim = Sim(graph(job("clean", "daily/date={date}", "other/{name}")))
    spec = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-03-31")
    for req in backfill.requests(spec, WantSource.CLI):
        sim.rec.request_want(req, sim.now)
    sim.rec.tick(sim.now, 1)
    sim.take()
    order = _built_order(sim, 2)
    assert order == ["daily/date=2024-01-01", "daily/date=2024-01-02"]
    sim.rec.request_want(request("other/a"), sim.now)
    sim.rec.request_want(request("other/b"), sim.now)
    order = _built_order(sim, 6)
    # the run started before they came finishes first; then the backfill and each new root
    # take turns (one partition each at the fair clock): the new wants wait for no more
    # than one partition of the backfill, not for the 88 left
    assert order == [
        "daily/date=2024-01-03",
        "daily/date=2024-01-04",
        "other/a",
        "other/b",
        "daily/date=2024-01-05",
        "daily/date=2024-01-06",
    ]


def test_sla_priority_still_comes_before_fair_turns() -> None:
    sim = Sim(graph(job("clean", "daily/date={date}", "urgent/{name}")))
    spec = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-01-31")
    for req in backfill.requests(spec, WantSource.CLI):
        sim.rec.request_want(req, sim.now)
    sim.rec.tick(sim.now, 1)
    sim.take()
    _built_order(sim, 1)
    for name in "abc":
        sim.rec.request_want(request(f"urgent/{name}", sla=3600), sim.now)
    order = _built_order(sim, 4)
    # after the run already started, every want with an SLA goes before the backfill's
    assert order == ["daily/date=2024-01-02", "urgent/a", "urgent/b", "urgent/c"]


def test_replay_gives_the_same_state_with_backfills() -> None:
    sim = Sim(graph(job("clean", "daily/date={date}", "other/{name}")))
    spec = backfill.parse_backfill("daily/date={date}", "2024-01-01", "2024-01-10")
    for req in backfill.requests(spec, WantSource.CLI):
        sim.rec.request_want(req, sim.now)
    sim.rec.tick(sim.now, 1)
    sim.take()
    _built_order(sim, 3)
    assert sim.replayed() == canonical(sim.state)
