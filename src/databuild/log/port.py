"""The Build Event Log port: the one interface every storage backend implements.

The BEL is an append-only sequence of events with a global, gap-free sequence number from
1. Writers append batches in one transaction; readers tail it with ``read(after=...)``.
One service at a time may own a log (``acquire_writer``); the lock is advisory for
appends, which stay safe under concurrent writers because each adapter serialises them.

Called by the runtime (appends per reconcile step), the service and the streaming feed
(reads, from other threads than the writer). Adapters live beside it (``memory``,
``sqlite``, ``postgres``); this module must not import any driver or do I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from types import TracebackType

from databuild.core.errors import InvalidInput
from databuild.core.events import EVENT_TYPE_NAMES, Event, EventPayload

DEFAULT_READ_LIMIT = 10_000


class BuildEventLog(ABC):
    """Append-only event storage. Every method raises only ``DataBuildError`` subclasses:
    ``StorageError`` when storage fails, ``InvalidInput`` for bad arguments or payloads."""

    @abstractmethod
    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        """Record ``payloads`` in one transaction, all or none, with consecutive sequence
        numbers after the current last one; durable when it returns. ``[]`` for no input."""

    @abstractmethod
    def read(
        self,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
        types: Collection[str] | None = None,
    ) -> list[Event]:
        """Up to ``limit`` events with sequence > ``after``, ascending; only the event
        types named in ``types`` when given (an empty collection matches nothing)."""

    @abstractmethod
    def last_sequence(self) -> int:
        """The sequence of the newest event, 0 for an empty log."""

    @abstractmethod
    def acquire_writer(self, owner: str) -> None:
        """Become the one writer of this log until ``close``. Raise ``LogLocked`` naming the
        holder's ``owner`` string when another log object or process holds it."""

    @abstractmethod
    def close(self) -> None:
        """Release the writer lock and every connection. Idempotent."""

    def __enter__(self) -> BuildEventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def checked_read_args(limit: int, types: Collection[str] | None) -> frozenset[str] | None:
    """Validate ``read`` arguments for the adapters; returns the type filter as a set."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"read limit must be a positive integer; got {limit!r}")
    if types is None:
        return None
    if isinstance(types, str):
        raise InvalidInput(f"event types must be a collection of names, not the string {types!r}")
    wanted = frozenset(types)
    unknown = sorted(wanted - EVENT_TYPE_NAMES)
    if unknown:
        raise InvalidInput(
            f"unknown event type(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(EVENT_TYPE_NAMES))}"
        )
    return wanted
