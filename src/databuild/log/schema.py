"""Numbered SQL migrations for the Build Event Log and the rules for applying them.

Migrations are files ``migrations/<dialect>/NNNN_description.sql`` shipped in the package,
numbered from 0001 without gaps. Each database records what it has applied in a
``schema_migrations`` table (version, name, applied_at). An adapter applies the pending
ones in one transaction while holding its write lock, re-reading ``schema_migrations``
inside that transaction, so two processes opening a new log at once apply each migration
exactly once.

Called by the SQL adapters when they open a log. Must not talk to a database itself: the
adapters own their connections; this module only finds files and decides what is pending.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources

from databuild.core.errors import StorageError

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Every migration for ``dialect`` ("sqlite" or "postgres"), in order."""
    folder = resources.files("databuild.log").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StorageError(
            f"{dialect} migrations must be numbered 0001, 0002, ... without gaps; found "
            f"{[m.version for m in found]}"
        )
    return tuple(found)


def pending_migrations(
    migrations: tuple[Migration, ...], applied: Collection[int], where: str
) -> list[Migration]:
    """The migrations not yet in ``applied``; refuses a database newer than this code."""
    known = {m.version for m in migrations}
    newer = sorted(set(applied) - known)
    if newer:
        raise StorageError(
            f"{where} has schema migration(s) {newer} that this DataBuild does not know; "
            f"it was upgraded by a newer DataBuild (this one knows up to {max(known, default=0)})"
        )
    return [m for m in migrations if m.version not in applied]
