"""PostgreSQL-specific behaviour behind the contract: a failure inside the COPY rolls the
batch back whole, schemas isolate logs, and connection errors become StorageError."""

from __future__ import annotations

import psycopg
import pytest

from databuild.core.errors import StorageError
from databuild.core.events import WantExpired
from databuild.core.model import WantId
from databuild.log import PostgresEventLog

from .conftest import POSTGRES_URL, needs_postgres, postgres_schema_url

pytestmark = [pytest.mark.postgres, needs_postgres]


def test_a_batch_failing_inside_the_transaction_writes_nothing(postgres_schema: str) -> None:
    with PostgresEventLog(postgres_schema_url(postgres_schema)) as log:
        log.append([WantExpired(WantId("first"))], 1.0)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(
                f"""
                CREATE FUNCTION {postgres_schema}.refuse() RETURNS trigger AS $$
                BEGIN
                    IF NEW.sequence = 4 THEN RAISE EXCEPTION 'disk says no'; END IF;
                    RETURN NEW;
                END $$ LANGUAGE plpgsql;
                CREATE TRIGGER refuse BEFORE INSERT ON {postgres_schema}.build_events
                    FOR EACH ROW EXECUTE FUNCTION {postgres_schema}.refuse();
                """.encode()
            )
        batch = [WantExpired(WantId(f"w{i}")) for i in range(5)]
        with pytest.raises(StorageError, match="disk says no"):
            log.append(batch, 2.0)
        assert log.last_sequence() == 1
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP TRIGGER refuse ON {postgres_schema}.build_events".encode())
        assert [e.sequence for e in log.append(batch, 3.0)] == [2, 3, 4, 5, 6]


def test_schemas_isolate_logs(postgres_schema: str) -> None:
    other = f"{postgres_schema}_b"
    try:
        with (
            PostgresEventLog(POSTGRES_URL, schema=postgres_schema) as a,
            PostgresEventLog(POSTGRES_URL, schema=other) as b,
        ):
            a.append([WantExpired(WantId("only-in-a"))], 1.0)
            assert b.last_sequence() == 0
            a.acquire_writer("a")
            b.acquire_writer("b")  # a different schema is a different log
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {other} CASCADE".encode())


def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(StorageError, match="plain identifier"):
        PostgresEventLog(POSTGRES_URL, schema="x; DROP TABLE y")
