"""The compact fold: finished records leave memory for a history store (a port).

A want that reached a terminal status and a run that finished are history: the fold
rarely touches them again (a reopen, an SLA missed late, a run's late event on a canceled
want's timeline), while at millions of events they are most of the state. ``RecordMap``
holds a table of the fold (wants, runs): the *hot* records in memory, finished ones
*pending* until the shell flushes them, and the rest in a ``History``. Lookups go hot,
pending, history, in that order; the fold marks a record it changes out of history
(``for_update``), so it goes back to the store as a new version; a reopened want comes
back to memory (``revive``).

Each stored row carries the sequence of the event that last changed the record (its
*version*): a service that restarts from a snapshot at sequence S reads only the versions
up to S while it folds the log's tail again (``replay_from``), which writes the later
ones again, the same. So the store is a cache of the log, like the snapshot, and never
the truth.

Scans (the API's lists) merge the hot records with the store's, in the order the records
were made (``order``, a counter per table), with the same filter applied on both sides
(``RecordFilter``, matched against ``describe``). Pure: the store is a port; the fake
here (``MemoryHistory``) copies records through pickle, as a real store does, so a
change the fold forgot to mark is lost in tests too. ``runtime.history`` is the SQLite one.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

K = TypeVar("K", bound=str)
R = TypeVar("R")

WANTS = "w"
RUNS = "r"


@dataclass(frozen=True, slots=True)
class Described:
    """What a filter can test of a record, without the record: a store's columns."""

    status: str
    ref: str = ""  # a want's partition
    root: str = ""  # a want's root want
    tag: str = ""  # a want's source, a run's job
    flag: bool = False  # a run that reported missing inputs
    # (input, output) pairs a run reported missing: lineage, asked by input (invalidation)
    edges: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RecordFilter:
    statuses: frozenset[str] | None = None
    prefix: str | None = None
    root: str | None = None
    tag: str | None = None
    flag: bool | None = None
    refs: frozenset[str] | None = None

    def matches(self, d: Described) -> bool:
        return (
            (self.statuses is None or d.status in self.statuses)
            and (self.prefix is None or d.ref.startswith(self.prefix))
            and (self.root is None or d.root == self.root)
            and (self.tag is None or d.tag == self.tag)
            and (self.flag is None or d.flag == self.flag)
            and (self.refs is None or d.ref in self.refs)
        )


ANY = RecordFilter()


@dataclass(frozen=True, slots=True)
class Row:
    """A record on its way to the store."""

    kind: str
    key: str
    version: int
    order: int
    described: Described
    record: Any


class History(Protocol):
    """Where finished records are kept (the port). Not thread-safe on its own terms: the
    service's loop is its only user, except reads the API makes on that same loop."""

    persistent: bool  # False: kept in the process (and in a snapshot of the state)

    def get(self, kind: str, key: str) -> Any | None:
        """The newest version of a record, or None."""

    def put(self, rows: list[Row]) -> None:
        """Store new versions (one transaction)."""

    def dependents_of(self, refs: list[str]) -> dict[str, set[str]]:
        """input -> the outputs whose stored records reported it missing (``edges``)."""

    def scan(
        self, kind: str, where: RecordFilter, after: int | None, descending: bool, limit: int
    ) -> list[tuple[int, Any]]:
        """Up to ``limit`` (order, record) of the newest versions matching ``where``, by
        order (newest first if ``descending``), strictly past order ``after``."""

    def replay_from(self, sequence: int, log_end: int) -> None:
        """A restart from a snapshot at ``sequence`` (0: none) of a log ending at
        ``log_end``: versions past the log's end are dropped, and until ``replay_done``
        reads see the versions up to ``sequence`` only (the replay of the tail writes the
        later ones again, the same)."""

    def replay_done(self) -> None: ...

    def mark(self, sequence: int) -> None:
        """Everything the fold finished up to ``sequence`` is stored (before a snapshot)."""

    def complete_through(self) -> int:
        """The last ``mark`` (lowered by ``replay_from``): a snapshot after it needs
        records this store does not have, and is not used."""

    def close(self) -> None: ...


