"""The compact fold's history store: the contract both stores keep (the fake in
``core.history`` and SQLite), and restarts from a snapshot while the store ran ahead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from databuild.core.history import Described, History, MemoryHistory, RecordFilter, Row
from databuild.core.state import BuildState, canonical
from databuild.runtime.history import FILE_NAME, SqliteHistory, starting_state
from databuild.runtime.snapshots import SnapshotStore
from databuild.service import views

from .test_snapshots import GRAPH, fill_log, replayed, start_controller


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    made: History = (
        MemoryHistory() if request.param == "memory" else SqliteHistory(tmp_path / FILE_NAME)
    )
    yield made
    made.close()


def _row(key: str, version: int, order: int, status: str, ref: str = "", tag: str = "") -> Row:
    return Row("w", key, version, order, Described(status, ref, "root", tag), (key, status))


def test_the_newest_version_is_read_and_a_replay_reads_as_of_its_snapshot(store: History) -> None:
    store.put([_row("a", 5, 1, "satisfied"), _row("b", 6, 2, "failed")])
    store.put([_row("a", 9, 1, "canceled")])
    assert store.get("w", "a") == ("a", "canceled")
    assert store.get("r", "a") is None  # another table
    assert store.get("w", "nope") is None
    store.put([_row("c", 12, 3, "satisfied"), _row("d", 20, 4, "satisfied")])
    store.mark(12)
    store.replay_from(8, 15)  # a restart from a snapshot at 8 of a log that ends at 15
    assert store.complete_through() == 8
    assert store.get("w", "a") == ("a", "satisfied")  # as the snapshot knew it
    assert store.get("w", "b") == ("b", "failed")
    assert store.get("w", "c") is None  # finished after the snapshot: the replay redoes it
    store.put([_row("a", 9, 1, "canceled"), _row("c", 12, 3, "satisfied")])  # the same again
    store.replay_done()
    assert store.get("w", "a") == ("a", "canceled")
    assert store.get("w", "c") == ("c", "satisfied")
    assert store.get("w", "d") is None  # past the log's end: gone
    assert [r[0] for _, r in store.scan("w", RecordFilter(), None, False, 10)] == ["a", "b", "c"]
    store.replay_from(0, 15)  # a full replay starts from an empty store
    store.replay_done()
    assert store.get("w", "a") is None and store.get("w", "b") is None


def test_scans_filter_on_every_column_in_order_both_ways(store: History) -> None:
    store.put(
        [
            _row("a", 1, 1, "satisfied", "daily/1", "api"),
            _row("b", 2, 2, "failed", "daily/2", "derived"),
            _row("c", 3, 3, "satisfied", "raw/1", "api"),
            _row("d", 4, 4, "satisfied", "daily/3", "api"),
        ]
    )
    store.put([_row("a", 7, 1, "canceled", "daily/1", "api")])  # only the newest is scanned

    def keys(where: RecordFilter, after: int | None = None, desc: bool = False) -> list[str]:
        return [record[0] for _, record in store.scan("w", where, after, desc, 10)]

    assert keys(RecordFilter()) == ["a", "b", "c", "d"]
    assert keys(RecordFilter(), desc=True) == ["d", "c", "b", "a"]
    assert keys(RecordFilter(statuses=frozenset({"satisfied"}))) == ["c", "d"]
    assert keys(RecordFilter(prefix="daily/")) == ["a", "b", "d"]
    assert keys(RecordFilter(tag="api", prefix="daily/")) == ["a", "d"]
    assert keys(RecordFilter(refs=frozenset({"raw/1", "daily/2"}))) == ["b", "c"]
    assert keys(RecordFilter(root="root")) == ["a", "b", "c", "d"]
    assert keys(RecordFilter(root="other")) == []
    assert keys(RecordFilter(), after=2) == ["c", "d"]
    assert keys(RecordFilter(), after=3, desc=True) == ["b", "a"]
    assert [o for o, _ in store.scan("w", RecordFilter(), None, False, 2)] == [1, 2]
    # a prefix is text, not a LIKE pattern
    store.put([_row("e", 8, 5, "satisfied", "da%ly/4")])
    assert keys(RecordFilter(prefix="da%")) == ["e"]


def test_a_restart_from_a_snapshot_behind_the_store_equals_a_full_replay(tmp_path: Path) -> None:
    # The service goes on flushing finished records after a snapshot; a crash then leaves
    # the store ahead of the snapshot. Whatever the cut, dropping the newer versions and
    # folding the tail must give the full replay's state (and nothing twice: a want's
    # timeline, a parent's children).
    log = fill_log(tmp_path / "bel.sqlite")
    events = log.read(0, 1_000_000)
    expected = replayed(log)
    for cut in range(1, len(events), 5):
        history = SqliteHistory(tmp_path / f"history-{cut}.sqlite")
        state = BuildState(GRAPH, history)
        snapshots = SnapshotStore(tmp_path / f"snapshots-{cut}", GRAPH)
        for event in events[:cut]:
            state.apply(event)
            state.flush_history()
        state.flush_for_snapshot()
        snapshots.write(state)
        for event in events[cut:]:  # the service ran on, then died
            state.apply(event)
            state.flush_history()
        snapshot = snapshots.load(log.last_sequence())
        assert snapshot is not None
        snapshot.state.attach_history(history)
        history.replay_from(snapshot.sequence, log.last_sequence())
        for event in events[cut:]:
            snapshot.state.apply(event)
        history.replay_done()
        snapshot.state.flush_history()
        assert canonical(snapshot.state) == expected, f"snapshot after event {cut}"
        history.close()


def test_the_service_keeps_only_active_work_in_memory_and_serves_the_rest(tmp_path: Path) -> None:
    log = fill_log(tmp_path / "bel.sqlite", wants=40)
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    full = BuildState(GRAPH)
    for event in log.read(0, 1_000_000):
        full.apply(event)

    async def run() -> None:
        controller = await start_controller(log, store)
        try:
            state = controller.state
            assert all(w.active for w in state.wants.hot.values())
            assert all(not r.status.terminal for r in state.runs.hot.values())
            state.flush_history()
            assert not state.wants.pending and not state.runs.pending
            finished = [w for w in full.wants.values() if not w.active]
            assert finished, "the log has finished wants"
            for record in finished:  # read back from the store
                assert state.wants[record.want.want_id].status is record.status
            assert len(state.wants) == len(full.wants)
            assert [w.want.want_id for w in state.wants.values()] == [
                w.want.want_id for w in full.wants.values()
            ]
            # the API's pages merge memory and the store, in order, by cursor, filtered
            for status in (None, "satisfied", "active", "satisfied,active"):
                paged, cursor = [], ""
                while True:
                    page = views.list_wants(
                        state, status=status, prefix=None, root_want_id=None, source=None,
                        cursor=cursor, limit=7,
                    )  # fmt: skip
                    paged += [w.want_id for w in page.wants]
                    cursor = page.next_cursor
                    if not cursor:
                        break
                whole = views.list_wants(
                    full, status=status, prefix=None, root_want_id=None, source=None,
                    cursor="", limit=1000,
                )  # fmt: skip
                assert paged == [w.want_id for w in whole.wants], status
            newest = views.list_job_runs(state, job="down", status=None, cursor="", limit=1000)
            expected = views.list_job_runs(full, job="down", status=None, cursor="", limit=1000)
            assert [r.job_run_id for r in newest.job_runs] == [
                r.job_run_id for r in expected.job_runs
            ]
        finally:
            await controller.stop()

    asyncio.run(run())
    assert (tmp_path / "snapshots" / FILE_NAME).exists()


def test_a_snapshot_is_not_used_without_the_history_it_left_its_finished_records_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # history.sqlite lost (deleted, another disk) while a snapshot remains: the snapshot
    # holds only active work, so the service replays the whole log instead of trusting it
    log = fill_log(tmp_path / "bel.sqlite", wants=40)
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    history = SqliteHistory(tmp_path / "snapshots" / FILE_NAME)
    state = BuildState(GRAPH, history)
    for event in log.read(0, 1_000_000):
        state.apply(event)
    state.flush_for_snapshot()
    store.write(state)
    history.close()
    for leftover in (tmp_path / "snapshots").glob(f"{FILE_NAME}*"):
        leftover.unlink()

    async def run() -> None:
        controller = await start_controller(log, store)
        try:
            assert controller.loaded_from_snapshot == 0
            fresh = BuildState(GRAPH)
            for event in log.read(0, 1_000_000):
                fresh.apply(event)
            assert canonical(controller.state) == canonical(fresh)
        finally:
            await controller.stop()

    asyncio.run(run())
    assert "holds the finished records only up to 0" in caplog.text


def test_a_second_process_on_the_same_state_directory_keeps_its_history_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the store belongs to one service: another one started on the same folder must not
    # drop the versions the first still reads, so it folds the whole log and keeps memory
    log = fill_log(tmp_path / "bel.sqlite", wants=20)
    store = SnapshotStore(tmp_path / "snapshots", GRAPH)
    held = SqliteHistory(tmp_path / "snapshots" / FILE_NAME)
    held.put([_row("a", 1, 1, "satisfied")])
    try:
        state, after = starting_state(store, GRAPH, log.last_sequence())
        assert after == 0 and isinstance(state.history, MemoryHistory)
        assert "held by another process" in caplog.text
        assert held.get("w", "a") == ("a", "satisfied")  # untouched
    finally:
        held.close()
    state, _ = starting_state(store, GRAPH, log.last_sequence())  # free again: the store
    assert isinstance(state.history, SqliteHistory)
    assert state.history.get("w", "a") is None  # an empty fold: the store is emptied
    state.history.close()


def test_lineage_edges_are_asked_by_input(store: History) -> None:
    # invalidation walks downstream a frontier at a time: the store answers which outputs
    # reported an input missing without reading every finished run
    run = Row(
        "r", "r1", 4, 1,
        Described("missing_deps", "", "", "clean", True,
                  (("raw/1", "daily/1"), ("raw/2", "daily/1"), ("raw/2", "daily/2"))),
        ("r1",),
    )  # fmt: skip
    store.put([run])
    assert store.dependents_of(["raw/2", "raw/9"]) == {"raw/2": {"daily/1", "daily/2"}}
    store.put([run])  # a replay writes it again: no duplicates
    assert store.dependents_of(["raw/1"]) == {"raw/1": {"daily/1"}}
    store.replay_from(0, 10)
    store.replay_done()
    assert store.dependents_of(["raw/1"]) == {}
