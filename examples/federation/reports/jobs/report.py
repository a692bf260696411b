"""Job ``report``: builds ``report/date=YYYY-MM-DD`` from the upstream ``raw/date=...``.

The raw day belongs to the ``ingest`` graph; ``sdk.require_for`` reports it missing until
this graph has heard from ingest that it is live (docs/federation.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from databuild import sdk


def build(ref: str) -> None:
    found = re.fullmatch(r"report/date=(\d{4}-\d{2}-\d{2})", ref)
    if found is None:
        sdk.fail(f"{ref!r} is not report/date=YYYY-MM-DD")
    source = f"raw/date={found.group(1)}"
    if not sdk.require_for(ref, source):
        return
    data = Path(os.environ["FEDERATION_DATA"])
    raw = json.loads((data / f"{source}.json").read_text(encoding="utf-8"))
    total = sum(int(r["wh"]) for r in raw["readings"])
    path = data / f"{ref}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"date": raw["date"], "total_wh": total}), encoding="utf-8")
    os.replace(temporary, path)


if __name__ == "__main__":
    sdk.run(build)