class MemoryHistory:
    """The fake: rows kept pickled, so a record read back is a copy, as from a store."""

    persistent = False

    def __init__(self) -> None:
        # kind -> key -> versions, oldest first: (version, order, described, pickled record)
        self._rows: dict[str, dict[str, list[tuple[int, int, Described, bytes]]]] = {}
        self._through = 0
        self._as_of: int | None = None

    def get(self, kind: str, key: str) -> Any | None:
        versions = self._rows.get(kind, {}).get(key, [])
        if self._as_of is not None:
            versions = [v for v in versions if v[0] <= self._as_of]
        return pickle.loads(versions[-1][3]) if versions else None

    def dependents_of(self, refs: list[str]) -> dict[str, set[str]]:
        wanted, found = set(refs), dict[str, set[str]]()
        for table in self._rows.values():
            for versions in table.values():
                for dep, out in versions[-1][2].edges:
                    if dep in wanted:
                        found.setdefault(dep, set()).add(out)
        return found

    def put(self, rows: list[Row]) -> None:
        for row in rows:
            body = pickle.dumps(row.record, protocol=pickle.HIGHEST_PROTOCOL)
            versions = self._rows.setdefault(row.kind, {}).setdefault(row.key, [])
            versions[:] = [v for v in versions if v[0] != row.version]  # a replay's rewrite
            versions.append((row.version, row.order, row.described, body))
            versions.sort(key=lambda v: v[0])

    def scan(
        self, kind: str, where: RecordFilter, after: int | None, descending: bool, limit: int
    ) -> list[tuple[int, Any]]:
        found = [
            (versions[-1][1], versions[-1][3])
            for versions in self._rows.get(kind, {}).values()
            if where.matches(versions[-1][2])
            and (
                after is None
                or (versions[-1][1] < after if descending else versions[-1][1] > after)
            )
        ]
        found.sort(reverse=descending)
        return [(order, pickle.loads(body)) for order, body in found[:limit]]

    def mark(self, sequence: int) -> None:
        self._through = sequence

    def complete_through(self) -> int:
        return self._through

    def replay_from(self, sequence: int, log_end: int) -> None:
        self._through = min(self._through, sequence)
        self._as_of = sequence
        if sequence <= 0:  # a full replay writes everything: start empty
            self._rows = {}
        for table in self._rows.values():
            for key in list(table):
                kept = [v for v in table[key] if v[0] <= log_end]
                if kept:
                    table[key] = kept
                else:
                    del table[key]

    def replay_done(self) -> None:
        self._as_of = None

    def close(self) -> None:
        pass


class DetachedHistory:
    """A state read back from a snapshot, before the service gives it its store."""

    persistent = True

    def _fail(self) -> Any:
        raise RuntimeError("this state's history store is not attached (attach_history)")

    def get(self, kind: str, key: str) -> Any | None:
        return self._fail()

    def put(self, rows: list[Row]) -> None:
        self._fail()

    def dependents_of(self, refs: list[str]) -> dict[str, set[str]]:
        return self._fail()  # type: ignore[no-any-return]

    def scan(
        self, kind: str, where: RecordFilter, after: int | None, descending: bool, limit: int
    ) -> list[tuple[int, Any]]:
        return self._fail()  # type: ignore[no-any-return]

    def replay_from(self, sequence: int, log_end: int) -> None:
        self._fail()

    def replay_done(self) -> None:
        self._fail()

    def mark(self, sequence: int) -> None:
        self._fail()

    def complete_through(self) -> int:
        return self._fail()  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


