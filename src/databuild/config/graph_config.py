"""The loaded configuration of one graph: what ``load_config`` returns.

Frozen values only. The service, runtime and CLI read them to open the Build Event Log, start
the executor, listen, follow upstream graphs and run schedules. Building and validating them is
the loader's job (``databuild.config.loader``); nothing here reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from databuild.config.schedule import ScheduleSpec
from databuild.core.model import ExternalSpec, GraphSpec, JobSpec, UpstreamSpec

CONFIG_FILENAME = "databuild.toml"
EXECUTOR_KINDS = ("local", "ray")


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """``[executor]``: which executor runs jobs and how many job processes run at once.
    ``address`` is the Ray cluster to connect to (``kind = "ray"`` only; "" for local)."""

    kind: str
    max_parallel: int
    address: str = ""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """``[service]``: where the service listens; port 0 means "pick a free port".
    ``token_env`` names the environment variable holding the bearer token for writes."""

    host: str = "127.0.0.1"
    port: int = 0
    token_env: str = "DATABUILD_TOKEN"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """``[alerts]``: URLs that receive a POST for alert-worthy events (SLA violations)."""

    webhooks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GraphConfig:
    """Everything ``databuild.toml`` says, with paths absolute and defaults filled in."""

    path: Path  # the databuild.toml file, absolute
    root_dir: Path  # its directory: relative paths in the file, and jobs' cwd, start here
    graph: GraphSpec
    # May carry a password (postgresql://user:secret@host/db), so it stays out of repr.
    storage_url: str = field(repr=False)
    state_dir: Path  # run logs and the default SQLite Build Event Log live here
    executor: ExecutorSettings
    service: ServiceSettings
    schedules: tuple[ScheduleSpec, ...] = ()
    alerts: AlertSettings = AlertSettings()
    # sha256 of the file's bytes: tells a running service's configuration from the file's
    digest: str = ""

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def jobs(self) -> tuple[JobSpec, ...]:
        return self.graph.jobs

    @property
    def upstreams(self) -> tuple[UpstreamSpec, ...]:
        return self.graph.upstreams

    @property
    def externals(self) -> tuple[ExternalSpec, ...]:
        return self.graph.externals

    @property
    def runs_dir(self) -> Path:
        """Per-run log files go under here."""
        return self.state_dir / "runs"

    def schedule(self, name: str) -> ScheduleSpec:
        for schedule in self.schedules:
            if schedule.name == name:
                return schedule
        raise KeyError(name)
