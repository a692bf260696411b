"""Finding a running service: the ``service.json`` file a service writes for its graph.

The service (``host``) writes it when it starts and removes it when it stops; the CLI
reads it to find the service of the graph it is pointed at. Kept apart from the HTTP
stack so that reading it imports nothing heavy (every CLI command does it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from databuild.config import GraphConfig

DISCOVERY_FILE = "service.json"


@dataclass(frozen=True)
class ServiceRecord:
    url: str
    pid: int
    graph: str


def discovery_path(config: GraphConfig) -> Path:
    return config.state_dir / DISCOVERY_FILE


def read_discovery(config: GraphConfig) -> ServiceRecord | None:
    """The service that says it serves this graph, if its process is alive."""
    path = discovery_path(config)
    try:
        data = json.loads(path.read_text())
        record = ServiceRecord(str(data["url"]), int(data["pid"]), str(data["graph"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return record
