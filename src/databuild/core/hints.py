"""Input hints: the inputs a job's ``inputs`` patterns name for one of its output partitions.

A job may declare ``inputs = ["raw/date={date}"]`` in ``databuild.toml``: patterns whose
``{field}``s are filled from the fields of the output pattern that matches the partition to
build. The reconciler asks ``resolve`` just before it dispatches a partition, and wants the
hinted inputs that are not live first (``Reconciler._wait_for_hints``), so that a job whose
inputs are known runs once instead of twice (once to report them missing, once to build).
Hints are advisory: the run's own discovery stays the source of truth.

A hint may name a set: ``inputs = ["daily/date={week|iso_week_days}"]`` wants the seven
days of the output's ISO week (``EXPANSIONS``: ``iso_week_days``, ``month_days``,
``trailing_days:N``).

Pure: no I/O. The loader checks at load time that every field a hint names is a field of
each of the job's output patterns (``missing_fields``); ``resolve`` skips, rather than
raises on, a hint it cannot fill (a graph assembled by hand, not by the loader).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from databuild.core.errors import InvalidPartitionRef, InvalidPattern
from databuild.core.model import JobSpec
from databuild.core.refs import PartitionPattern, PartitionRef

# A hint names a *set* of inputs with an expansion on a field: ``{week|iso_week_days}``
# fills one input per day of the output's ISO week. Each takes the field's value and an
# optional whole-number argument (``{date|trailing_days:7}``) and gives the values to fill
# in, or None when the value is not one it understands (the hint is then skipped).
MAX_EXPANDED = 1000  # inputs one hint may name for one partition


def _iso_week_days(value: str, _: int) -> list[str] | None:
    found = re.fullmatch(r"(\d{4})-W(\d{2})", value)
    if found is None:
        return None
    try:
        monday = date.fromisocalendar(int(found.group(1)), int(found.group(2)), 1)
    except ValueError:
        return None
    return [(monday + timedelta(days=i)).isoformat() for i in range(7)]


def _month_days(value: str, _: int) -> list[str] | None:
    found = re.fullmatch(r"(\d{4})-(\d{2})", value)
    if found is None:
        return None
    try:
        first = date(int(found.group(1)), int(found.group(2)), 1)
    except ValueError:
        return None
    days, day = [], first
    while day.month == first.month:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def _trailing_days(value: str, count: int) -> list[str] | None:
    try:
        last = date.fromisoformat(value)
    except ValueError:
        return None
    if len(value) != 10:
        return None
    return [(last - timedelta(days=i)).isoformat() for i in range(count - 1, -1, -1)]


# name -> (function, takes an argument)
EXPANSIONS: dict[str, tuple[Callable[[str, int], list[str] | None], bool]] = {
    "iso_week_days": (_iso_week_days, False),  # YYYY-Www -> its 7 dates, Monday first
    "month_days": (_month_days, False),  # YYYY-MM -> every date of the month
    "trailing_days": (_trailing_days, True),  # YYYY-MM-DD, N -> the N days ending on it
}

_EXPANDED_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\|([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class HintPattern(PartitionPattern):
    """An input hint: a pattern (its expansions written out of the template, so that the
    loader's checks treat it as the plain pattern) and the expansions on its fields."""

    written: str = ""  # as written in databuild.toml
    expansions: tuple[tuple[str, str, int], ...] = ()  # (field, expansion, argument)

    @staticmethod
    def parse(text: str) -> PartitionPattern:
        """A hint as written: a plain pattern, or a ``HintPattern`` if it has expansions.
        InvalidPattern names what is wrong."""
        if not isinstance(text, str) or not text:
            raise InvalidPattern("an input hint must be a non-empty string")
        expansions: list[tuple[str, str, int]] = []

        def plain(found: re.Match[str]) -> str:
            name, spec = found.group(1), found.group(2).strip()
            fn, _, arg = spec.partition(":")
            known = EXPANSIONS.get(fn)
            if known is None:
                raise InvalidPattern(
                    f"input hint {text!r}: {{{name}|{spec}}} names no expansion DataBuild "
                    f"knows; the expansions are {', '.join(sorted(EXPANSIONS))}"
                )
            count = 0
            if known[1]:
                if not arg.isdigit() or not 1 <= int(arg) <= MAX_EXPANDED:
                    raise InvalidPattern(
                        f"input hint {text!r}: {fn} takes a number of days from 1 to "
                        f"{MAX_EXPANDED}, written {{{name}|{fn}:N}}"
                    )
                count = int(arg)
            elif arg:
                raise InvalidPattern(f"input hint {text!r}: {fn} takes no argument")
            expansions.append((name, fn, count))
            return "{" + name + "}"

        template = _EXPANDED_FIELD.sub(plain, text)
        pattern = PartitionPattern.compile(template)
        if not expansions:
            return pattern
        return HintPattern(pattern.template, pattern.regex, text, tuple(expansions))


def _choices(hint: PartitionPattern, values: dict[str, str]) -> list[dict[str, str]] | None:
    expansions = hint.expansions if isinstance(hint, HintPattern) else ()
    if not expansions:
        return [values]
    options: list[list[tuple[str, str]]] = []
    for name, fn, arg in expansions:
        expanded = EXPANSIONS[fn][0](values[name], arg)
        if expanded is None:
            return None
        options.append([(name, v) for v in expanded])
    combos = []
    for combo in itertools.islice(itertools.product(*options), MAX_EXPANDED):
        combos.append({**values, **dict(combo)})
    return combos


def resolve(job: JobSpec, ref: PartitionRef) -> tuple[PartitionRef, ...]:
    """The inputs ``job``'s hints name for its output ``ref``, in hint order, without
    repeats and without ``ref`` itself (a partition never waits on itself)."""
    if not job.inputs:
        return ()
    values: dict[str, str] | None = None
    for pattern in job.outputs:
        values = pattern.match(ref)
        if values is not None:
            break
    if values is None:
        return ()
    found: dict[PartitionRef, None] = {}
    for hint in job.inputs:
        if any(name not in values for name in hint.fields):
            continue
        for filled in _choices(hint, values) or ():
            try:
                dep = hint.format(**filled)
            except InvalidPartitionRef:
                continue
            if dep != ref:
                found[dep] = None
    return tuple(found)


def written(hint: PartitionPattern) -> str:
    """A hint as its file wrote it (with its expansions)."""
    return hint.written if isinstance(hint, HintPattern) else hint.template


def missing_fields(hint: PartitionPattern, output: PartitionPattern) -> tuple[str, ...]:
    """The fields ``hint`` names that ``output`` lacks (the loader refuses such a hint)."""
    own = set(output.fields)
    return tuple(name for name in hint.fields if name not in own)
