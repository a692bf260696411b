"""The Build Event Log port: the one interface every storage backend implements.

The BEL is an append-only sequence of events with a global, gap-free sequence number from
1. Writers append batches in one transaction; readers tail it with ``read(after=...)``.
One service at a time may own a log (``acquire_writer``); the lock is advisory for
appends, which stay safe under concurrent writers because each adapter serialises them.
A ``SharedEventLog`` (PostgreSQL) is one several services share: one is elected writer
(leader), the others wait for the writer role and follow its commits (standbys); appends of
a writer that a newer one replaced are refused (fencing, ``LeadershipLost``).

Called by the runtime (appends per reconcile step), the service and the streaming feed
(reads, from other threads than the writer). Adapters live beside it (``memory``,
``sqlite``, ``postgres``); this module must not import any driver or do I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from databuild.core.errors import InvalidInput
from databuild.core.events import EVENT_TYPE_NAMES, Event, EventPayload

DEFAULT_READ_LIMIT = 10_000


class BuildEventLog(ABC):
    """Append-only event storage. Every method raises only ``DataBuildError`` subclasses:
    ``StorageError`` when storage fails, ``InvalidInput`` for bad arguments or payloads."""

    # True where ``append`` is a transaction on a local file (no network, no lock held by
    # anyone else): fast enough that the controller runs it on its event loop while it
    # stays fast (``Controller._append``), instead of paying two thread hand-offs a step.
    local_append: bool = False

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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class WriterRecord:
    """Who writes a shared log: its owner string, the HTTP URL it advertises for writes
    (empty: none), and its generation (bumped by each new writer; 0: never had one)."""

    owner: str
    url: str
    generation: int


class CommitListener(ABC):
    """Wakes a follower when the writer of a shared log commits; one per follower thread."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block until a commit is announced (True) or ``timeout`` passes (False). True
        also after the listener had to reconnect, since announcements may have been lost."""

    @abstractmethod
    def close(self) -> None:
        """Stop listening; idempotent."""


class SharedEventLog(BuildEventLog):
    """A log several services share. The writer role is a lease on a live database
    session: it ends when the holder dies, or stops answering for ``lease_seconds``."""

    lease_seconds: float
    advertise_url: str
    # Called (from a background thread) once this object has lost the writer role for good.
    on_writer_lost: Callable[[str], None] | None

    @abstractmethod
    def wait_for_writer(self, owner: str) -> bool:
        """Block until this object holds the writer role (True), as ``acquire_writer``
        does but waiting instead of raising ``LogLocked``; False if ``stop_waiting``."""

    @abstractmethod
    def stop_waiting(self) -> None:
        """Make a ``wait_for_writer`` in another thread return False soon. Idempotent."""

    @abstractmethod
    def confirm_writer(self) -> None:
        """Raise ``LeadershipLost`` if this object was the writer and a newer one is
        recorded now (checked before acting on what was appended: starting runs)."""

    @abstractmethod
    def current_writer(self) -> WriterRecord | None:
        """The recorded writer (None: no writer has ever been recorded)."""

    @abstractmethod
    def listen(self) -> CommitListener:
        """A new listener for the writer's commits."""


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
