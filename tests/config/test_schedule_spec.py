"""ScheduleSpec answers the scheduler's questions as pure functions of their inputs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from databuild.config import DataDate, ScheduleSpec
from databuild.core.refs import PartitionPattern


def spec(
    cron: str = "0 6 * * *",
    timezone: str = "UTC",
    partition: str = "daily/date={date}",
    data_date: DataDate = DataDate.YESTERDAY,
) -> ScheduleSpec:
    return ScheduleSpec(
        name="nightly",
        cron=cron,
        timezone=timezone,
        partition=PartitionPattern.compile(partition),
        data_date=data_date,
        sla_seconds=9 * 3600,
    )


def test_next_fire_is_strictly_after_and_in_utc() -> None:
    at_six = datetime(2024, 3, 1, 6, 0, tzinfo=UTC)

    assert spec().next_fire_after(at_six) == datetime(2024, 3, 2, 6, 0, tzinfo=UTC)
    assert spec().next_fire_after(datetime(2024, 3, 1, 5, 59, tzinfo=UTC)) == at_six


def test_cron_is_read_in_the_schedules_time_zone_across_dst() -> None:
    berlin = spec(timezone="Europe/Berlin")

    # 06:00 in Berlin is 05:00 UTC in winter and 04:00 UTC in summer (DST began 2024-03-31).
    assert berlin.next_fire_after(datetime(2024, 3, 29, 12, tzinfo=UTC)) == datetime(
        2024, 3, 30, 5, tzinfo=UTC
    )
    assert berlin.next_fire_after(datetime(2024, 3, 30, 12, tzinfo=UTC)) == datetime(
        2024, 3, 31, 4, tzinfo=UTC
    )


def test_data_date_is_yesterday_or_today_in_the_time_zone() -> None:
    # 23:30 UTC on 1 March is already 2 March in Tokyo.
    fire = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)

    assert spec().data_date_for(fire) == date(2024, 2, 29)
    assert spec(data_date=DataDate.TODAY).data_date_for(fire) == date(2024, 3, 1)
    assert spec(timezone="Asia/Tokyo").data_date_for(fire) == date(2024, 3, 1)
    local = fire.astimezone(ZoneInfo("Asia/Tokyo"))
    assert spec(timezone="Asia/Tokyo", data_date=DataDate.TODAY).data_date_for(local) == date(
        2024, 3, 2
    )


def test_ref_for_fills_date_week_month_and_year() -> None:
    day = date(2024, 12, 30)  # ISO week 2025-W01

    assert spec().ref_for(day) == "daily/date=2024-12-30"
    assert spec(partition="weekly/week={week}").ref_for(day) == "weekly/week=2025-W01"
    assert spec(partition="m/{year}/{month}").ref_for(day) == "m/2024/2024-12"


def test_data_timestamp_is_midnight_utc() -> None:
    assert ScheduleSpec.data_timestamp_for(date(2024, 1, 1)) == 1704067200
