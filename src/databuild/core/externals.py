"""External partitions: the pure rules for partitions no job builds.

An ``[externals.NAME]`` table declares partitions that come from outside the graph (files a
vendor lands, tables another team writes). A want on one, or a job's missing input that is
one, does not fail as unbuildable: its partition waits until it is declared live, by hand
(``databuild partition live``, ``POST /api/v1/partitions/live``) or by the external's
optional check command, which the service runs on the refs that wait (``runtime.externals``).

Called by the reconciler (is this ref external, which external), by the SLA blame (the
text a waiting want shows), by the check runner (which refs to ask about, how long to wait
before asking again, what the command's answer means) and by the views. Pure: no I/O, no
clock; the runner owns the subprocess and the schedule.

The check protocol (docs/config.md, "External partitions"): the command gets the refs it
is asked about on stdin, one per line, and prints on stdout the ones that exist, one per
line, then exits 0. A line naming a ref it was not asked about is ignored (and logged); a
non-zero exit, a timeout or too much output is a failed check, retried later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from databuild.core.errors import InvalidInput
from databuild.core.model import ExternalSpec, GraphSpec
from databuild.core.refs import PartitionRef
from databuild.core.state import BuildState

MAX_CHECK_BATCH = 1000
"""At most this many refs are asked about in one run of a check command."""

MAX_CHECK_OUTPUT_BYTES = 1 << 20
"""A check command printing more than this on stdout has failed (1 MiB)."""


def external_of(graph: GraphSpec, ref: PartitionRef) -> ExternalSpec | None:
    """The external that provides ``ref``, if one does (and nothing else claims it)."""
    return graph.route(ref).external


def waiting_text(external: str, ref: PartitionRef) -> str:
    """How a want held up by an external partition says so."""
    return f"waiting on external {external}: {ref}"


def check_live_refs(graph: GraphSpec, refs: Sequence[PartitionRef]) -> list[str]:
    """The external's name of each ref declared live by hand; InvalidInput naming the first
    ref that is not an external's, so that nothing is made live then."""
    if not refs:
        raise InvalidInput("name at least one partition ref to declare live")
    names: list[str] = []
    for ref in refs:
        route = graph.route(ref)
        if route.external is None:
            if route.job is not None:
                owner = f"job {route.job.name!r} builds it"
            elif route.upstream is not None:
                owner = f"upstream graph {route.upstream.name!r} provides it"
            else:
                owner = route.problem
            declared = ", ".join(x.name for x in graph.externals) or "none"
            raise InvalidInput(
                f"{ref!r} is not an external partition ({owner}); only "
                f"partitions of an [externals.NAME] table can be declared live "
                f"(externals: {declared})"
            )
        names.append(route.external.name)
    return names


def waiting_refs(state: BuildState, name: str) -> list[PartitionRef]:
    """The refs of external ``name`` that some active want waits on and that are not live,
    sorted: what its check command is asked about."""
    refs = state.awaiting_external.get(name, ())
    out = []
    for ref in refs:
        part = state.partitions.get(ref)
        if part is not None and part.active_wants and not state.is_live(ref):
            out.append(ref)
    out.sort()
    return out


def check_delay(external: ExternalSpec, fruitless: int) -> float:
    """Seconds until the next check: the interval after a check that made something live
    (``fruitless`` 0) or the first that did not; doubled for each further one in a row
    that made nothing live (or failed), capped at the maximum."""
    delay = external.check_interval_seconds * 2.0 ** min(fruitless, 32)
    return min(delay, external.check_interval_max_seconds)


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """What a check command's stdout says: the asked refs that exist, and stray lines."""

    found: tuple[PartitionRef, ...]
    unknown: tuple[str, ...]


def parse_check_output(asked: Iterable[PartitionRef], stdout: str) -> CheckAnswer:
    """Lines of stdout (blank ones skipped, surrounding space stripped) that name an asked
    ref are found; any other line is unknown."""
    wanted = set(asked)
    found: dict[PartitionRef, None] = {}
    unknown: list[str] = []
    for line in stdout.splitlines():
        text = line.strip()
        if not text:
            continue
        if text in wanted:
            found[PartitionRef(text)] = None
        else:
            unknown.append(text)
    return CheckAnswer(tuple(found), tuple(unknown))
