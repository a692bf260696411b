"""Snapshots of the folded state: a cache that makes a restart O(events since snapshot).

The Build Event Log stays the truth: a snapshot is the ``BuildState`` folded up to some
sequence, pickled to ``<state_dir>/snapshots/``, stamped with that sequence, a format
version and a fingerprint of the graph (routing depends on it). At start the controller
loads the newest usable snapshot and folds only the events after it; a snapshot that is
missing, unreadable, of another graph or format, or ahead of the log is ignored (full
replay), never trusted blindly.

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
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from databuild.core.model import GraphSpec
from databuild.core.pickling import positional_state
from databuild.core.state import BuildState

log = logging.getLogger("databuild.snapshots")

FORMAT = 4  # 2: records pickle positionally (core.pickling); 3: equal strings shared;
# 4: empty sets written as one empty frozenset
_KEEP = 2
_EMPTY_SET: frozenset[Any] = frozenset()


def graph_fingerprint(graph: GraphSpec) -> str:
    """Changes whenever the routing of refs to jobs or upstreams could change."""
    parts = [graph.name]
    for job in graph.jobs:
        parts.append(f"job {job.name} " + " ".join(p.template for p in job.outputs))
    for upstream in graph.upstreams:
        parts.append(
            f"upstream {upstream.name} " + " ".join(p.template for p in upstream.partitions)
        )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class _StatePickler(pickle.Pickler):
    """Pickles the state with one object per distinct string among the records' values.

    The fold keeps the strings its events arrived with, so one partition ref or run id is
    often many equal objects (the dict key, the want's ref, the run's refs, ...), and
    pickle shares only identical objects. Read back, every copy was an object to allocate:
    sharing them makes the load faster and the loaded state smaller. Only records'
    values are rewritten (``core.pickling.positional_state``); the live state is not
    touched. Empty sets become one empty frozenset, which the fold replaces with a set of
    the record's own before it adds to it (``PartitionRecord``)."""

    def __init__(self, file: BinaryIO, state: BuildState) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._strings: dict[str, str] = {}
        for table in (state.wants, state.partitions, state.runs):
            for key in table:  # the keys are pickled first: records then share them
                self._strings.setdefault(key, key)

    def reducer_override(self, obj: Any) -> Any:
        reduced = positional_state(obj)
        if reduced is None:
            return NotImplemented
        cls, values = reduced
        return cls, tuple(map(self._shared, values))

    def _shared(self, value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return self._strings.setdefault(value, value)
        if kind is set and not value:
            return _EMPTY_SET
        if kind is tuple or kind is list or kind is set:
            return kind(map(self._shared, value))
        return value


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
            try:
                with path.open("rb") as handle:
                    header = pickle.load(handle)
                    if header != (FORMAT, self.fingerprint):
                        continue
                    sequence, state = pickle.load(handle)
            except Exception as exc:  # a damaged cache is skipped, never fatal
                log.warning("ignoring snapshot %s: %s", path.name, exc)
                continue
            if not isinstance(state, BuildState) or sequence > log_last_sequence:
                log.warning("ignoring snapshot %s: it is ahead of the log", path.name)
                continue
            state.graph = self.graph
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
            _StatePickler(handle, state).dump((sequence, state))
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
