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
        for literal, name, custom in _scan(template):
            parts.append(re.escape(literal))
            if name is None:
                continue
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
        return PartitionPattern(template, re.compile("".join(parts)))

    def match(self, ref: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(ref)
        return None if found is None else found.groupdict()

    def format(self, **values: str) -> PartitionRef:
        return parse_ref(
            "".join(
                literal + ("" if name is None else values[name])
                for literal, name, _ in _scan(self.template)
            )
        )

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name, _ in _scan(self.template) if name is not None)

    @property
    def pieces(self) -> tuple[tuple[str, str | None, str | None], ...]:
        """(literal, field name, custom regex) triples in order; the last has no field."""
        return tuple(_scan(self.template))


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scan(template: str) -> list[tuple[str, str | None, str | None]]:
    """Split a template into (literal, field name, custom regex) triples.

    A field is ``{name}`` or ``{name:REGEX}``; REGEX may hold balanced braces (``\\d{4}``).
    Any other brace is an error that says where it is.
    """
    out: list[tuple[str, str | None, str | None]] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "}":
            raise InvalidPattern(f"pattern {template!r} has an unmatched '}}' at position {i}")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        name_match = _NAME.match(template, i + 1)
        if name_match is None:
            raise InvalidPattern(
                f"pattern {template!r}: '{{' at position {i} must start a field "
                "such as {date} or {date:REGEX} (names: letters, digits, '_')"
            )
        j = name_match.end()
        custom: str | None = None
        if j < len(template) and template[j] == ":":
            depth, k = 1, j + 1
            while k < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[k], 0)
                k += 1
            if depth:
                raise InvalidPattern(f"pattern {template!r}: field at position {i} is not closed")
            custom = template[j + 1 : k - 1]
            if not custom:
                raise InvalidPattern(
                    f"pattern {template!r}: field at position {i} has an empty regex"
                )
            j = k
        elif j < len(template) and template[j] == "}":
            j += 1
        else:
            raise InvalidPattern(f"pattern {template!r}: field at position {i} is not closed")
        out.append(("".join(literal), name_match.group(0), custom))
        literal = []
        i = j
    out.append(("".join(literal), None, None))
    return out
