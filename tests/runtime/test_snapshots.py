"""Snapshots are a cache: starting from one gives exactly the state a full replay gives,
and a bad one (damaged, of another graph, ahead of the log) is ignored, never trusted."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from databuild.core.events import MissingDeps
from databuild.core.model import GraphSpec, JobSpec, Want, WantRequest, WantSource
from databuild.core.outcomes import RunFinishedReport, RunMissingDeps, RunSucceeded
from databuild.core.reconcile import Reconciler, StartRun
from databuild.core.refs import PartitionPattern, parse_ref
from databuild.core.state import BuildState, canonical
from databuild.executors.fake import FakeExecutor
from databuild.log.sqlite import SqliteEventLog
from databuild.runtime.clock import FakeClock
from databuild.runtime.controller import Controller
from databuild.runtime.snapshots import FORMAT, SnapshotStore, worth_writing_at_stop

GRAPH = GraphSpec(
    "snap",
    (
        JobSpec("up", (PartitionPattern.compile("up/{n}"),), ("true",), max_batch=4),
        JobSpec("down", (PartitionPattern.compile("down/{n}"),), ("true",), max_batch=4),
    ),
)
OTHER = GraphSpec("snap", (JobSpec("up", (PartitionPattern.compile("up/{n}"),), ("true",)),))


def fill_log(path: Path, wants: int = 30) -> SqliteEventLog:
    """A realistic log: wants, missing deps, children, successes; some left in flight."""
    log = SqliteEventLog(path)
    rec = Reconciler(GRAPH)
    now = 1_000.0
    for i in range(wants):
        rec.request_want(WantRequest(parse_ref(f"down/{i}"), 0, WantSource.API), now)
    for _ in range(6):
        rec.tick(now, 3)
        events, effects = rec.take()
        log.append([e.payload for e in events], now)
        for effect in effects:
            assert isinstance(effect, StartRun)
            if effect.job_name == "down" and effect.job_run_id.endswith(("1", "3", "5", "7")):
                outcome: RunMissingDeps | RunSucceeded = RunMissingDeps(
                    tuple(
                        MissingDeps(ref, (parse_ref(ref.replace("down", "up")),))
                        for ref in effect.partition_refs
                    ),
                    0.1,
                )
            else:
                outcome = RunSucceeded(0.1)
            rec.run_finished(RunFinishedReport(effect.job_run_id, outcome), now)
        now += 1
    events, _ = rec.take()
    log.append([e.payload for e in events], now)
    return log


def replayed(log: SqliteEventLog) -> dict[str, object]:
    state = BuildState(GRAPH)
    for event in log.read(0, 1_000_000):
        state.apply(event)
    return canonical(state)


async def start_controller(log: SqliteEventLog, store: SnapshotStore) -> Controller:
    controller = Controller(
        GRAPH,
        log,
        FakeExecutor(slots=0),
        root_dir=Path("."),
        runs_dir=Path("runs"),
        clock=FakeClock(2_000.0),
        snapshots=store,
    )
    await controller.start()
    return controller


def test_start_from_a_snapshot_equals_a_full_replay(tmp_path: Path) -> None:
    log = fill_log(tmp_path / "bel.sqlite")
    expected = replayed(log)
    state = BuildState(GRAPH)
    for event in log.read(0, 1_000_000)[:-7]:  # a snapshot a little behind the log
        state.apply(event)
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    store.write(state)

    async def run() -> None:
        controller = await start_controller(log, store)
        try:
            assert controller.loaded_from_snapshot == state.last_sequence
            assert controller.loaded_from_snapshot < log.last_sequence()
            # recover() adds lost-run events after the load: compare before them
            fresh = BuildState(GRAPH)
            for event in log.read(0, 1_000_000):
                if event.sequence <= log.last_sequence():
                    fresh.apply(event)
            assert canonical(controller.state) == canonical(fresh)
        finally:
            await controller.stop()

    assert canonical(state) != expected  # the snapshot really was behind
    asyncio.run(run())


def test_folding_on_from_a_snapshot_taken_anywhere_equals_a_full_replay(tmp_path: Path) -> None:
    # A snapshot is not pickled as-is (shared strings, empty sets written as one frozenset):
    # whatever the cut, the records it gives back must fold the rest of the log exactly.
    log = fill_log(tmp_path / "bel.sqlite")
    events = log.read(0, 1_000_000)
    expected = replayed(log)
    for cut in range(1, len(events), 7):
        state = BuildState(GRAPH)
        for event in events[:cut]:
            state.apply(event)
        store = SnapshotStore(tmp_path / f"snapshots-{cut}", GRAPH)
        store.write(state)
        snapshot = store.load(log.last_sequence())
        assert snapshot is not None and snapshot.sequence == events[cut - 1].sequence
        assert canonical(snapshot.state) == canonical(state)
        for event in events[cut:]:
            snapshot.state.apply(event)
        assert canonical(snapshot.state) == expected, f"snapshot after event {cut}"


def test_a_snapshot_gives_back_every_field_of_every_record_exactly(tmp_path: Path) -> None:
    # The tables are written as columns, with repeated values written once: whatever the
    # encoding, each record must come back equal in every field, with values of the same
    # types (0.0 and -0.0 are equal but not the same float), and lists of its own.
    log = fill_log(tmp_path / "bel.sqlite")
    state = BuildState(GRAPH)
    for event in log.read(0, 1_000_000):
        state.apply(event)
    parts = list(state.partitions.values())
    parts[0].retry_at = -0.0  # beside 0.0 everywhere else in the column
    parts[1].retry_at = 5.0
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    store.write(state)
    loaded = store.load(log.last_sequence())
    assert loaded is not None
    for table in ("wants", "partitions", "runs"):
        before, after = (
            dict(getattr(state, table).items()),
            dict(getattr(loaded.state, table).items()),
        )
        assert list(after) == list(before) and after == before, table
        for key, record in before.items():
            for name in record.__slots__:
                old, new = getattr(record, name), getattr(after[key], name)
                if isinstance(old, set) and not old:
                    assert new == frozenset(), (table, key, name)  # empty sets: one frozenset
                else:
                    assert type(new) is type(old), (table, key, name)
    assert str(loaded.state.partitions[parts[0].ref].retry_at) == "-0.0"
    assert str(loaded.state.partitions[parts[2].ref].retry_at) == "0.0"
    wants = list(loaded.state.wants.values())
    for attr in ("children", "job_run_ids", "events"):
        assert len({id(getattr(w, attr)) for w in wants}) == len(wants), attr
    assert {type(w.want) for w in wants} == {Want}
    assert canonical(loaded.state) == canonical(state)


def test_a_snapshot_of_another_format_is_ignored(tmp_path: Path) -> None:
    log = fill_log(tmp_path / "bel.sqlite")
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    store.directory.mkdir(parents=True)
    path = store.directory / f"state-{store.fingerprint}-{1:012d}.pickle"
    with path.open("wb") as handle:
        pickle.dump((FORMAT - 1, store.fingerprint), handle)
        pickle.dump((1, BuildState(GRAPH)), handle)
    assert store.load(log.last_sequence()) is None


def ahead_of(log: SqliteEventLog) -> BuildState:
    """The log's state, claiming 100 events more than the log holds."""
    state = BuildState(GRAPH)
    for event in log.read(0, 1_000_000):
        state.apply(event)
    state.last_sequence += 100
    return state