class RecordMap(Generic[K, R]):
    """One table of the fold: hot records in memory, finished ones in a ``History``.

    Reads like a mapping (``[]``, ``get``, ``in``, ``len`` counts every record ever
    made); the fold adds with ``add``, moves a finished record out with ``retire``, marks
    one it changes with ``for_update`` and brings one back with ``revive``. Records carry
    their ``order`` (set by ``add``); ``describe`` gives a record's filterable columns."""

    def __init__(
        self,
        kind: str,
        history: History,
        describe: Callable[[Any], Described],
        key_of: Callable[[Any], K],
        active_statuses: frozenset[str] = frozenset(),
    ) -> None:
        self.kind = kind
        # statuses only records in memory have (the store holds finished ones): a scan for
        # those alone does not ask the store
        self.active_statuses = active_statuses
        self.history = history
        self.describe = describe
        self.key_of = key_of
        self.hot: dict[K, R] = {}
        self.pending: dict[K, tuple[R, int]] = {}  # finished or changed: (record, version)
        self.total = 0
        self.absent: set[K] = set()  # keys known not to be in history (``expect_new``)

    # ---- reading -------------------------------------------------------------------
    def get(self, key: K, default: R | None = None) -> R | None:
        record = self.hot.get(key)
        if record is not None:
            return record
        held = self.pending.get(key)
        if held is not None:
            return held[0]
        if key in self.absent:
            return default
        found: R | None = self.history.get(self.kind, key)
        return default if found is None else found

    def __getitem__(self, key: K) -> R:
        record = self.get(key)
        if record is None:
            raise KeyError(key)
        return record

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.total

    def values(self) -> list[R]:
        """Every record, in order made: reads all of history (tests, tools; not a hot path)."""
        return list(self.scan())

    def items(self) -> list[tuple[K, R]]:
        return [(self.key_of(r), r) for r in self.scan()]

    def keys(self) -> list[K]:
        return [self.key_of(r) for r in self.scan()]

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def in_memory(self) -> Iterator[R]:
        """The hot and pending records (every record not finished is hot)."""
        yield from self.hot.values()
        for record, _ in self.pending.values():
            yield record

    def scan(
        self,
        where: RecordFilter = ANY,
        *,
        after: K | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> Iterator[R]:
        """Records matching ``where`` in the order they were made (newest first if
        ``descending``), strictly after the record ``after`` (a cursor; KeyError if it is
        none of this table's). Lazy: the store is read a page at a time."""
        start: int | None = None
        if after is not None:
            start = _order(self[after])
        memory = sorted(
            (
                (_order(r), r)
                for r in self.in_memory()
                if where.matches(self.describe(r))
                and (start is None or (_order(r) < start if descending else _order(r) > start))
            ),
            key=lambda pair: pair[0],
            reverse=descending,
        )
        stored = (
            iter(())
            if where.statuses is not None and where.statuses <= self.active_statuses
            else self._stored(where, start, descending)
        )
        merged = heapq.merge(memory, stored, key=lambda p: p[0], reverse=descending)
        for _, record in itertools.islice(merged, limit):
            yield record

    def _stored(
        self, where: RecordFilter, start: int | None, descending: bool
    ) -> Iterator[tuple[int, R]]:
        page = 256
        while True:
            rows = self.history.scan(self.kind, where, start, descending, page)
            for order, record in rows:
                key = self.key_of(record)
                if key not in self.hot and key not in self.pending:  # else a stale version
                    yield order, record
            if len(rows) < page:
                return
            start = rows[-1][0]
            page = min(page * 4, 16384)

    # ---- the fold's changes ----------------------------------------------------------
    def add(self, key: K, record: R) -> None:
        self.total += 1
        record.order = self.total  # type: ignore[attr-defined]
        self.hot[key] = record

    def retire(self, key: K, version: int) -> None:
        """A record finished: out of memory at the next flush."""
        record = self.hot.pop(key, None)
        if record is not None:
            self.pending[key] = (record, version)

    def for_update(self, key: K, version: int) -> R | None:
        """The record, to be changed by the event at ``version``; one read from the store
        goes back to it as a new version."""
        record = self.hot.get(key)
        if record is not None:
            return record
        held = self.pending.get(key)
        if held is not None:
            self.pending[key] = (held[0], version)
            return held[0]
        found: R | None = self.history.get(self.kind, key)
        if found is not None:
            self.pending[key] = (found, version)
        return found

    def revive(self, key: K, record: R) -> None:
        """A finished record (read with ``get``) active again: back in memory. Its stored
        versions stay, and are passed over while it is here."""
        self.pending.pop(key, None)
        self.hot[key] = record

    def take_pending(self) -> list[Row]:
        rows = [
            Row(self.kind, key, version, _order(record), self.describe(record), record)
            for key, (record, version) in self.pending.items()
        ]
        self.pending = {}
        return rows

    # ---- snapshots -------------------------------------------------------------------
    def attach(self, history: History) -> None:
        self.history = history


def _order(record: Any) -> int:
    order: int = record.order
    return order


def merged_items(table: RecordMap[K, R]) -> Iterable[tuple[K, R]]:
    """Every record of a table with its key (for tests and comparisons: reads it all)."""
    for record in table.scan():
        yield table.key_of(record), record
