"""A schedule from ``databuild.toml``: a cron expression that turns into wants.

``ScheduleSpec`` is the validated value the loader produces for each ``[schedules.<name>]``
table. It answers the scheduler's three questions as pure functions of their inputs: when does
it fire next after T, which business date does a firing at T stand for, and which partition
ref names that date. The runtime's scheduler calls these and creates the wants (with
``sla_seconds``/``ttl_seconds``, measured from the data timestamp); this module never reads the
clock, creates wants or touches the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import cast
from zoneinfo import ZoneInfo

from croniter import croniter

from databuild.core.refs import PartitionPattern, PartitionRef

# The fields a schedule's partition pattern may use, and how a business date fills them.
SCHEDULE_FIELDS = {
    "date": "the data date as YYYY-MM-DD",
    "week": "the ISO week of the data date as YYYY-Www",
    "month": "the month of the data date as YYYY-MM",
    "year": "the year of the data date as YYYY",
}


class DataDate(StrEnum):
    """Which business date a firing stands for, in the schedule's time zone."""

    YESTERDAY = "yesterday"
    TODAY = "today"


def schedule_field_values(day: date) -> dict[str, str]:
    """The values of every ``SCHEDULE_FIELDS`` entry for ``day``."""
    iso_year, iso_week, _ = day.isocalendar()
    return {
        "date": day.isoformat(),
        "week": f"{iso_year:04d}-W{iso_week:02d}",
        "month": f"{day.year:04d}-{day.month:02d}",
        "year": f"{day.year:04d}",
    }


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """``[schedules.<name>]``: fire at ``cron`` in ``timezone``; want ``partition`` for the
    data date with the given SLA and TTL (seconds from the data timestamp; 0 = none)."""

    name: str
    cron: str
    timezone: str
    partition: PartitionPattern
    data_date: DataDate = DataDate.YESTERDAY
    sla_seconds: int = 0
    ttl_seconds: int = 0

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_fire_after(self, after: datetime) -> datetime:
        """The first firing strictly after ``after`` (an aware datetime), in UTC."""
        if after.tzinfo is None:
            raise ValueError("next_fire_after needs an aware datetime")
        local = after.astimezone(self.tzinfo)
        fire = cast(datetime, croniter(self.cron, local).get_next(datetime))
        return fire.astimezone(UTC)

    def data_date_for(self, fire_time: datetime) -> date:
        """The business date a firing at ``fire_time`` (aware) stands for."""
        if fire_time.tzinfo is None:
            raise ValueError("data_date_for needs an aware datetime")
        today = fire_time.astimezone(self.tzinfo).date()
        return today - timedelta(days=1) if self.data_date is DataDate.YESTERDAY else today

    def ref_for(self, day: date) -> PartitionRef:
        """The partition ref this schedule wants for business date ``day``."""
        return self.partition.format(**schedule_field_values(day))

    @staticmethod
    def data_timestamp_for(day: date) -> int:
        """Midnight UTC of ``day`` in epoch seconds: the want's data_timestamp."""
        return int(datetime.combine(day, time(0), tzinfo=UTC).timestamp())
