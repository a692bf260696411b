"""Snapshots of the folded state: a cache that makes a restart O(events since snapshot).

The Build Event Log stays the truth: a snapshot is the ``BuildState`` folded up to some
sequence, pickled to ``<state_dir>/snapshots/``, stamped with that sequence, a format
version and a fingerprint of the graph (routing depends on it). At start the controller
loads the newest usable snapshot and folds only the events after it; a snapshot that is
missing, unreadable, of another graph or format, or ahead of the log is ignored (full
replay), never trusted blindly.

Loading one is most of a large service's start (millions of records), so the tables are
written as columns with repeated values written once, and read back column-wise (see "the
encoding" below): at 10M events this loads in ~3 s what took ~7 s as pickled records, into
half the memory. The state read back equals the state written, field by field.

Writing happens in a forked child (copy-on-write, as Redis does it), so the service does
not stop while millions of records are pickled. Called by the controller only; the files
are local, written by this service for itself (pickle is not a format for untrusted data,
and nothing else writes there).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import math
import os
import pickle
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from databuild.core.model import GraphSpec
from databuild.core.pickling import constructor, field_values, positional_state
from databuild.core.state import BuildState

log = logging.getLogger("databuild.snapshots")

FORMAT = 11  # 2: records pickle positionally (core.pickling); 3: equal strings shared;
# 4: empty sets written as one empty frozenset; 5: the tables written as columns;
# 6: the fold's count of active wants; 7: unbuildable wants, orphans, observed needs;
# 8: partitions awaiting an external (and externals in the graph);
# 9: fair dispatch between roots (ready entries carry a rank; per-root next ranks);
# 10: upstream graphs' cursors (issue 9); 11: the compact fold (finished records in
# a history store, records carry their order, per-job run figures)
_KEEP = 2
_EMPTY_SET: frozenset[Any] = frozenset()
_TABLES = ("wants", "partitions", "runs")
# Field values that are immutable and compared by value: a column of them (of one type,
# possibly with None) may be written as its distinct values and an index into them.
_ATOMS = (str, int, float, bool, type(None), frozenset, Enum)


MIN_TAIL_AT_STOP = 10_000


def worth_writing_at_stop(tail_events: int, records: int) -> bool:
    """At a clean stop, is a snapshot worth its cost? Writing one costs in proportion to the
    state (~8 us per want, partition or run record: 29.7 s for the 3.8M records of a
    10M-event log), folding the tail at the next start in proportion to the tail (~6 us per
    event, read and decoded). So a stop writes one only when the tail since the last
    snapshot is long, both absolutely and against the state; otherwise the next start folds
    the tail (at most ``snapshot_every`` events: ~1 s), and the stop is not held up for
    half a minute."""
    return tail_events >= MIN_TAIL_AT_STOP and tail_events >= records


def graph_fingerprint(graph: GraphSpec) -> str:
    """Changes whenever the routing of refs to jobs or upstreams could change."""
    parts = [graph.name]
    for job in graph.jobs:
        parts.append(f"job {job.name} " + " ".join(p.template for p in job.outputs))
    for upstream in graph.upstreams:
        parts.append(
            f"upstream {upstream.name} " + " ".join(p.template for p in upstream.partitions)
        )
    for external in graph.externals:
        parts.append(
            f"external {external.name} " + " ".join(p.template for p in external.partitions)
        )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---- the encoding ----------------------------------------------------------------------
# A table (wants, partitions, runs: a dict of records of one class) is written as its keys,
# the record class, its field names and one column per field (``dataclasses.fields``, so a
# new field is never left out; a class whose fields are no longer the ones written makes
# the snapshot unusable, never silently defaulted). A column is one of:
#   (_VALUES, [value, ...])                       as they are (strings shared)
#   (_SAME, value, count)                         one immutable value in every row
#   (_INDEXED, [distinct value, ...], array)      immutable values that repeat: each row is
#                                                 an index into the distinct values
#   (_FLOATS, array("d"))                         floats that rarely repeat: 8 bytes each
#   (_RECORDS, cls, names, [column, ...])         records of one class (a want's ``Want``)
# Read back, the records are built column-wise by ``core.pickling.constructor`` (C-level
# ``map``, no per-record pickle opcodes or argument tuples kept in the unpickler's memo),
# repeated floats and ints become one object each, and the file is smaller.
_VALUES, _SAME, _INDEXED, _FLOATS, _RECORDS = range(5)

Column = tuple[Any, ...]


def _restore_column(column: Column) -> Sequence[Any]:
    kind = column[0]
    if kind == _VALUES:
        values: list[Any] = column[1]
        return values
    if kind == _SAME:
        count: int = column[2]
        return [column[1]] * count
    if kind == _INDEXED:
        distinct: list[Any] = column[1]
        return list(map(distinct.__getitem__, column[2]))
    if kind == _FLOATS:
        floats: array[float] = column[1]
        return floats.tolist()
    if kind == _RECORDS:
        return _restore_records(column[1], column[2], column[3])
    raise ValueError(f"unknown snapshot column kind {kind!r}")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _restore_records(cls: type, names: tuple[str, ...], columns: list[Column]) -> list[Any]:
    if names != _field_names(cls) or len(columns) != len(names):
        raise ValueError(f"{cls.__name__} had the fields {names} when this snapshot was written")
    return list(map(constructor(cls), *map(_restore_column, columns)))


def _restore_table(table: Any) -> dict[Any, Any]:
    if isinstance(table, dict):  # not records of one class (see _StatePickler._table)
        return table
    keys, cls, names, columns = table
    return dict(zip(keys, _restore_records(cls, names, columns), strict=True))


def _index_type(count: int) -> str:
    return "B" if count <= 0xFF else "H" if count <= 0xFFFF else "I"


class _StatePickler(pickle.Pickler):
    """Pickles the state with one object per distinct string among the records' values,
    and its tables as columns (above).

    The fold keeps the strings its events arrived with, so one partition ref or run id is
    often many equal objects (the dict key, the want's ref, the run's refs, ...), and
    pickle shares only identical objects. Read back, every copy was an object to allocate:
    sharing them makes the load faster and the loaded state smaller. Only records'
    values are rewritten; the live state is not touched. Empty sets become one empty
    frozenset, which the fold replaces with a set of the record's own before it adds to it
    (``PartitionRecord``)."""

    def __init__(self, file: BinaryIO, state: BuildState) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._strings: dict[str, str] = {}
        tables = (state.wants.hot, state.partitions, state.runs.hot)  # what is pickled
        for table in tables:
            for key in table:  # the keys are pickled first: records share them
                self._strings.setdefault(key, key)

    def state_parts(self, state: BuildState) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the state's other attributes, its tables encoded); the graph is left out (the
        store that loads it sets its own, of the same fingerprint)."""
        attrs = dict(state.__getstate__())
        del attrs["graph"]
        tables = {name: self._table(attrs.pop(name)) for name in _TABLES}
        return attrs, tables

    def reducer_override(self, obj: Any) -> Any:
        reduced = positional_state(obj)
        if reduced is None:
            return NotImplemented
        restore, args = reduced
        return restore, tuple(map(self._shared, args))

    def _shared(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self._strings.setdefault(value, value)
        if kind is set and not value:
            return _EMPTY_SET
        if kind is tuple or kind is list or kind is set:
            return kind(map(self._shared, value))
        return value

    def _table(self, table: dict[Any, Any]) -> Any:
        classes = set(map(type, table.values()))
        if len(classes) != 1:  # empty, or (never written so) records of mixed classes
            return table
        (cls,) = classes
        if field_values(cls) is None:
            return table
        keys = [self._shared(key) for key in table]
        return keys, cls, _field_names(cls), self._records(cls, list(table.values()))

    def _records(self, cls: type, records: list[Any]) -> list[Column]:
        values = field_values(cls)
        assert values is not None
        return [self._column(column) for column in zip(*map(values, records), strict=True)]

    def _column(self, column: tuple[Any, ...]) -> Column:
        kinds = set(map(type, column))
        (first, *_) = kinds
        if len(kinds) == 1 and field_values(first) is not None:
            return (_RECORDS, first, _field_names(first), self._records(first, list(column)))
        if all(issubclass(k, _ATOMS) for k in kinds) and (
            len(kinds) == 1 or (len(kinds) == 2 and type(None) in kinds)
        ):
            distinct = list(dict.fromkeys(column))
            if len(distinct) == 1 and _exact(distinct, column):
                return (_SAME, self._shared(distinct[0]), len(column))
            if len(distinct) * 4 <= len(column) and _exact(distinct, column):
                index = {value: i for i, value in enumerate(distinct)}
                positions = array(_index_type(len(distinct)), map(index.__getitem__, column))
                return (_INDEXED, [self._shared(v) for v in distinct], positions)
            if kinds == {float}:
                return (_FLOATS, array("d", column))
        return (_VALUES, [self._shared(v) for v in column])


def _exact(distinct: list[Any], column: tuple[Any, ...]) -> bool:
    """False if indexing would change a value: 0.0 and -0.0 are equal, so one of them
    would stand for both (every other atom equal to another of its type is the same)."""
    if not any(type(v) is float and v == 0.0 for v in distinct):
        return True
    signs = {math.copysign(1.0, v) for v in column if type(v) is float and v == 0.0}
    return len(signs) == 1


def _restore_state(attrs: dict[str, Any], tables: dict[str, Any], graph: GraphSpec) -> BuildState:
    state = BuildState.__new__(BuildState)
    state.__setstate__(
        {**attrs, **{name: _restore_table(table) for name, table in tables.items()}, "graph": graph}
    )
    return state


@dataclass(frozen=True)
class Snapshot:
    sequence: int
    state: BuildState


class SnapshotStore:
    def __init__(self, directory: Path, graph: GraphSpec) -> None:
        self.directory = directory
        self.graph = graph
        self.fingerprint = graph_fingerprint(graph)

    def _path(self, sequence: int) -> Path:
        return self.directory / f"state-{self.fingerprint}-{sequence:012d}.pickle"

    def _candidates(self) -> list[Path]:
        try:
            found = sorted(self.directory.glob(f"state-{self.fingerprint}-*.pickle"))
        except OSError:
            return []
        return list(reversed(found))

    def load(self, log_last_sequence: int) -> Snapshot | None:
        """The newest snapshot this graph can use, or None (then replay everything).

        A snapshot used is moved out of the cyclic collector's generations (``gc.freeze``),
        as the controller does with the whole state once it has started."""
        # Unpickling allocates millions of container objects and keeps every one: with the
        # collector on, it ran thousands of times during the load and walked them again and
        # again, for nothing (more than half of the load time). Frozen before the collector
        # is back on, they are never walked again: not even once by the first collection.
        enabled = gc.isenabled()
        gc.disable()
        try:
            snapshot = self._load_newest(log_last_sequence)
            if snapshot is not None:
                gc.freeze()
            return snapshot
        finally:
            if enabled:
                gc.enable()

    def _load_newest(self, log_last_sequence: int) -> Snapshot | None:
        for path in self._candidates():
            named = path.stem.rsplit("-", 1)[-1]
            if named.isdigit() and int(named) > log_last_sequence:
                # known from its name, without reading it (at 10M events a load is seconds)
                log.warning("ignoring snapshot %s: it is ahead of the log", path.name)
                continue
            try:
                with path.open("rb") as handle:
                    header = pickle.load(handle)
                    if header != (FORMAT, self.fingerprint):
                        continue
                    sequence, attrs, tables = pickle.load(handle)
                if sequence > log_last_sequence:
                    log.warning("ignoring snapshot %s: it is ahead of the log", path.name)
                    continue
                state = _restore_state(attrs, tables, self.graph)
            except Exception as exc:  # a damaged cache is skipped, never fatal
                log.warning("ignoring snapshot %s: %s", path.name, exc)
                continue
            return Snapshot(sequence, state)
        return None

    def write_in_background(self, state: BuildState) -> int | None:
        """Fork; the child pickles ``state`` and exits. Returns the child's pid (reap it
        with ``reap``), or None where fork is not available."""
        if not hasattr(os, "fork"):
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the child: touch nothing but the state and this file, then leave at once
            self._write(state)
            code = 0
        finally:
            os._exit(code)

    def write(self, state: BuildState) -> None:
        """In this process (at a clean stop, when the loop no longer changes state)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(state)

    def _write(self, state: BuildState) -> None:
        sequence = state.last_sequence
        final = self._path(sequence)
        tmp = final.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as handle:
            pickle.dump((FORMAT, self.fingerprint), handle, protocol=pickle.HIGHEST_PROTOCOL)
            pickler = _StatePickler(handle, state)
            pickler.dump((sequence, *pickler.state_parts(state)))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(final)
        for old in self._candidates()[_KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()

    @staticmethod
    def reap(pid: int) -> bool | None:
        """None while the child runs; True if it wrote the snapshot."""
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if done == 0:
            return None
        return os.waitstatus_to_exitcode(status) == 0
