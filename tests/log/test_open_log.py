"""``open_log``: which URLs pick which backend, and clear errors (with passwords masked)
for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from databuild.core.errors import StorageError
from databuild.log import InMemoryEventLog, SqliteEventLog, mask_url, open_log


def test_memory_url_gives_the_fake() -> None:
    with open_log("memory:") as log:
        assert isinstance(log, InMemoryEventLog)


def test_three_slashes_is_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_log("sqlite:///data/bel.sqlite") as log:
        assert isinstance(log, SqliteEventLog)
    assert (tmp_path / "data" / "bel.sqlite").is_file()


def test_four_slashes_is_an_absolute_path(tmp_path: Path) -> None:
    with open_log(f"sqlite:///{tmp_path}/abs.sqlite") as log:
        assert isinstance(log, SqliteEventLog)
    assert (tmp_path / "abs.sqlite").is_file()


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://root@localhost/db", "scheme 'mysql'"),
        ("sqlite://relative.sqlite", "scheme 'sqlite'"),
        ("bel.sqlite", "no scheme"),
        ("memory", "no scheme"),
    ],
)
def test_unsupported_urls_name_the_scheme_and_what_is_accepted(url: str, named: str) -> None:
    with pytest.raises(StorageError) as caught:
        open_log(url)
    assert named in str(caught.value)
    assert "sqlite:///relative/path.sqlite" in str(caught.value)
    assert "postgresql://" in str(caught.value)


def test_sqlite_url_without_a_file_is_refused() -> None:
    with pytest.raises(StorageError, match="names no file"):
        open_log("sqlite:///")


def test_passwords_never_appear_in_messages() -> None:
    for url in (
        "postgresql://alice:s3cret-pw@127.0.0.1:1/db?connect_timeout=2",
        "postgres://127.0.0.1:1/db?user=alice&password=s3cret-pw&connect_timeout=2",
    ):
        with pytest.raises(StorageError) as caught:
            open_log(url)  # nothing listens on port 1
        assert "s3cret-pw" not in str(caught.value)
        assert "***" in str(caught.value)
    with pytest.raises(StorageError) as unsupported:
        open_log("mysql://alice:s3cret-pw@host/db")
    assert "s3cret-pw" not in str(unsupported.value)


def test_mask_url_keeps_everything_but_the_password() -> None:
    assert mask_url("postgresql://a:pw@h:5/d?schema=s") == "postgresql://a:***@h:5/d?schema=s"
    assert mask_url("postgresql://a@h/d") == "postgresql://a@h/d"
    assert mask_url("postgresql://h/d?password=pw&x=1") == "postgresql://h/d?password=***&x=1"
