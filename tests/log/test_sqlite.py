"""SQLite-specific behaviour behind the contract: real mid-transaction failures roll back
whole, and driver errors come out as StorageError with the file named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from databuild.core.errors import StorageError
from databuild.core.events import WantExpired
from databuild.core.model import WantId
from databuild.log import SqliteEventLog


def test_a_batch_failing_inside_the_transaction_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    with SqliteEventLog(path) as log:
        log.append([WantExpired(WantId("first"))], 1.0)
        with sqlite3.connect(path) as conn:  # make the 3rd row of the next batch fail
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON build_events WHEN NEW.sequence = 4 "
                "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        batch = [WantExpired(WantId(f"w{i}")) for i in range(5)]
        with pytest.raises(StorageError, match=r"bel\.sqlite.*disk says no"):
            log.append(batch, 2.0)
        assert log.last_sequence() == 1
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER refuse")
        assert [e.sequence for e in log.append(batch, 3.0)] == [2, 3, 4, 5, 6]


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StorageError, match=r"could not open .*bel\.sqlite"):
        SqliteEventLog(path)


def test_a_directory_in_the_way_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "bel.sqlite").mkdir()
    with pytest.raises(StorageError, match=r"bel\.sqlite"):
        SqliteEventLog(tmp_path / "bel.sqlite")


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    with SqliteEventLog(tmp_path / "a" / "b" / "bel.sqlite") as log:
        assert log.last_sequence() == 0
