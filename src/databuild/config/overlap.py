"""Can two partition patterns match the same ref? The loader asks for every pair of owners.

``overlap(a, b)`` returns a ref both patterns match (a *witness*), or None.

- Patterns made of literals and ``{name}`` fields (one path segment: ``[^/]+``) are regular
  languages; the answer is exact. A breadth-first search walks both patterns side by side
  (a product automaton) and either reaches the end of both, spelling the witness as it goes,
  or proves that no string matches both.
- A ``{name:REGEX}`` field is first widened to "any characters". If even the widened patterns
  cannot meet, they are disjoint (proven). Otherwise the search's witness and sample refs
  (each pattern filled with sample strings of its regex fields: shortest repeats, first
  alternatives, a member of each character class) are tried against both real patterns. A
  witness found is always real; not finding one proves nothing, which is why a ref matched by
  two owners at want time still gets its own clear error (``GraphSpec.route``).

Pure: no I/O. Called by ``databuild.config.loader`` only.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from databuild.core.refs import PartitionPattern

# CPython's own regex parser (private modules, stable since 3.11; typeshed stubs do not
# declare them): the only way to read a compiled pattern's structure exactly.
sre: Any = import_module("re._constants")
sre_parse: Any = import_module("re._parser")

# What one step of a pattern accepts: a literal character, one character of a {name} field
# (not '/'), or any run of characters of a widened regex field.
_CHAR, _ONE, _STAR, _ANY = "char", "one", "star", "any"
_FILLER = "x"  # the witness's character where both sides accept any non-'/' character
_SAMPLES = 64  # at most this many sample refs per pattern


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str
    char: str = ""

    def accepts(self, char: str) -> bool:
        if self.kind == _CHAR:
            return char == self.char
        return self.kind == _ANY or char != "/"

    @property
    def loops(self) -> bool:
        """May repeat (and be skipped): the tail of a field."""
        return self.kind in (_STAR, _ANY)


def _steps(pattern: PartitionPattern) -> tuple[list[_Step], bool]:
    """The pattern as steps, and whether a regex field had to be widened."""
    steps: list[_Step] = []
    widened = False
    for literal, name, custom in pattern.pieces:
        steps.extend(_Step(_CHAR, c) for c in literal)
        if name is None:
            continue
        if custom is None:
            steps += [_Step(_ONE), _Step(_STAR)]  # [^/]+ = one, then any more
        else:
            steps.append(_Step(_ANY))
            widened = True
    return steps, widened


def _meet(a: _Step, b: _Step) -> str | None:
    """A character both steps accept, or None."""
    for char in (a.char, b.char, _FILLER):
        if char and a.accepts(char) and b.accepts(char):
            return char
    return None


def _search(a: list[_Step], b: list[_Step]) -> str | None:
    """The shortest string both step lists accept, or None when there is none."""
    start = (0, 0)
    parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        i, j = state = queue.popleft()
        if i == len(a) and j == len(b):
            chars: list[str] = []
            node: tuple[int, int] | None = state
            while node is not None and parent[node] is not None:
                previous, char = parent[node]  # type: ignore[misc]
                chars.append(char)
                node = previous
            return "".join(reversed(chars))
        moves: list[tuple[tuple[int, int], str]] = []
        if i < len(a) and a[i].loops:
            moves.append(((i + 1, j), ""))
        if j < len(b) and b[j].loops:
            moves.append(((i, j + 1), ""))
        if i < len(a) and j < len(b):
            char = _meet(a[i], b[j])
            if char is not None:
                moves.append(((i if a[i].loops else i + 1, j if b[j].loops else j + 1), char))
        for target, char in moves:
            if target not in parent:
                parent[target] = (state, char)
                # empty moves first: the witness stays short and the search breadth-first
                if char:
                    queue.append(target)
                else:
                    queue.appendleft(target)
    return None


def _prefix(pattern: PartitionPattern) -> str:
    return pattern.pieces[0][0]


def overlap(a: PartitionPattern, b: PartitionPattern) -> str | None:
    """A ref matched by both ``a`` and ``b``, or None (see the module docstring for how
    sure a None is when a pattern has ``{name:REGEX}`` fields)."""
    first, second = _prefix(a), _prefix(b)
    if not (first.startswith(second) or second.startswith(first)):
        return None  # their literal beginnings differ: disjoint, and the common case
    steps_a, widened_a = _steps(a)
    steps_b, widened_b = _steps(b)
    witness = _search(steps_a, steps_b)
    if witness is None or not (widened_a or widened_b):
        return witness
    for candidate in itertools.chain([witness], _sample_refs(a), _sample_refs(b)):
        if a.match(candidate) is not None and b.match(candidate) is not None:
            return candidate
    return None


# ---- sample refs of a pattern with regex fields -------------------------------------------
def _sample_refs(pattern: PartitionPattern) -> list[str]:
    choices: list[list[str]] = []
    for literal, name, custom in pattern.pieces:
        choices.append([literal])
        if name is not None:
            choices.append([_FILLER] if custom is None else _regex_samples(custom))
    return ["".join(parts) for parts in itertools.islice(itertools.product(*choices), _SAMPLES)]


def _regex_samples(regex: str) -> list[str]:
    try:
        parsed = sre_parse.parse(regex)
    except re.error:
        return []
    return _sequence(list(parsed))[:_SAMPLES]


def _sequence(nodes: list[tuple[Any, Any]]) -> list[str]:
    out = [""]
    for op, arg in nodes:
        options = _node(op, arg)
        out = [head + tail for head in out for tail in options][:_SAMPLES]
    return out


_CANDIDATES = "x0a-_Z.9 "
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
}


def _in_class(char: str, items: list[tuple[Any, Any]]) -> bool:
    for op, arg in items:
        if op is sre.LITERAL and char == chr(arg):
            return True
        if op is sre.RANGE and arg[0] <= ord(char) <= arg[1]:
            return True
        if op is sre.CATEGORY and re.fullmatch(_CATEGORIES.get(arg, "(?!)"), char):
            return True
    return False


def _class_members(items: list[tuple[Any, Any]]) -> list[str]:
    negated = bool(items) and items[0][0] is sre.NEGATE
    body = items[1:] if negated else items
    own = [
        chr(arg) if op is sre.LITERAL else chr(arg[0])
        for op, arg in body
        if op is sre.LITERAL or op is sre.RANGE
    ]
    candidates = dict.fromkeys([*own, *_CANDIDATES])
    members = [c for c in candidates if _in_class(c, body) != negated]
    return members[:2]


def _node(op: Any, arg: Any) -> list[str]:
    if op is sre.LITERAL:
        return [chr(arg)]
    if op is sre.NOT_LITERAL:
        return [c for c in _CANDIDATES if c != chr(arg)][:1]
    if op is sre.ANY:
        return [_FILLER]
    if op is sre.IN:
        return _class_members(list(arg))
    if op is sre.CATEGORY:
        return _class_members([(op, arg)])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
        low, high, sub = arg
        body = _sequence(list(sub))
        counts = [low] + ([low + 1] if high is sre.MAXREPEAT or low + 1 <= high else [])
        return [sample * count for count in counts for sample in body[:2]]
    if op is sre.SUBPATTERN:
        return _sequence(list(arg[-1]))
    if op is sre.ATOMIC_GROUP:
        return _sequence(list(arg))
    if op is sre.BRANCH:
        return [s for branch in arg[1] for s in _sequence(list(branch))]
    # anchors, look-arounds, back-references: nothing to spell; every candidate is checked
    # against the real patterns anyway
    return [""]
