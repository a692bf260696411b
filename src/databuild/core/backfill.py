"""Backfills: a partition pattern and a date range, expanded to one want per partition.

A backfill is no subsystem of its own: it is a set of ordinary wants created in one step,
each with its own data timestamp (its partition's date), all sharing one root want id, the
backfill id, so ``want list --root`` and ``backfill status`` can follow the set. Pure: no
I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from databuild.core.errors import InvalidInput, InvalidPattern
from databuild.core.model import WantId, WantRequest, WantSource
from databuild.core.refs import PartitionPattern, PartitionRef

MAX_BACKFILL_PARTITIONS = 100_000


# the fields a backfill pattern may hold, and how a date is written in each
def _iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


_FORMATS: dict[str, Callable[[dt.date], str]] = {
    "date": dt.date.isoformat,
    "week": _iso_week,
    "month": lambda day: f"{day.year:04d}-{day.month:02d}",
}


class Step(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Backfill:
    """What a backfill asks for: ``pattern`` filled for each step from ``start`` to ``end``
    (both included)."""

    pattern: str
    start: dt.date
    end: dt.date
    step: Step = Step.DAY

    @property
    def backfill_id(self) -> WantId:
        """The root want id of the set: the same backfill asked twice names one set."""
        key = f"{self.pattern}\x1f{self.start}\x1f{self.end}\x1f{self.step.value}".encode()
        return WantId("b" + hashlib.sha256(key).hexdigest()[:23])


def parse_date(text: object, option: str) -> dt.date:
    if not isinstance(text, str) or len(text) != 10:
        raise InvalidInput(f"{option}: {text!r} is not a date: use YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{option}: {text!r} is not a date: use YYYY-MM-DD") from None


def parse_backfill(
    pattern: str, start: str | None, end: str | None, step: str = "day", *, names: str = "--from"
) -> Backfill:
    """Check a backfill's parts; ``names`` says how the range options are called where the
    request came from (``--from``/``--to`` or ``from_date``/``to_date``)."""
    from_name, to_name = ("--from", "--to") if names == "--from" else ("from_date", "to_date")
    if start is None or end is None:
        raise InvalidInput(
            f"partition pattern {pattern!r} needs a date range: give both {from_name} and "
            f"{to_name} (YYYY-MM-DD)"
        )
    try:
        compiled = PartitionPattern.compile(pattern)
    except InvalidPattern as exc:
        raise InvalidInput(str(exc)) from None
    fields = compiled.fields
    if not fields:
        raise InvalidInput(
            f"pattern {pattern!r} has no field to fill: a backfill pattern needs one of "
            "{date}, {week} or {month}"
        )
    unknown = [f for f in fields if f not in _FORMATS]
    if unknown or len(fields) != 1:
        raise InvalidInput(
            f"pattern {pattern!r}: a backfill pattern holds exactly one field, {{date}}, "
            f"{{week}} or {{month}}; it has {', '.join('{' + f + '}' for f in fields)}"
        )
    try:
        chosen = Step(step)
    except ValueError:
        raise InvalidInput(f"step {step!r} is not one of day, week, month") from None
    first, last = parse_date(start, from_name), parse_date(end, to_name)
    if last < first:
        raise InvalidInput(f"the range is inverted: {to_name} {last} is before {from_name} {first}")
    backfill = Backfill(pattern, first, last, chosen)
    count = step_count(backfill)
    if count > MAX_BACKFILL_PARTITIONS:
        raise InvalidInput(
            f"the range {first} to {last} by {chosen.value} is {count:,} partitions; a backfill "
            f"holds at most {MAX_BACKFILL_PARTITIONS:,}: split it into smaller ranges"
        )
    return backfill


def step_count(backfill: Backfill) -> int:
    """How many steps the range holds (before duplicates are merged), without listing them."""
    days = (backfill.end - backfill.start).days
    if backfill.step is Step.DAY:
        return days + 1
    if backfill.step is Step.WEEK:
        return days // 7 + 1
    months = (backfill.end.year - backfill.start.year) * 12 + backfill.end.month
    return months - backfill.start.month + 1


def dates(backfill: Backfill) -> list[dt.date]:
    """Each step's date, from the start: by day, by 7 days, or the same day of each month
    (clamped to the month's end)."""
    out: list[dt.date] = []
    if backfill.step is Step.MONTH:
        for index in range(step_count(backfill)):
            month = backfill.start.month - 1 + index
            year, month = backfill.start.year + month // 12, month % 12 + 1
            day = min(backfill.start.day, _month_days(year, month))
            moment = dt.date(year, month, day)
            if moment <= backfill.end:
                out.append(moment)
        return out
    stride = dt.timedelta(days=7 if backfill.step is Step.WEEK else 1)
    moment = backfill.start
    while moment <= backfill.end:
        out.append(moment)
        moment += stride
    return out


def _month_days(year: int, month: int) -> int:
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return (following - dt.timedelta(days=1)).day


def expand(backfill: Backfill) -> list[tuple[PartitionRef, int]]:
    """The partitions of a backfill, in date order, each once, with its data timestamp
    (midnight UTC of the first date that names it)."""
    compiled = PartitionPattern.compile(backfill.pattern)
    (name,) = compiled.fields
    fmt = _FORMATS[name]
    seen: set[PartitionRef] = set()
    out: list[tuple[PartitionRef, int]] = []
    for moment in dates(backfill):
        ref = compiled.format(**{name: fmt(moment)})
        if ref in seen:
            continue
        seen.add(ref)
        midnight = dt.datetime.combine(moment, dt.time(), dt.UTC)
        out.append((ref, int(midnight.timestamp())))
    return out


def requests(
    backfill: Backfill, source: WantSource, ttl_seconds: int = 0, sla_seconds: int = 0
) -> list[WantRequest]:
    """One want request per partition, all rooted at the backfill id."""
    root = backfill.backfill_id
    return [
        WantRequest(ref, stamp, source, ttl_seconds, sla_seconds, root_want_id=root)
        for ref, stamp in expand(backfill)
    ]
