"""``[externals.NAME]`` tables -> ``ExternalSpec``: partitions that no job builds.

Called by the loader once ``GraphFile`` has validated each table's types and ranges; checks
what spans keys of one table (the back-off cap against the interval). The overlap of an
external's patterns with jobs' outputs and upstreams' partitions is checked by the loader
with every other owner's (``_Assembly.check_unique_patterns``). No I/O.
"""

from __future__ import annotations

from databuild.config.file_schema import ExternalTable
from databuild.config.problems import dotted_key
from databuild.core.errors import ConfigError
from databuild.core.model import ExternalSpec


def external_spec(path: str, name: str, table: ExternalTable) -> ExternalSpec:
    if table.check_interval_max < table.check_interval:
        loc = ("externals", name, "check_interval_max")
        raise ConfigError(
            path,
            dotted_key(loc),
            f"must be at least check_interval ({table.check_interval:g}s), "
            f"but is {table.check_interval_max:g}s"
            + ("" if "check_interval_max" in table.model_fields_set else " (the default)"),
        )
    if table.check is None:
        for key in ("check_interval", "check_interval_max", "check_timeout"):
            if key in table.model_fields_set:
                raise ConfigError(
                    path,
                    dotted_key(("externals", name, key)),
                    "applies to a check command, but this external has none: add "
                    'check = ["path/to/check", ...] or remove it',
                )
    return ExternalSpec(
        name=name,
        partitions=tuple(table.partitions),
        check=tuple(table.check or ()),
        check_interval_seconds=table.check_interval,
        check_interval_max_seconds=table.check_interval_max,
        check_timeout_seconds=table.check_timeout,
    )
