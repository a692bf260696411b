"""``warm = true`` is for Python scripts only, and says so at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from databuild.config import load_config
from databuild.core.errors import ConfigError

BASE = """
[graph]
name = "g"

[jobs.x]
outputs = ["x/{n}"]
command = COMMAND
warm = true
"""


def write(tmp_path: Path, command: str) -> Path:
    path = tmp_path / "databuild.toml"
    path.write_text(BASE.replace("COMMAND", command))
    return path


def test_a_python_script_may_be_warm(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '["python3", "jobs/x.py", "--flag"]'), {})
    assert config.graph.job("x").warm is True


@pytest.mark.parametrize("command", ['["bin/x"]', '["python", "-c", "pass"]', '["bash", "x.py"]'])
def test_anything_else_is_refused_naming_the_key(tmp_path: Path, command: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, command), {})
    message = str(caught.value)
    assert "databuild.toml: jobs.x.warm:" in message
    assert '["python", "path/to/job.py", ...]' in message
