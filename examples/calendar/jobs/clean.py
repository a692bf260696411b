"""Job ``clean``: builds ``daily/date=YYYY-MM-DD`` from ``raw/date=YYYY-MM-DD``.

DataBuild runs it as ``python jobs/clean.py REF...`` in the graph directory. It drops missing
readings, stamps each kept one with its UTC hour and totals the day. databuild.toml hints the
raw day as this job's input, so DataBuild builds it before the first run; should it still not
be live, ``sdk.require_for`` reports it missing and DataBuild builds it, then runs this again
for that day; the other days of the batch are built at once.
The pure functions above ``build_batch`` are what the tests import; only it reads and writes.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

from databuild import sdk

GRAPH_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "daily/date="


def parse_ref(ref: str) -> date:
    """``daily/date=YYYY-MM-DD`` -> the date; ValueError saying what is wrong otherwise."""
    text = ref.removeprefix(PREFIX)
    if text == ref or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{ref!r} is not a daily partition ({PREFIX}YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{ref!r}: {text} is not a real calendar date") from None


def input_ref(day: date) -> str:
    return f"raw/date={day.isoformat()}"


def clean_readings(raw: dict[str, Any]) -> dict[str, Any]:
    """Drop missing readings, stamp the rest with their UTC hour, and total the day."""
    day = str(raw["date"])
    kept = [r for r in raw["readings"] if isinstance(r.get("wh"), int)]
    readings = [{"at": f"{day}T{int(r['hour']):02d}:00:00Z", "wh": int(r["wh"])} for r in kept]
    return {
        "date": day,
        "readings": readings,
        "dropped": len(raw["readings"]) - len(kept),
        "total_wh": sum(r["wh"] for r in kept),
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


def build_batch(refs: list[str]) -> None:
    """Build every daily whose raw input is live; report the others' inputs as missing."""
    try:
        sources = {ref: input_ref(parse_ref(ref)) for ref in refs}
    except ValueError as exc:
        sdk.fail(str(exc))
    # One question for the whole batch; require_for asks again only about those not live.
    live = sdk.live(sources.values())
    for ref, source in sources.items():
        if not live[source] and not sdk.require_for(ref, source):
            continue
        try:
            raw = read_json(data_path(source))
        except (OSError, ValueError) as exc:
            sdk.fail(f"cannot read {source}, which DataBuild reports live: {exc}")
        write_json(data_path(ref), clean_readings(raw))


if __name__ == "__main__":
    sdk.run_batch(build_batch)
