"""Helpers for the config tests: write a databuild.toml into a temporary directory and load
it, or load it expecting a ConfigError. Used only by tests/config; touches only tmp paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from databuild.config import GraphConfig, load_config
from databuild.core.errors import ConfigError

MINIMAL = """\
[graph]
name = "demo"

[jobs.ingest]
outputs = ["raw/date={date}"]
command = ["python", "jobs/ingest.py"]
"""


def write_config(directory: Path, text: str) -> Path:
    path = directory / "databuild.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> GraphConfig:
    return load_config(write_config(directory, text), environ={} if environ is None else environ)


def load_error(directory: Path, text: str, environ: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(directory, text, environ)
    return caught.value
