"""Graph configuration: find ``databuild.toml``, validate it, and return a ``GraphConfig``.

Called by the CLI and the service at start-up; the runtime's scheduler uses ``ScheduleSpec``.
Invalid configuration fails here, at load, with a ``ConfigError`` that names the file, the key
and the problem. Nothing in this package starts processes, opens the Build Event Log or writes
files.
"""

from databuild.config.durations import parse_duration
from databuild.config.graph_config import (
    CONFIG_FILENAME,
    EXECUTOR_KINDS,
    AlertSettings,
    ExecutorSettings,
    GraphConfig,
    ServiceSettings,
)
from databuild.config.loader import find_config, load_config
from databuild.config.schedule import SCHEDULE_FIELDS, DataDate, ScheduleSpec

__all__ = [
    "CONFIG_FILENAME",
    "EXECUTOR_KINDS",
    "SCHEDULE_FIELDS",
    "AlertSettings",
    "DataDate",
    "ExecutorSettings",
    "GraphConfig",
    "ScheduleSpec",
    "ServiceSettings",
    "find_config",
    "load_config",
    "parse_duration",
]
