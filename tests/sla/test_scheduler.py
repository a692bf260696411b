"""Schedules: cron with a time zone -> wants for the data date, with SLA/TTL from it;
catch-up after downtime bounded by TTL (or the documented window); no duplicates on restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from databuild.config.schedule import DataDate, ScheduleSpec
from databuild.core import events as ev
from databuild.core.model import WantSource
from databuild.core.refs import PartitionPattern
from databuild.runtime.scheduler import DEFAULT_CATCH_UP_SECONDS, Scheduler, catch_up, firing_at

from .helpers import DAY, HOUR, T0, Rig, graph, job

SPEC = graph(job("report", "report/date={date}"))


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def schedule(
    cron: str = "0 6 * * *",
    timezone: str = "UTC",
    *,
    sla: int = 0,
    ttl: int = 0,
    data_date: DataDate = DataDate.YESTERDAY,
) -> ScheduleSpec:
    return ScheduleSpec(
        name="morning",
        cron=cron,
        timezone=timezone,
        partition=PartitionPattern.compile("report/date={date}"),
        data_date=data_date,
        sla_seconds=sla,
        ttl_seconds=ttl,
    )


def test_a_firing_wants_yesterdays_partition_with_sla_and_ttl_from_its_midnight() -> None:
    firing = firing_at(schedule(sla=33 * HOUR, ttl=30 * DAY), _at("2024-01-02T06:00:00+00:00"))
    req = firing.request
    assert req.partition_ref == "report/date=2024-01-01"
    assert req.data_timestamp == T0  # 2024-01-01 00:00 UTC
    assert (req.sla_seconds, req.ttl_seconds, req.source) == (
        33 * HOUR,
        30 * DAY,
        WantSource.SCHEDULED,
    )


def test_the_data_date_is_read_in_the_schedules_time_zone() -> None:
    # 00:30 in Tokyo on Jan 2nd is still Jan 1st in UTC
    tokyo = schedule("30 0 * * *", "Asia/Tokyo", data_date=DataDate.TODAY)
    fire = tokyo.next_fire_after(datetime(2024, 1, 1, 12, 0, tzinfo=UTC))
    assert fire == datetime(2024, 1, 1, 15, 30, tzinfo=UTC)
    assert firing_at(tokyo, fire.timestamp()).partition_ref == "report/date=2024-01-02"


def test_catch_up_is_bounded_by_the_ttl() -> None:
    # down since Jan 1st; now Jan 10th 07:00; TTL 3 days from each data date
    now = _at("2024-01-10T07:00:00+00:00")
    refs = [f.partition_ref for f in catch_up(schedule(ttl=3 * DAY), now)]
    # data dates Jan 7th (expires Jan 10th 00:00: skipped) .. Jan 9th (today's firing)
    assert refs == ["report/date=2024-01-08", "report/date=2024-01-09"]


def test_catch_up_without_ttl_is_bounded_by_the_window() -> None:
    now = _at("2024-03-01T07:00:00+00:00")
    firings = catch_up(schedule(), now)
    assert len(firings) == DEFAULT_CATCH_UP_SECONDS // DAY
    assert firings[-1].partition_ref == "report/date=2024-02-29"
    assert all(now - f.fire_time <= DEFAULT_CATCH_UP_SECONDS for f in firings)
    assert [f.partition_ref for f in catch_up(schedule(), now, catch_up_seconds=DAY)] == [
        "report/date=2024-02-29"
    ]


def _created(rig: Rig) -> list[str]:
    return [p.want.partition_ref for p in rig.payloads(ev.WantCreated)]


def test_scheduler_fires_on_its_timer_catches_up_and_never_duplicates_across_restarts(
    tmp_path: Path,
) -> None:
    spec = schedule(sla=33 * HOUR, ttl=4 * DAY)

    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path, start=_at("2024-01-05T05:00:00+00:00"))
        await rig.start()
        scheduler = Scheduler([spec], rig.controller, rig.clock)
        await scheduler.start()
        # first start: catches up the firings of the last days still within their TTL
        # (Jan 1st's want would be past its TTL, Jan 5th 00:00; Jan 4th's firing is at 06:00)
        assert _created(rig) == ["report/date=2024-01-02", "report/date=2024-01-03"]
        assert scheduler.next_fire_time() == _at("2024-01-05T06:00:00+00:00")
        rig.clock.set(_at("2024-01-05T05:59:59+00:00"))
        await scheduler.poke()
        assert len(_created(rig)) == 2  # not due yet
        rig.clock.set(_at("2024-01-05T06:00:00+00:00"))
        await scheduler.poke()
        assert _created(rig)[-1] == "report/date=2024-01-04"
        want = rig.payloads(ev.WantCreated)[-1].want
        assert want.source is WantSource.SCHEDULED
        assert want.sla_deadline == _at("2024-01-05T09:00:00+00:00")
        await scheduler.stop()

        # the service is down for two days, then restarts over the same log
        rig.clock.set(_at("2024-01-07T12:00:00+00:00"))
        await rig.restart()
        scheduler = Scheduler([spec], rig.controller, rig.clock)
        await scheduler.start()
        await scheduler.poke()
        refs = _created(rig)
        assert refs[-2:] == ["report/date=2024-01-05", "report/date=2024-01-06"]
        ids = [p.want.want_id for p in rig.payloads(ev.WantCreated)]
        assert len(ids) == len(set(ids)) == 5

        # and once more, at once: nothing new
        await scheduler.stop()
        await rig.restart()
        scheduler = Scheduler([spec], rig.controller, rig.clock)
        await scheduler.start()
        await scheduler.poke()
        assert len(rig.payloads(ev.WantCreated)) == 5
        await scheduler.stop()
        await rig.stop()

    asyncio.run(scenario())


def test_a_failed_scheduled_want_is_not_reopened_by_a_restart(tmp_path: Path) -> None:
    spec = schedule()

    async def scenario() -> None:
        rig = Rig(SPEC, tmp_path, start=_at("2024-01-02T07:00:00+00:00"))
        await rig.start()
        scheduler = Scheduler([spec], rig.controller, rig.clock, catch_up_seconds=DAY)
        await scheduler.start()
        (want_id,) = [p.want.want_id for p in rig.payloads(ev.WantCreated)]
        await rig.controller.cancel_want(want_id, "not today")
        await scheduler.stop()
        await rig.restart()
        scheduler = Scheduler([spec], rig.controller, rig.clock, catch_up_seconds=DAY)
        await scheduler.start()
        assert rig.payloads(ev.WantReopened) == []
        assert rig.controller.state.wants[want_id].status.value == "canceled"
        await scheduler.stop()
        await rig.stop()

    asyncio.run(scenario())