def test_a_damaged_foreign_or_future_snapshot_is_ignored(tmp_path: Path) -> None:
    log = fill_log(tmp_path / "bel.sqlite")
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    store.directory.mkdir(parents=True)
    # damaged: the newest file is garbage
    (store.directory / f"state-{store.fingerprint}-{999_999:012d}.pickle").write_bytes(b"garbage")
    # ahead of the log
    ahead = ahead_of(log)
    store.write(ahead)
    # of another graph (different routing): a different fingerprint, never matched
    SnapshotStore(tmp_path / "snapshots", OTHER).write(BuildState(OTHER))
    assert store.load(log.last_sequence()) is None

    async def run() -> None:
        controller = await start_controller(log, store)
        try:
            assert controller.loaded_from_snapshot == 0
        finally:
            await controller.stop()

    asyncio.run(run())


def test_a_forked_snapshot_is_written_and_loadable(tmp_path: Path) -> None:
    log = fill_log(tmp_path / "bel.sqlite")
    state = BuildState(GRAPH)
    for event in log.read(0, 1_000_000):
        state.apply(event)
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    pid = store.write_in_background(state)
    assert pid is not None
    import os

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    loaded = store.load(log.last_sequence())
    assert loaded is not None and loaded.sequence == state.last_sequence
    assert canonical(loaded.state) == canonical(state)


def test_a_stop_writes_a_snapshot_only_when_the_tail_outweighs_the_state() -> None:
    assert not worth_writing_at_stop(9_999, 10)  # a short tail: folded at the next start
    assert worth_writing_at_stop(10_000, 10)
    assert worth_writing_at_stop(150_000, 150_000)
    # a large state with a tail shorter than it: writing would hold the stop up for longer
    # than folding the tail will take at the next start
    assert not worth_writing_at_stop(150_000, 2_000_000)


def test_a_snapshot_ahead_of_the_log_is_skipped_by_its_name_or_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = fill_log(tmp_path / "bel.sqlite")
    last = log.last_sequence()
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    store.directory.mkdir(parents=True)
    # named ahead: not even read (it is garbage, yet reported as ahead, not as damaged)
    (store.directory / f"state-{store.fingerprint}-{last + 1:012d}.pickle").write_bytes(b"x")
    # named behind but ahead inside (a renamed file): read, and still refused
    ahead = ahead_of(log)
    store.write(ahead)
    written = store.directory / f"state-{store.fingerprint}-{ahead.last_sequence:012d}.pickle"
    written.rename(store.directory / f"state-{store.fingerprint}-{1:012d}.pickle")
    with caplog.at_level("WARNING", logger="databuild.snapshots"):
        assert store.load(last) is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ahead of the log" in m for m in messages) == 2, messages
