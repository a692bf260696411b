"""Partition refs and the patterns that match them.

A partition ref names one unit of data (``daily/date=2024-01-01``). ``parse_ref`` is the
single gate every ref passes through, at every edge (CLI, HTTP, config, job results), so
the rest of the code can trust a ``PartitionRef``. Patterns (``raw/date={date}``) route
refs to jobs and upstream graphs. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import NewType

from databuild.core.errors import InvalidPartitionRef, InvalidPattern

PartitionRef = NewType("PartitionRef", str)

MAX_REF_LENGTH = 512


def parse_ref(raw: object) -> PartitionRef:
    """Return ``raw`` as a PartitionRef, or raise InvalidPartitionRef saying which rule broke."""
    if not isinstance(raw, str):
        raise InvalidPartitionRef(raw, f"must be a string, not {type(raw).__name__}")
    if raw == "":
        raise InvalidPartitionRef(raw, "must not be empty")
    if len(raw) > MAX_REF_LENGTH:
        raise InvalidPartitionRef(
            raw, f"is {len(raw)} characters long; the limit is {MAX_REF_LENGTH}"
        )
    for index, char in enumerate(raw):
        if char == "\x00":
            raise InvalidPartitionRef(raw, f"contains a NUL character at position {index}")
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidPartitionRef(raw, f"contains an unpaired surrogate at position {index}")
        if category == "Cc" or char in "\u2028\u2029":
            raise InvalidPartitionRef(
                raw, f"contains a control character {char!r} at position {index}"
            )
    if raw != raw.strip():
        raise InvalidPartitionRef(raw, "must not start or end with white space")
    if raw.startswith("-"):
        raise InvalidPartitionRef(raw, "must not start with '-' (it would read as an option)")
    if raw.startswith("/"):
        raise InvalidPartitionRef(raw, "must not start with '/'")
    if raw.endswith("/"):
        raise InvalidPartitionRef(raw, "must not end with '/'")
    for segment in raw.split("/"):
        if segment in ("..", "."):
            raise InvalidPartitionRef(raw, f"must not contain a {segment!r} path segment")
        if segment == "":
            raise InvalidPartitionRef(raw, "must not contain an empty segment ('//')")
    if "\\" in raw:
        raise InvalidPartitionRef(raw, "must not contain a backslash")
    return PartitionRef(raw)


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]+))?\}")


@dataclass(frozen=True, slots=True)
class PartitionPattern:
    """A template such as ``daily/date={date}``; ``{name}`` matches one path segment and
    ``{name:REGEX}`` matches REGEX. Everything else is literal. Matches whole refs."""

    template: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @staticmethod
    def compile(template: str) -> PartitionPattern:
        if not isinstance(template, str) or not template:
            raise InvalidPattern("a partition pattern must be a non-empty string")
        parts: list[str] = []
        names: set[str] = set()
        position = 0
        for match in _FIELD.finditer(template):
            parts.append(re.escape(template[position : match.start()]))
            name, custom = match.group(1), match.group(2)
            if name in names:
                raise InvalidPattern(f"pattern {template!r} names field {{{name}}} twice")
            names.add(name)
            if custom is not None:
                try:
                    re.compile(custom)
                except re.error as exc:
                    raise InvalidPattern(
                        f"pattern {template!r}: field {{{name}}} has a bad regex: {exc}"
                    ) from None
                parts.append(f"(?P<{name}>{custom})")
            else:
                parts.append(f"(?P<{name}>[^/]+)")
            position = match.end()
        rest = template[position:]
        if "{" in rest or "}" in rest:
            raise InvalidPattern(f"pattern {template!r} has an unmatched brace")
        parts.append(re.escape(rest))
        return PartitionPattern(template, re.compile("".join(parts)))

    def match(self, ref: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(ref)
        return None if found is None else found.groupdict()

    def format(self, **values: str) -> PartitionRef:
        def fill(match: re.Match[str]) -> str:
            return values[match.group(1)]

        return parse_ref(_FIELD.sub(fill, self.template))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _FIELD.finditer(self.template))
