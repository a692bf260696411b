"""Job ``ingest``: builds ``raw/date=YYYY-MM-DD``, 24 synthetic hourly meter readings.

DataBuild runs it as ``python jobs/ingest.py REF...`` in the graph directory, never through a
shell. It has no inputs: the readings come from a hash of the date, so every rebuild writes the
same file. The pure functions above ``build`` are what the tests import; only ``build`` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

from databuild import sdk

GRAPH_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "raw/date="


def parse_ref(ref: str) -> date:
    """``raw/date=YYYY-MM-DD`` -> the date; ValueError saying what is wrong otherwise."""
    text = ref.removeprefix(PREFIX)
    if text == ref or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{ref!r} is not a raw partition ({PREFIX}YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{ref!r}: {text} is not a real calendar date") from None


def synthetic_readings(day: date) -> dict[str, Any]:
    """24 hourly readings in watt-hours, derived from a hash of ``day`` (no randomness).
    About one in twelve is missing (null), as real meters drop readings."""
    digest = hashlib.sha256(f"calendar/{day.isoformat()}".encode()).digest()
    readings = []
    for hour in range(24):
        level = digest[hour]
        wh = None if level < 21 else 100 + level * 4 + digest[hour + 8] % 10
        readings.append({"hour": hour, "wh": wh})
    return {"date": day.isoformat(), "unit": "Wh", "readings": readings}


def data_path(ref: str) -> Path:
    """``data/<ref>.json`` under the graph root, or under ``$CALENDAR_DATA_DIR``."""
    return GRAPH_ROOT / os.environ.get("CALENDAR_DATA_DIR", "data") / f"{ref}.json"


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
    try:
        day = parse_ref(ref)
    except ValueError as exc:
        sdk.fail(str(exc))
    write_json(data_path(ref), synthetic_readings(day))


if __name__ == "__main__":
    sdk.run(build)
