"""Durations as people write them in ``databuild.toml``: ``90``, ``"90s"``, ``"10m"``, ``"1h30m"``.

``parse_duration`` turns one into seconds. The config loader calls it for every duration key
(job timeouts and back-offs, schedule SLA and TTL); the CLI may reuse it for ``--sla``/``--ttl``.
Pure: it knows nothing about files or keys; the caller adds where the value came from.
"""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

ACCEPTED_FORMATS = (
    "a number of seconds (90 or 1.5) or a string of amounts with units s, m, h, d, w "
    '(such as "90s", "10m", "9h", "30d", "1h30m")'
)

_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds, or raise ValueError saying which formats are accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use {ACCEPTED_FORMATS}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite duration; use {ACCEPTED_FORMATS}")
        if value < 0:
            raise ValueError(f"a duration must not be negative (got {value!r})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"a duration must be {ACCEPTED_FORMATS}, not a {type(value).__name__}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration; use {ACCEPTED_FORMATS}")
    seen: list[str] = []
    total = 0.0
    for amount, unit in _PART.findall(text):
        if unit in seen:
            raise ValueError(f"{value!r} names the unit {unit!r} twice; use {ACCEPTED_FORMATS}")
        seen.append(unit)
        total += float(amount) * UNIT_SECONDS[unit]
    return total
