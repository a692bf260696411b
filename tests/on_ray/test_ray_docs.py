"""The local Ray recipe of docs/operations.md ("A local Ray cluster (no containers)"), run
as written: ``ray start`` for a head and a second node in a loopback-only network namespace,
then the calendar example built on them. The nodes it leaves running are stopped by pid
(their environment carries the recipe's RAY_TMPDIR, under this test's own TMPDIR)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from e2e.test_calendar_build import DATABUILD, EXAMPLE, check_outputs

from .conftest import kill_left_behind

pytestmark = pytest.mark.slow

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def recipe() -> str:
    text = OPERATIONS.read_text()
    section = text.split("#### A local Ray cluster (no containers)", 1)[1]
    found = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert found, "docs/operations.md lost its local Ray recipe"
    return found.group(1)


def test_the_documented_local_ray_recipe_builds_the_calendar(tmp_path: Path) -> None:
    graph = tmp_path / "calendar"
    shutil.copytree(
        EXAMPLE, graph, ignore=shutil.ignore_patterns("data", ".databuild", "__pycache__")
    )
    own_tmp = tempfile.mkdtemp(prefix="dbdoc-", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,
        "PATH": f"{Path(DATABUILD).parent}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": own_tmp,
    }
    env.pop("RAY_TMPDIR", None)
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            ["bash", "-c", recipe()],
            cwd=graph,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        # Ray's agents rewrite their environment (their process title), so they are found
        # by the network namespace they share with the recipe's marked processes.
        namespaces = {_net_namespace(pid) for pid in _with_env_prefix(f"RAY_TMPDIR={own_tmp}/")} - {
            _net_namespace(os.getpid()),
            "",
        }
        for pid in _pids():
            if pid != os.getpid() and _net_namespace(pid) in namespaces:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        left = kill_left_behind(f"RAY_TMPDIR={own_tmp}/", exact=False)
        shutil.rmtree(own_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "satisfied" in done.stdout
    check_outputs(graph)
    assert not left, f"processes outlived the recipe's cluster: {left}"


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _with_env_prefix(prefix: str) -> list[int]:
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if any(e.startswith(prefix.encode()) for e in f.read().split(b"\0")):
                    found.append(pid)
        except OSError:
            continue
    return found


def _net_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""
