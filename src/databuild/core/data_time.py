"""Business time of data: parsing data dates and deriving a default from a partition ref.

A want's ``data_timestamp`` anchors its SLA and TTL. When a client gives none, the ref
usually says it (``date=2024-01-01``, ``week=2024-W01``, ``month=2024-01``); otherwise
the data date is today (UTC midnight), so asking twice on one day names one want. Pure:
``now`` is a parameter.
"""

from __future__ import annotations

import datetime as dt
import re

from databuild.core.errors import InvalidInput

_DATE = re.compile(r"(?:^|/)(?:date|day|dt|ds)=(\d{4}-\d{2}-\d{2})(?:/|$)")
_WEEK = re.compile(r"(?:^|/)week=(\d{4})-W(\d{2})(?:/|$)")
_MONTH = re.compile(r"(?:^|/)month=(\d{4})-(\d{2})(?:/|$)")


def _midnight(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def parse_data_date(text: str) -> int:
    """``YYYY-MM-DD`` or an ISO datetime with an offset -> seconds since the epoch (UTC)."""
    try:
        if len(text) == 10:
            return _midnight(dt.date.fromisoformat(text))
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"data date {text!r} is not a date: use YYYY-MM-DD or an ISO 8601 datetime"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def default_data_timestamp(ref: str, now: float) -> int:
    found = _DATE.search(ref)
    try:
        if found:
            return _midnight(dt.date.fromisoformat(found.group(1)))
        week = _WEEK.search(ref)
        if week:
            return _midnight(dt.date.fromisocalendar(int(week.group(1)), int(week.group(2)), 1))
        month = _MONTH.search(ref)
        if month:
            return _midnight(dt.date(int(month.group(1)), int(month.group(2)), 1))
    except ValueError:
        pass  # a ref that looks dated but is not a real date: fall back to today
    return _midnight(dt.datetime.fromtimestamp(now, dt.UTC).date())


def format_timestamp(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
