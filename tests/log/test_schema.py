"""Applying every migration to an empty database gives exactly the committed schema.

The expected schemas are snapshots in this folder (``expected_schema_*.sql``), normalised
so that they compare as text. After an intended schema change (a new numbered migration),
regenerate them with ``DATABUILD_UPDATE_SCHEMA_SNAPSHOTS=1 pytest tests/log/test_schema.py``
and review the diff. Also checks that reopening applies nothing twice.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import psycopg
import pytest

from databuild.log import PostgresEventLog, SqliteEventLog
from databuild.log.schema import load_migrations

from .conftest import POSTGRES_URL, needs_postgres, postgres_schema_url

HERE = Path(__file__).parent


def _matches_snapshot(actual: str, name: str) -> None:
    path = HERE / name
    if os.environ.get("DATABUILD_UPDATE_SCHEMA_SNAPSHOTS") == "1":
        path.write_text(actual)
    assert actual == path.read_text(), f"schema differs from {path}; see the module docstring"


def _squash(text: str) -> str:
    return (
        re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", text))
        .replace("( ", "(")
        .replace(" )", ")")
        .strip()
    )


def describe_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
    return "".join(f"-- {kind} {name}\n{_squash(ddl)};\n" for kind, name, ddl in rows)


def describe_postgres(schema: str) -> str:
    out: list[str] = []
    with psycopg.connect(POSTGRES_URL) as conn:
        columns = conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
            "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname, a.attnum",
            (schema,),
        ).fetchall()
        tables: dict[str, list[str]] = {}
        for table, column, type_, not_null, default in columns:
            spec = f"{column} {type_}" + (" NOT NULL" if not_null else "")
            tables.setdefault(table, []).append(spec + (f" DEFAULT {default}" if default else ""))
        for table, specs in tables.items():
            out.append(f"CREATE TABLE {table} (\n    " + ",\n    ".join(specs) + "\n);\n")
        for table, name, definition in conn.execute(
            "SELECT cl.relname, con.conname, pg_get_constraintdef(con.oid) FROM pg_constraint con "
            "JOIN pg_class cl ON cl.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = cl.relnamespace "
            "WHERE n.nspname = %s ORDER BY cl.relname, con.conname",
            (schema,),
        ):
            out.append(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition};\n")
        for (definition,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY tablename, indexname",
            (schema,),
        ):
            out.append(definition.replace(f"{schema}.", "") + ";\n")
    return "".join(out)


def test_sqlite_migrations_from_empty_give_the_committed_schema(tmp_path: Path) -> None:
    path = tmp_path / "bel.sqlite"
    SqliteEventLog(path).close()
    _matches_snapshot(describe_sqlite(path), "expected_schema_sqlite.sql")
    SqliteEventLog(path).close()  # reopening applies nothing again
    with sqlite3.connect(path) as conn:
        applied = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    assert applied == [(m.version, m.name) for m in load_migrations("sqlite")]


@pytest.mark.postgres
@needs_postgres
def test_postgres_migrations_from_empty_give_the_committed_schema(postgres_schema: str) -> None:
    PostgresEventLog(postgres_schema_url(postgres_schema)).close()
    _matches_snapshot(describe_postgres(postgres_schema), "expected_schema_postgres.sql")
    PostgresEventLog(POSTGRES_URL, schema=postgres_schema).close()
    with psycopg.connect(POSTGRES_URL) as conn:
        applied = conn.execute(
            f"SELECT version, name FROM {postgres_schema}.schema_migrations ORDER BY 1".encode()
        ).fetchall()
    assert applied == [(m.version, m.name) for m in load_migrations("postgres")]
