"""``[executor] kind = "ray"`` and ``[jobs.NAME.resources]``: loaded as written, and without
the Ray extra a one-line error naming the install command (Ray itself is never imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from databuild.core.model import RunResources

from .config_helpers import MINIMAL, load_text, write_config


def test_ray_executor_and_job_resources_load(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """
[jobs.ingest.resources]
num_cpus = 0.5
memory = 1073741824
custom = { ssd = 1, GPU = 1 }

[executor]
kind = "ray"
address = "ray://head.internal:10001"
max_parallel = 8
""",
    )
    assert (config.executor.kind, config.executor.address) == ("ray", "ray://head.internal:10001")
    assert config.executor.max_parallel == 8
    assert config.jobs[0].resources == RunResources(0.5, 1 << 30, (("GPU", 1.0), ("ssd", 1.0)))


def test_ray_address_defaults_to_auto_and_local_has_none(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL + '[executor]\nkind = "ray"\n').executor.address == "auto"
    local = load_text(tmp_path, MINIMAL)
    assert (local.executor.kind, local.executor.address) == ("local", "")
    assert local.jobs[0].resources == RunResources()


def test_ray_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, MINIMAL + '\n[executor]\nkind = "ray"\n')
    # A fresh interpreter in which `ray` cannot be found or imported.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["ray"] = None  # what importing and finding it see without the extra
        from databuild.config import load_config
        from databuild.core.errors import ConfigError
        try:
            load_config({str(path)!r})
        except ConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message
    assert "executor.kind" in message and str(path) in message
    assert "pip install 'databuild[ray]'" in message
