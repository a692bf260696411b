"""Job ``ingest``: writes ``raw/date=YYYY-MM-DD`` (24 synthetic hourly readings).

Data goes under ``$FEDERATION_DATA`` (shared with the ``reports`` graph, which reads it).
A date listed in ``$FEDERATION_FAIL`` (comma-separated) fails for good: the example's way
to show an upstream failure reaching the downstream graph. A date listed in
``$FEDERATION_FLAKY`` fails retryably: retried by the job's policy, while the downstream
graph's SLA blame follows the chain into this graph.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from databuild import sdk


def build(ref: str) -> None:
    found = re.fullmatch(r"raw/date=(\d{4}-\d{2}-\d{2})", ref)
    if found is None:
        sdk.fail(f"{ref!r} is not raw/date=YYYY-MM-DD")
    day = found.group(1)
    if day in os.environ.get("FEDERATION_FAIL", "").split(","):
        sdk.fail(f"no readings delivered for {day}")
    if day in os.environ.get("FEDERATION_FLAKY", "").split(","):
        sdk.fail(f"the meter feed for {day} timed out", retryable=True)
    seed = sum(map(int, day.split("-")))
    readings = [{"hour": h, "wh": (seed * 7 + h * 13) % 100} for h in range(24)]
    path = Path(os.environ["FEDERATION_DATA"]) / f"{ref}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"date": day, "readings": readings}), encoding="utf-8")
    os.replace(temporary, path)


if __name__ == "__main__":
    sdk.run(build)
