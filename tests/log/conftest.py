"""Backends for the Build Event Log contract tests: memory, SQLite and PostgreSQL.

``backend`` is parametrised over all three; each gives a way to open (and reopen) the same
log and, for the SQL ones, its URL for other processes. PostgreSQL runs only when
DATABUILD_TEST_POSTGRES_URL is set (each test gets a fresh schema, dropped afterwards);
otherwise those parametrisations are skipped with that reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from databuild.log import BuildEventLog, InMemoryEventLog, InMemoryStore, open_log

POSTGRES_URL = os.environ.get("DATABUILD_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="PostgreSQL tests need DATABUILD_TEST_POSTGRES_URL"
)


@dataclass
class Backend:
    name: str
    opener: Callable[[], BuildEventLog]
    url: str | None  # None: the log lives in this process only
    opened: list[BuildEventLog] = field(default_factory=list)

    def open(self) -> BuildEventLog:
        """A new log object over the same storage (closed at the end of the test)."""
        log = self.opener()
        self.opened.append(log)
        return log


def postgres_schema_url(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}schema={schema}"


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _make_backend(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    if name == "memory":
        store = InMemoryStore()
        return Backend(name, lambda: InMemoryEventLog(store), None)
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'bel.sqlite'}"  # tmp_path is absolute: four slashes
        return Backend(name, lambda: open_log(url), url)
    schema: str = request.getfixturevalue("postgres_schema")
    url = postgres_schema_url(schema)
    return Backend(name, lambda: open_log(url), url)


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=[pytest.mark.postgres, needs_postgres]),
]
SQL_BACKENDS = BACKENDS[1:]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _make_backend(request.param, tmp_path, request)
    yield made
    for log in made.opened:
        log.close()


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _make_backend(request.param, tmp_path, request)
    yield made
    for log in made.opened:
        log.close()
