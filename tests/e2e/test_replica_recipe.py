"""The local recipe of docs/operations.md ("Two service replicas on PostgreSQL") runs as written.

The shell block after ``<!-- recipe: replicas -->`` runs with bash in a temp dir, against the
CI PostgreSQL, on two free ports; it must finish (bounded) and print what the doc says it
prints. Any service it left behind is killed with its process group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("DATABUILD_TEST_POSTGRES_URL", "")
SCHEMA = "calendar_ha"  # the recipe's own
DEADLINE = 120.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs DATABUILD_TEST_POSTGRES_URL"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="the recipe uses curl"),
]


def recipe() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    found = re.search(r"<!-- recipe: replicas -->\n```sh\n(.*?)\n```", text, re.S)
    assert found, "docs/operations.md has no replicas recipe"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def drop_schema() -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def test_the_replicas_recipe_runs_as_written(tmp_path: Path) -> None:
    assert "?" not in POSTGRES_URL, "the recipe appends ?schema= to the URL"
    drop_schema()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env |= {"DATABUILD_DB_URL": POSTGRES_URL, "PORT_A": str(free_port())}
    env["PORT_B"] = str(free_port())
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + recipe()
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        drop_schema()
    logs = "".join(
        p.read_text(errors="replace") for p in sorted(tmp_path.glob("replica-*/serve.log"))
    )
    assert proc.returncode == 0, f"{out}\n{logs}"
    assert '"role":"standby"' in out and '"role":"leader"' in out, out
    assert "summary/all" in out, "want list shows the want made before the kill"
    assert "Traceback" not in logs
