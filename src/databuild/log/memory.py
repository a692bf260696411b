"""``InMemoryEventLog``: the Build Event Log fake, for tests and ``memory:`` URLs.

It behaves like the SQL adapters through the port: payloads are encoded on append (so an
unencodable batch fails whole, as it would in a database) and decoded on read, sequences
are consecutive from 1, and the writer lock is exclusive between log objects that share
one ``InMemoryStore`` (pass ``store=`` to open "the same log" twice). Nothing survives the
process.

Called by tests of every layer above the log and by ``open_log("memory:")``. Must not do
I/O; thread-safe through one lock per store.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from databuild.codec import PAYLOAD_VERSION, decode_payload, encode_payload
from databuild.core.errors import LogLocked, StorageError
from databuild.core.events import Event, EventPayload
from databuild.log.port import DEFAULT_READ_LIMIT, BuildEventLog, checked_read_args


@dataclass(frozen=True, slots=True)
class _Row:
    sequence: int
    timestamp: float
    type: str
    version: int
    payload: bytes


@dataclass(slots=True)
class InMemoryStore:
    """The storage behind one in-memory log; share it to open the log more than once."""

    rows: list[_Row] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writer: object | None = None  # the log object holding the writer lock
    writer_owner: str = ""


class InMemoryEventLog(BuildEventLog):
    def __init__(self, store: InMemoryStore | None = None) -> None:
        self.store = store if store is not None else InMemoryStore()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the in-memory Build Event Log is closed")

    def append(self, payloads: Sequence[EventPayload], timestamp: float) -> list[Event]:
        self._check_open()
        encoded = [encode_payload(p) for p in payloads]
        with self.store.lock:
            first = len(self.store.rows) + 1
            self.store.rows.extend(
                _Row(first + i, timestamp, type_name, PAYLOAD_VERSION, data)
                for i, (type_name, data) in enumerate(encoded)
            )
        return [Event(first + i, timestamp, p) for i, p in enumerate(payloads)]

    def read(
        self,
        after: int = 0,
        limit: int = DEFAULT_READ_LIMIT,
        types: Collection[str] | None = None,
    ) -> list[Event]:
        self._check_open()
        wanted = checked_read_args(limit, types)
        with self.store.lock:
            # Sequences are list positions + 1, so the slice starts right after ``after``.
            rows = self.store.rows[max(after, 0) :]
        events: list[Event] = []
        for row in rows:
            if wanted is None or row.type in wanted:
                payload = decode_payload(row.type, row.payload, row.version)
                events.append(Event(row.sequence, row.timestamp, payload))
                if len(events) == limit:
                    break
        return events

    def last_sequence(self) -> int:
        self._check_open()
        with self.store.lock:
            return len(self.store.rows)

    def acquire_writer(self, owner: str) -> None:
        self._check_open()
        with self.store.lock:
            if self.store.writer is not None and self.store.writer is not self:
                raise LogLocked(
                    f"the in-memory Build Event Log is already in use by "
                    f"{self.store.writer_owner!r}"
                )
            self.store.writer = self
            self.store.writer_owner = owner

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.store.lock:
            if self.store.writer is self:
                self.store.writer = None
                self.store.writer_owner = ""
