"""Find and load ``databuild.toml`` into a ``GraphConfig``.

The CLI and the service call ``find_config`` (walk up from a directory) and ``load_config``
(read, parse, validate, assemble). Every problem becomes one ``ConfigError`` naming the file,
the dotted key and what is wrong; TOML syntax errors name the line and column. Loading reads
the file and, for ``${VAR}`` references and ``storage.url_env``, the environment it is given;
it starts nothing, opens no database and creates no directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from databuild.config.externals import external_spec
from databuild.config.file_schema import ExecutorTable, GraphFile, JobTable, StorageTable
from databuild.config.graph_config import (
    CONFIG_FILENAME,
    AlertSettings,
    ExecutorSettings,
    GraphConfig,
    ServiceSettings,
)
from databuild.config.overlap import overlap
from databuild.config.problems import config_error_from, dotted_key
from databuild.config.schedule import ScheduleSpec
from databuild.core import hints
from databuild.core.errors import ConfigError, InvalidInput
from databuild.core.model import GraphSpec, JobSpec, RunResources, UpstreamSpec
from databuild.core.refs import PartitionPattern

_TOML_POSITION = re.compile(r"^(?P<what>.*?)\s*\(at line (?P<line>\d+), column (?P<column>\d+)\)$")
_REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{[^}]*\}?"
)
# A schedule's pattern is checked by routing the ref it would want for this day.
_SAMPLE_DAY = date(2024, 1, 1)


def find_config(start: Path) -> Path:
    """The ``databuild.toml`` in ``start`` or its nearest ancestor (``start`` may be the file)."""
    here = Path(os.path.abspath(start))
    if here.is_file():
        return here
    if not here.exists():
        raise ConfigError(str(here), "", "no such file or directory")
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        str(here),
        "",
        f"no {CONFIG_FILENAME} here or in any parent directory; "
        "create one with `databuild init DIR` or name the file explicitly",
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GraphConfig:
    """Read and validate ``path``. ``environ`` (default: the process environment) supplies
    ``${VAR}`` references in job env values and ``storage.url_env``."""
    path = Path(os.path.abspath(path))
    env = os.environ if environ is None else environ
    shown = str(path)
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(shown, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(shown, "", f"is a directory, not a {CONFIG_FILENAME} file") from None
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(shown, "", f"is not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", _toml_problem(str(exc))) from None
    try:
        parsed = GraphFile.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(shown, GraphFile, exc) from None
    config = _Assembly(shown, path.parent, env).config(parsed, path)
    return dataclasses.replace(config, digest=hashlib.sha256(raw).hexdigest())


def _toml_problem(message: str) -> str:
    found = _TOML_POSITION.match(message)
    if found is None:
        return f"is not valid TOML: {message}"
    what = found["what"].rstrip(".")
    return f"is not valid TOML: line {found['line']}, column {found['column']}: {what}"


class _Assembly:
    """Turns a validated ``GraphFile`` into a ``GraphConfig``, checking what spans keys."""

    def __init__(self, path: str, root: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.root = root
        self.environ = environ

    def error(self, loc: tuple[int | str, ...], problem: str) -> ConfigError:
        return ConfigError(self.path, dotted_key(loc), problem)

    def config(self, parsed: GraphFile, path: Path) -> GraphConfig:
        jobs = tuple(self.job(name, table) for name, table in parsed.jobs.items())
        upstreams = tuple(
            UpstreamSpec(
                name=name,
                url=table.url,
                partitions=tuple(table.partitions),
                token_env=table.token_env or "",
            )
            for name, table in parsed.upstreams.items()
        )
        externals = tuple(
            external_spec(self.path, name, table) for name, table in parsed.externals.items()
        )
        self.check_unique_patterns(parsed)
        self.check_hints(parsed)
        try:
            graph = GraphSpec(
                name=parsed.graph.name, jobs=jobs, upstreams=upstreams, externals=externals
            )
        except InvalidInput as exc:
            raise self.error(("jobs",), str(exc)) from None
        schedules = tuple(
            ScheduleSpec(
                name=name,
                cron=table.cron,
                timezone=table.timezone,
                partition=table.partition,
                data_date=table.data_date,
                sla_seconds=int(table.sla),
                ttl_seconds=int(table.ttl),
            )
            for name, table in parsed.schedules.items()
        )
        for schedule in schedules:
            self.check_routable(graph, schedule)
        state_dir = self.resolve(parsed.storage.state_dir)
        return GraphConfig(
            path=path,
            root_dir=self.root,
            graph=graph,
            storage_url=self.storage_url(parsed.storage, state_dir),
            state_dir=state_dir,
            executor=self.executor(parsed.executor),
            service=ServiceSettings(
                host=parsed.service.host,
                port=parsed.service.port,
                token_env=parsed.service.token_env,
            ),
            schedules=schedules,
            alerts=AlertSettings(webhooks=tuple(parsed.alerts.webhooks)),
        )

    def executor(self, table: ExecutorTable) -> ExecutorSettings:
        if table.kind != "ray" and table.address is not None:
            raise self.error(
                ("executor", "address"),
                f'is the Ray cluster to run jobs on; it needs kind = "ray", not {table.kind!r}',
            )
        # Only looked for, never imported: the embedded default must not pay for Ray.
        if table.kind == "ray" and importlib.util.find_spec("ray") is None:
            raise self.error(
                ("executor", "kind"),
                "\"ray\" needs Ray, which is not installed: pip install 'databuild[ray]'",
            )
        return ExecutorSettings(
            kind=table.kind,
            max_parallel=table.max_parallel or os.cpu_count() or 1,
            address=(table.address or "auto") if table.kind == "ray" else "",
        )

    def job(self, name: str, table: JobTable) -> JobSpec:
        if table.retry_backoff_max < table.retry_backoff:
            raise self.error(
                ("jobs", name, "retry_backoff_max"),
                f"must be at least retry_backoff ({table.retry_backoff:g}s), "
                f"but is {table.retry_backoff_max:g}s"
                + ("" if "retry_backoff_max" in table.model_fields_set else " (the default)"),
            )
        env = tuple(
            (key, self.expand(value, ("jobs", name, "env", key)))
            for key, value in table.env.items()
        )
        if table.warm and not _python_script(table.command):
            raise self.error(
                ("jobs", name, "warm"),
                "a warm job is a Python script run in a reused interpreter: its command must "
                f'be ["python", "path/to/job.py", ...], not {table.command!r}',
            )
        return JobSpec(
            name=name,
            outputs=tuple(table.outputs),
            command=tuple(table.command),
            max_batch=table.max_batch,
            concurrency=table.concurrency,
            timeout_seconds=table.timeout,
            retries=table.retries,
            retry_backoff_seconds=table.retry_backoff,
            retry_backoff_max_seconds=table.retry_backoff_max,
            env=env,
            expected_seconds=table.expected_duration,
            warm=table.warm,
            version=table.version or "",
            resources=RunResources(
                num_cpus=table.resources.num_cpus,
                memory_bytes=table.resources.memory,
                custom=tuple(sorted(table.resources.custom.items())),
            ),
            inputs=tuple(table.inputs),
        )

    def expand(self, value: str, loc: tuple[int | str, ...]) -> str:
        """``${VAR}`` and ``${VAR:-default}`` from the environment; ``$$`` is a literal ``$``."""

        def substitute(found: re.Match[str]) -> str:
            if found.group(0) == "$$":
                return "$"
            name, default = found.group("name"), found.group("default")
            if name is None:
                raise self.error(
                    loc,
                    f"{found.group(0)!r} is not a valid reference; write ${{NAME}} or "
                    "${NAME:-default} (and $$ for a literal $)",
                )
            if name in self.environ:
                return self.environ[name]
            if default is None:
                raise self.error(
                    loc,
                    f"refers to ${{{name}}}, which is not set in the environment; "
                    f"set it or give a default with ${{{name}:-value}}",
                )
            return default

        return _REFERENCE.sub(substitute, value)

    def check_unique_patterns(self, parsed: GraphFile) -> None:
        """Each partition has one owner: no pattern listed twice, and no two owners' patterns
        that can match one ref (``overlap``), named with both owners and an example ref."""
        sections: list[tuple[str, str, list[PartitionPattern], str]] = [
            ("jobs", name, table.outputs, "outputs") for name, table in parsed.jobs.items()
        ]
        sections += [
            ("upstreams", name, table.partitions, "partitions")
            for name, table in parsed.upstreams.items()
        ]
        sections += [
            ("externals", name, table.partitions, "partitions")
            for name, table in parsed.externals.items()
        ]
        seen: list[tuple[str, tuple[int | str, ...], PartitionPattern]] = []
        for section, name, patterns, key in sections:
            owner = f"{_OWNER_KIND[section]} {name!r}"
            for index, pattern in enumerate(patterns):
                loc: tuple[int | str, ...] = (section, name, key, index)
                if patterns.index(pattern) != index:
                    raise self.error(loc, f"pattern {pattern.template!r} is listed twice")
                for other_owner, other_loc, other in seen:
                    if other_owner == owner:
                        continue  # one owner's patterns may overlap: the route is the same
                    if other.template == pattern.template:
                        raise self.error(
                            loc,
                            f"pattern {pattern.template!r} is also declared by {other_owner} "
                            f"({dotted_key(other_loc)}); each partition must have exactly "
                            "one owner",
                        )
                    witness = overlap(other, pattern)
                    if witness is not None:
                        raise self.error(
                            loc,
                            f"pattern {pattern.template!r} overlaps {other.template!r} of "
                            f"{other_owner} ({dotted_key(other_loc)}): both match "
                            f"{witness!r}; each partition must have exactly one owner, so "
                            "make the patterns disjoint (e.g. a distinct literal prefix)",
                        )
                seen.append((owner, loc, pattern))

    def check_hints(self, parsed: GraphFile) -> None:
        """Each input hint can be filled from every output pattern of its job, is listed
        once, and the hints form no cycle: no hint that can match an output of its own job,
        and no ring of jobs each hinting an output of the next (``overlap``), which would
        make a partition wait on itself. The reconciler also ignores a hint that leads
        back at run time; refusing the ones the patterns show keeps them out of files."""
        edges: dict[str, list[tuple[str, int, PartitionPattern, PartitionPattern, str]]] = {}
        for name, table in parsed.jobs.items():
            edges[name] = []
            for index, hint in enumerate(table.inputs):
                loc: tuple[int | str, ...] = ("jobs", name, "inputs", index)
                if table.inputs.index(hint) != index:
                    raise self.error(loc, f"pattern {hints.written(hint)!r} is listed twice")
                for out_index, output in enumerate(table.outputs):
                    lacking = hints.missing_fields(hint, output)
                    if lacking:
                        raise self.error(
                            loc,
                            f"job {name!r}: input hint {hints.written(hint)!r} names the field "
                            f"{{{lacking[0]}}}, which its output pattern {output.template!r} "
                            f"(jobs.{name}.outputs[{out_index}]) lacks; a hint's fields are "
                            "filled from the fields of the output partition being built",
                        )
                for other, other_table in parsed.jobs.items():
                    for output in other_table.outputs:
                        witness = overlap(hint, output)
                        if witness is not None:
                            edges[name].append((other, index, hint, output, witness))
        for name in parsed.jobs:
            for other, index, hint, output, witness in edges[name]:
                if other == name:
                    raise self.error(
                        ("jobs", name, "inputs", index),
                        f"job {name!r}: input hint {hints.written(hint)!r} can match its own output "
                        f"pattern {output.template!r} (both match {witness!r}): a partition "
                        "would wait on itself; remove the hint (discovery at run time still "
                        "finds the inputs the job really reads)",
                    )
        cycle = _hint_cycle(edges)
        if cycle:
            steps = "; ".join(
                f"job {job!r} hints {hints.written(hint)!r}, an output of job {other!r}"
                for job, other, hint in cycle
            )
            first, _, hint = cycle[0]
            index = parsed.jobs[first].inputs.index(hint)
            raise self.error(
                ("jobs", first, "inputs", index),
                f"input hints form a cycle: {steps}; a partition would wait on itself "
                "through the others, so remove one of these hints (discovery at run time "
                "still finds the inputs each job really reads)",
            )

    def check_routable(self, graph: GraphSpec, schedule: ScheduleSpec) -> None:
        sample = schedule.ref_for(_SAMPLE_DAY)
        route = graph.route(sample)
        if route.problem:
            raise self.error(
                ("schedules", schedule.name, "partition"),
                f"its refs (such as {sample!r}) cannot be built: {route.problem}",
            )

    def resolve(self, raw: str) -> Path:
        return Path(os.path.normpath(self.root / os.path.expanduser(raw)))

    def storage_url(self, storage: StorageTable, state_dir: Path) -> str:
        if storage.url is not None and storage.url_env is not None:
            raise self.error(("storage", "url_env"), "set either url or url_env, not both")
        loc: tuple[str, ...] = ("storage", "url")
        raw = storage.url
        where = "the URL"
        if storage.url_env is not None:
            loc = ("storage", "url_env")
            where = f"the URL in ${storage.url_env}"
            raw = self.environ.get(storage.url_env)
            if not raw:
                raise self.error(
                    loc, f"the environment variable {storage.url_env} is not set or is empty"
                )
        if raw is None:
            return f"sqlite:///{state_dir / 'bel.sqlite'}"
        if raw.startswith("sqlite:///"):
            file_part = raw.removeprefix("sqlite:///")
            if not file_part or file_part.startswith("?"):
                raise self.error(loc, f"{where} names no SQLite file (sqlite:///path/to/file)")
            return f"sqlite:///{self.resolve(file_part)}"
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme in ("postgresql", "postgres"):
            return raw
        # Only the scheme is echoed: the rest of a URL may hold a password.
        shown = f"a {scheme}:// URL" if scheme else "not a URL"
        raise self.error(
            loc,
            f"{where} is {shown}; use sqlite:///path/to/file.sqlite (relative to the graph "
            "directory) or postgresql://user@host/database",
        )


_OWNER_KIND = {"jobs": "job", "upstreams": "upstream", "externals": "external"}


_HintEdge = tuple[str, int, PartitionPattern, PartitionPattern, str]


def _hint_cycle(edges: dict[str, list[_HintEdge]]) -> list[tuple[str, str, PartitionPattern]]:
    """A ring of two or more jobs, each hinting an output of the next, as (job, next job,
    hint) steps; [] when there is none. Depth first over the jobs in file order."""
    marks: dict[str, bool] = {}  # True: on the current path; False: explored, no ring
    path: list[tuple[str, str, PartitionPattern]] = []

    def visit(job: str) -> list[tuple[str, str, PartitionPattern]]:
        marks[job] = True
        for other, _, hint, _, _ in edges[job]:
            if other == job:
                continue  # a job hinting its own output is refused on its own
            if marks.get(other):
                start = next(i for i, step in enumerate(path) if step[0] == other)
                return [*path[start:], (job, other, hint)]
            if other not in marks:
                path.append((job, other, hint))
                found = visit(other)
                if found:
                    return found
                path.pop()
        marks[job] = False
        return []

    for job in edges:
        if job not in marks:
            found = visit(job)
            if found:
                return found
    return []


def _python_script(command: list[str]) -> bool:
    program = os.path.basename(command[0])
    return program.startswith("python") and len(command) >= 2 and command[1].endswith(".py")
