"""Job ``summary``: builds ``summary/all`` from every ISO week that touches the calendar range.

DataBuild runs it as ``python jobs/summary.py summary/all`` in the graph directory. The range
is ``CALENDAR_START`` (YYYY-MM-DD) and ``CALENDAR_DAYS`` from its environment, which
databuild.toml sets (and the environment DataBuild runs in may override). Weeks that are not
live yet are reported missing through ``sdk.require``. The pure functions above ``build`` are
what the tests import; only ``build`` reads and writes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from databuild import sdk

GRAPH_ROOT = Path(__file__).resolve().parent.parent
REF = "summary/all"
MAX_DAYS = 100_000


def calendar_range(environ: Mapping[str, str]) -> tuple[date, int]:
    """``CALENDAR_START`` and ``CALENDAR_DAYS`` (defaults 2024-01-01 and 365), checked."""
    start_text = environ.get("CALENDAR_START", "2024-01-01")
    days_text = environ.get("CALENDAR_DAYS", "365")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", start_text):
        raise ValueError(f"CALENDAR_START={start_text!r} is not a date written YYYY-MM-DD")
    try:
        start = date.fromisoformat(start_text)
    except ValueError:
        raise ValueError(f"CALENDAR_START={start_text!r} is not a real calendar date") from None
    if not days_text.isdigit() or not 1 <= int(days_text) <= MAX_DAYS:
        raise ValueError(f"CALENDAR_DAYS={days_text!r} is not a whole number from 1 to {MAX_DAYS}")
    return start, int(days_text)


def iso_week(day: date) -> str:
    year, number, _ = day.isocalendar()
    return f"{year:04d}-W{number:02d}"


def weeks_in_range(start: date, days: int) -> list[str]:
    """Every ISO week containing at least one of the ``days`` days from ``start``, in order."""
    weeks: list[str] = []
    for offset in range(days):
        week = iso_week(start + timedelta(days=offset))
        if not weeks or weeks[-1] != week:
            weeks.append(week)
    return weeks


def input_refs(start: date, days: int) -> list[str]:
    return [f"weekly/week={week}" for week in weeks_in_range(start, days)]


def summary_totals(start: date, days: int, weeklies: list[dict[str, Any]]) -> dict[str, Any]:
    """The total over the weeks touching the range, each week's total, and the list of weeks."""
    weeks = weeks_in_range(start, days)
    got = [str(weekly["week"]) for weekly in weeklies]
    if got != weeks:
        raise ValueError(f"the summary needs the weeks {weeks}, got {got}")
    totals = {str(weekly["week"]): int(weekly["total_wh"]) for weekly in weeklies}
    return {
        "start": start.isoformat(),
        "days": days,
        "end": (start + timedelta(days=days - 1)).isoformat(),
        "weeks": weeks,
        "weekly_total_wh": totals,
        "total_wh": sum(totals.values()),
    }


def data_path(ref: str) -> Path:
    """``data/<ref>.json`` under the graph root, or under ``$CALENDAR_DATA_DIR``."""
    return GRAPH_ROOT / os.environ.get("CALENDAR_DATA_DIR", "data") / f"{ref}.json"


def read_json(path: Path) -> dict[str, Any]:
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return content


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Readers see the old file or the whole new one, never half: write aside, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def build(ref: str) -> None:
    if ref != REF:
        sdk.fail(f"{ref!r} is not a summary partition; this job builds only {REF}")
    try:
        start, days = calendar_range(os.environ)
    except ValueError as exc:
        sdk.fail(str(exc))
    sources = input_refs(start, days)
    sdk.require(*sources)
    try:
        weeklies = [read_json(data_path(source)) for source in sources]
    except (OSError, ValueError) as exc:
        sdk.fail(f"cannot read the weekly partitions, which DataBuild reports live: {exc}")
    write_json(data_path(ref), summary_totals(start, days, weeklies))


if __name__ == "__main__":
    sdk.run(build)
