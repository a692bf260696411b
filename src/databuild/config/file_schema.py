"""The shape of ``databuild.toml`` as pydantic models: types, ranges, allowed keys.

The loader validates the parsed TOML against ``GraphFile`` and then assembles the frozen
values of ``graph_config``. Each model forbids unknown keys and is strict (``retries = "2"`` is
an error, not a silent conversion). Validators here check one value at a time and raise
ValueError with a plain sentence (the loader adds the file and the key); checks that span
several keys (back-off order, duplicate outputs, schedule routing) live in the loader. These
models never leave the config package.

They are also the JSON schema of ``databuild.toml`` (``databuild config schema``, committed as
``schema/databuild.schema.json`` for editors): ``WithJsonSchema`` says what a value looks like
*in the file* (a pattern or a duration is a string there, not the object it becomes), and each
table's docstring is its description.
"""

from __future__ import annotations

import math
import re
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict

from databuild.config.durations import ACCEPTED_FORMATS, parse_duration
from databuild.config.graph_config import EXECUTOR_KINDS
from databuild.config.schedule import SCHEDULE_FIELDS, DataDate
from databuild.core.errors import InvalidPattern
from databuild.core.hints import EXPANSIONS, HintPattern
from databuild.core.refs import PartitionPattern

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a simple name: use a letter followed by up to 63 letters, "
            "digits, '_' or '-'"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an environment variable name: use letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def _pattern(value: object) -> PartitionPattern:
    if not isinstance(value, str):
        raise ValueError(f"a partition pattern must be a string, not a {type(value).__name__}")
    try:
        return PartitionPattern.compile(value)
    except InvalidPattern as exc:
        raise ValueError(str(exc)) from None


def _hint(value: object) -> PartitionPattern:
    if not isinstance(value, str):
        raise ValueError(f"an input hint must be a string, not a {type(value).__name__}")
    try:
        return HintPattern.parse(value)
    except InvalidPattern as exc:
        raise ValueError(str(exc)) from None


def _duration(value: object) -> float:
    return parse_duration(value)


def _whole_seconds(value: float) -> float:
    if value != math.floor(value):
        raise ValueError(f"must be a whole number of seconds (got {value:g}s)")
    return value


def _command(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(
            'must be a list of strings such as ["python", "jobs/ingest.py"], not one string: '
            "commands never go through a shell, so nothing would split it into arguments"
        )
    return value


def _version(value: str) -> str:
    if value != value.strip() or any(not c.isprintable() for c in value):
        raise ValueError(
            f"{value!r} is not a version: use printable characters, no surrounding spaces"
        )
    return value


def _program(value: list[str]) -> list[str]:
    if value and not value[0]:
        raise ValueError("the first element (the program to run) must not be empty")
    if any("\x00" in part for part in value):
        raise ValueError("arguments must not contain NUL characters")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _executor_kind(value: str) -> str:
    if value not in EXECUTOR_KINDS:
        raise ValueError(
            f"unknown executor kind {value!r}; the supported kinds are: {', '.join(EXECUTOR_KINDS)}"
        )
    return value


def _custom_resource(value: str) -> str:
    if value in ("CPU", "memory", "object_store_memory"):
        raise ValueError(f"{value!r} is not a custom resource; set num_cpus or memory instead")
    return value


def _cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(
            f"{value!r} is not a valid cron expression; use five fields "
            '"minute hour day-of-month month day-of-week", such as "0 6 * * *"'
        )
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'{value!r} is not a known IANA time zone (such as "UTC" or "Europe/Berlin")'
        ) from None
    return value


def _schedule_pattern(value: PartitionPattern) -> PartitionPattern:
    unknown = [name for name in value.fields if name not in SCHEDULE_FIELDS]
    if unknown:
        allowed = ", ".join(f"{{{name}}} ({meaning})" for name, meaning in SCHEDULE_FIELDS.items())
        raise ValueError(
            f"pattern {value.template!r} uses {{{unknown[0]}}}, which a schedule cannot fill; "
            f"the fields it can fill are {allowed}"
        )
    return value


def _data_date(value: str) -> DataDate:
    try:
        return DataDate(value)
    except ValueError:
        choices = " or ".join(f'"{d.value}"' for d in DataDate)
        raise ValueError(f"{value!r} is not a data date; use {choices}") from None


_PATTERN_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "description": "a partition pattern such as daily/date={date}: {name} matches one "
        "path segment, {name:REGEX} matches REGEX, the rest is literal",
    }
)
Identifier = Annotated[
    str,
    AfterValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": "^" + _IDENTIFIER.pattern + "$"}),
]
EnvName = Annotated[
    str,
    AfterValidator(_env_name),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^" + _ENV_NAME.pattern + "$",
            "description": "an environment variable name",
        }
    ),
]
Pattern = Annotated[PartitionPattern, BeforeValidator(_pattern), _PATTERN_SCHEMA]
Hint = Annotated[
    PartitionPattern,
    BeforeValidator(_hint),
    WithJsonSchema(
        {
            "type": "string",
            "description": "an input hint: a pattern over the output's fields, such as "
            "raw/date={date}; {field|EXPANSION} names a set ("
            + ", ".join(sorted(EXPANSIONS))
            + "; trailing_days takes :N), such as daily/date={week|iso_week_days}",
        }
    ),
]
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
            "description": f"a duration: {ACCEPTED_FORMATS}",
        }
    ),
]
HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"}),
]


# A table of named tables ([jobs.NAME]): a NAME that is not an Identifier is an error.
_NAMES_ONLY: JsonDict = {"additionalProperties": False}


