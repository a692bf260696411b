"""Job ``weekly``: builds ``weekly/week=YYYY-Www`` from the seven dailies of that ISO week.

DataBuild runs it as ``python jobs/weekly.py REF...`` in the graph directory. An ISO week runs
Monday to Sunday, so the first and last weeks of a year may take days from the neighbouring
year. Dailies that are not live yet are reported missing through ``sdk.require_for``. The pure
functions above ``build_batch`` are what the tests import; only it reads and writes.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from databuild import sdk

GRAPH_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "weekly/week="


def week_dates(week: str) -> list[date]:
    """The seven days, Monday to Sunday, of ISO week ``YYYY-Www``; ValueError if none."""
    found = re.fullmatch(r"(\d{4})-W(\d{2})", week)
    if found is None:
        raise ValueError(f"{week!r} is not an ISO week written YYYY-Www (such as 2024-W01)")
    year, number = int(found.group(1)), int(found.group(2))
    try:
        monday = date.fromisocalendar(year, number, 1)
    except ValueError:
        raise ValueError(f"ISO year {year} has no week {number}") from None
    return [monday + timedelta(days=offset) for offset in range(7)]


def parse_ref(ref: str) -> str:
    """``weekly/week=YYYY-Www`` -> the week, checked to exist in its ISO year."""
    week = ref.removeprefix(PREFIX)
    if week == ref:
        raise ValueError(f"{ref!r} is not a weekly partition ({PREFIX}YYYY-Www)")
    week_dates(week)
    return week


def input_refs(week: str) -> list[str]:
    return [f"daily/date={day.isoformat()}" for day in week_dates(week)]


def weekly_totals(week: str, dailies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the daily totals of ``week``; ``dailies`` are its seven days, Monday first."""
    expected = [day.isoformat() for day in week_dates(week)]
    got = [str(daily["date"]) for daily in dailies]
    if got != expected:
        raise ValueError(f"week {week} needs the days {expected}, got {got}")
    totals = {str(daily["date"]): int(daily["total_wh"]) for daily in dailies}
    return {"week": week, "daily_total_wh": totals, "total_wh": sum(totals.values())}


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


def build_batch(refs: list[str]) -> None:
    """Build every week whose seven dailies are live; report the others' missing dailies."""
    try:
        weeks = {ref: parse_ref(ref) for ref in refs}
    except ValueError as exc:
        sdk.fail(str(exc))
    sources = {ref: input_refs(week) for ref, week in weeks.items()}
    # One question for the whole batch; require_for asks again only about weeks not ready.
    live = sdk.live(source for week_sources in sources.values() for source in week_sources)
    for ref, week in weeks.items():
        ready = all(live[source] for source in sources[ref])
        if not ready and not sdk.require_for(ref, sources[ref]):
            continue
        try:
            dailies = [read_json(data_path(source)) for source in sources[ref]]
        except (OSError, ValueError) as exc:
            sdk.fail(f"cannot read the dailies of {week}, which DataBuild reports live: {exc}")
        write_json(data_path(ref), weekly_totals(week, dailies))


if __name__ == "__main__":
    sdk.run_batch(build_batch)