class _Table(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True
    )


class GraphTable(_Table):
    """[graph]: the graph's name (services and other graphs know it by this name)."""

    name: Identifier


class ResourcesTable(_Table):
    """[jobs.NAME.resources]: what one run needs on a cluster executor (ignored by local)."""

    num_cpus: Annotated[float, Field(ge=0)] = 1.0
    memory: Annotated[int, Field(ge=0)] = 0  # bytes; 0 reserves none
    custom: dict[
        Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_custom_resource)],
        Annotated[float, Field(gt=0)],
    ] = Field(default_factory=dict)


class JobTable(_Table):
    """[jobs.NAME]: a job, the partitions it builds and how to run it (docs/jobs.md)."""

    outputs: Annotated[list[Pattern], Field(min_length=1)]
    command: Annotated[
        list[str], BeforeValidator(_command), Field(min_length=1), AfterValidator(_program)
    ]
    max_batch: Annotated[int, Field(ge=1)] = 1
    concurrency: Annotated[int, Field(ge=1)] = 1
    timeout: Annotated[Duration, Field(gt=0)] = 3600.0
    retries: Annotated[int, Field(ge=0)] = 2
    retry_backoff: Duration = 1.0
    retry_backoff_max: Duration = 300.0
    env: dict[EnvName, str] = Field(default_factory=dict)
    expected_duration: Duration = 0.0
    warm: bool = False
    version: (
        Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_version)] | None
    ) = None
    resources: ResourcesTable = Field(default_factory=lambda: ResourcesTable())
    inputs: list[Hint] = Field(default_factory=list)  # input hints (core.hints)


class StorageTable(_Table):
    """[storage]: where the Build Event Log and the service's state live."""

    url: Annotated[str, Field(min_length=1)] | None = None
    url_env: EnvName | None = None
    state_dir: Annotated[str, Field(min_length=1)] = ".databuild"


class ExecutorTable(_Table):
    """[executor]: how job processes are run."""

    kind: Annotated[
        str, AfterValidator(_executor_kind), WithJsonSchema({"enum": list(EXECUTOR_KINDS)})
    ] = "local"
    max_parallel: Annotated[int, Field(ge=1)] | None = None
    address: Annotated[str, Field(min_length=1)] | None = None  # kind = "ray": the cluster


class ServiceTable(_Table):
    """[service]: where `databuild serve` listens and which variable holds its token."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    token_env: EnvName = "DATABUILD_TOKEN"


class UpstreamTable(_Table):
    """[upstreams.NAME]: another graph whose partitions this one depends on."""

    url: HttpUrl
    partitions: Annotated[list[Pattern], Field(min_length=1)]
    token_env: EnvName | None = None


class ExternalTable(_Table):
    """[externals.NAME]: partitions no job builds (landed from outside the graph); wants on
    them wait until they are declared live, by hand or by the optional check command."""

    partitions: Annotated[list[Pattern], Field(min_length=1)]
    check: (
        Annotated[
            list[str], BeforeValidator(_command), Field(min_length=1), AfterValidator(_program)
        ]
        | None
    ) = None
    check_interval: Annotated[Duration, Field(gt=0)] = 60.0
    check_interval_max: Annotated[Duration, Field(gt=0)] = 3600.0
    check_timeout: Annotated[Duration, Field(gt=0)] = 60.0


class ScheduleTable(_Table):
    """[schedules.NAME]: create wants on a cron schedule (docs/schedules.md)."""

    cron: Annotated[
        str,
        AfterValidator(_cron),
        WithJsonSchema({"type": "string", "description": 'five cron fields, e.g. "0 6 * * *"'}),
    ]
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    partition: Annotated[
        PartitionPattern,
        BeforeValidator(_pattern),
        AfterValidator(_schedule_pattern),
        _PATTERN_SCHEMA,
    ]
    data_date: Annotated[DataDate, BeforeValidator(_data_date)] = DataDate.YESTERDAY
    sla: Annotated[Duration, AfterValidator(_whole_seconds)] = 0.0
    ttl: Annotated[Duration, AfterValidator(_whole_seconds)] = 0.0


class AlertsTable(_Table):
    """[alerts]: webhooks told about SLA misses and failures (docs/sla.md)."""

    webhooks: list[HttpUrl] = Field(default_factory=list)


class GraphFile(_Table):
    """databuild.toml: a DataBuild graph (docs/config.md)."""

    graph: GraphTable
    jobs: Annotated[dict[Identifier, JobTable], Field(min_length=1, json_schema_extra=_NAMES_ONLY)]
    storage: StorageTable = Field(default_factory=StorageTable)
    executor: ExecutorTable = Field(default_factory=ExecutorTable)
    service: ServiceTable = Field(default_factory=ServiceTable)
    upstreams: dict[Identifier, UpstreamTable] = Field(
        default_factory=dict, json_schema_extra=_NAMES_ONLY
    )
    externals: dict[Identifier, ExternalTable] = Field(
        default_factory=dict, json_schema_extra=_NAMES_ONLY
    )
    schedules: dict[Identifier, ScheduleTable] = Field(
        default_factory=dict, json_schema_extra=_NAMES_ONLY
    )
    alerts: AlertsTable = Field(default_factory=AlertsTable)


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def graph_file_json_schema() -> dict[str, object]:
    """The JSON schema of ``databuild.toml`` (what ``databuild config schema`` prints)."""
    return {"$schema": JSON_SCHEMA_DIALECT, **GraphFile.model_json_schema(mode="validation")}
