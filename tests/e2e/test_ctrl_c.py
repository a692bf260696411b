"""Ctrl-C of ``databuild build`` in a terminal, and the state a user sees after it.

A real ``databuild build`` runs in a pseudo-terminal (its controlling terminal, as in a
shell), and the test types Ctrl-C into it: the terminal sends SIGINT to the command's
process group, as a user's Ctrl-C does. The job it runs connects to a socket the test
listens on, so the test knows when the run is in flight, and sees it end (the connection
closes) when it is killed; no sleeping. Issue 16, row 10.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import socket
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

GUARD_SECONDS = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
GRAPH = """
[graph]
name = "ctrlc"

[jobs.hold]
outputs = ["hold/id={{id}}"]
command = ["python", "-c", '''
import socket, sys, time
connection = socket.create_connection(("127.0.0.1", {port}))
connection.sendall(sys.argv[1].encode() + b"\\n")
time.sleep(3600)
''']
retries = 0
timeout = "2h"
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(GUARD_SECONDS)
        yield server


@pytest.fixture
def graph_dir(tmp_path: Path, listener: socket.socket) -> Path:
    (tmp_path / "databuild.toml").write_text(GRAPH.format(port=listener.getsockname()[1]))
    return tmp_path


def _take_terminal() -> None:
    """In the child: a session of its own with the pty (its stdin) as controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command running in a pseudo-terminal; ``output`` is all it printed so far."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**env, "TERM": "xterm", "COLUMNS": "200"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_take_terminal,  # no threads here yet: preexec_fn is safe
        )
        os.close(slave)
        self.output = ""

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")  # the terminal turns it into SIGINT

    def wait(self) -> int:
        """Read everything until the command exits (it must, within the guard)."""
        deadline = time.monotonic() + GUARD_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the terminal's other side is gone
                break
            if not chunk:
                break
            self.output += ANSI.sub("", chunk.decode("utf-8", "replace"))
        code = self.proc.wait(timeout=GUARD_SECONDS)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def in_terminal(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Terminal]:
    terminal = Terminal(argv, cwd, env)
    try:
        yield terminal
    finally:
        terminal.kill()


def _job_started(listener: socket.socket) -> socket.socket:
    """The job's connection, once its run is in flight (it says which ref it builds)."""
    connection, _ = listener.accept()
    connection.settimeout(GUARD_SECONDS)
    assert connection.recv(100).startswith(b"hold/id=")
    return connection


def _run(
    exe: Path, cwd: Path, env: dict[str, str], *args: str, code: int = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GUARD_SECONDS
    )
    assert done.returncode == code, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_ctrl_c_of_an_embedded_build_says_what_happened_and_reads_show_interrupted(
    graph_dir: Path, listener: socket.socket, databuild_bin: Path, job_env: dict[str, str]
) -> None:
    with in_terminal([str(databuild_bin), "build", "hold/id=1"], graph_dir, job_env) as term:
        job = _job_started(listener)
        term.ctrl_c()
        code = term.wait()
    assert code == 130, term.output
    assert "Traceback" not in term.output
    said = " ".join(term.output.split())
    assert "interrupted: the build stopped with its embedded service" in said, said
    assert "1 job run(s) in flight were stopped (r" in said
    assert "1 of 1 wants not finished" in said
    assert "`databuild build hold/id=1` (or `databuild serve`) takes it up" in said
    assert job.recv(100) == b""  # the job was killed with the service: its connection closed
    job.close()

    # no service now: reads say so in one line, and show the run and its want interrupted
    runs = _run(databuild_bin, graph_dir, job_env, "--json", "runs")
    note = runs.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: no DataBuild service is running")
    (run,) = json.loads(runs.stdout)["job_runs"]
    assert run["status"] == "interrupted" and "interrupted" in run["message"]
    human = _run(databuild_bin, graph_dir, job_env, "runs").stdout
    assert "interrupted" in human and "running" not in human
    wants = _run(databuild_bin, graph_dir, job_env, "--json", "want", "list").stdout
    (want,) = json.loads(wants)["wants"]
    assert want["status"] == "interrupted"
    status = _run(databuild_bin, graph_dir, job_env, "want", "status", want["want_id"])
    assert "interrupted" in status.stdout and "building" not in status.stdout
    assert status.stderr.startswith("note: no DataBuild service is running")

    # building again takes it up: the interrupted run is recorded lost and run again, and a
    # second Ctrl-C names that run (queued before this build followed anything)
    with in_terminal([str(databuild_bin), "build", "hold/id=1"], graph_dir, job_env) as term:
        job = _job_started(listener)
        term.ctrl_c()
        code = term.wait()
    assert code == 130, term.output
    said = " ".join(term.output.split())
    assert "1 job run(s) in flight were stopped (r00000002" in said, said
    assert job.recv(100) == b""
    job.close()
    (lost, _) = sorted(
        json.loads(_run(databuild_bin, graph_dir, job_env, "--json", "runs").stdout)["job_runs"],
        key=lambda r: str(r["job_run_id"]),
    )
    assert (lost["status"], lost["failure_kind"]) == ("failed", "lost")


def test_ctrl_c_of_a_client_build_says_the_wants_go_on_and_how_to_cancel(
    graph_dir: Path,
    listener: socket.socket,
    databuild_bin: Path,
    job_env: dict[str, str],
    launch_service: Callable[..., tuple[Any, str]],
) -> None:
    service, url = launch_service(graph_dir)
    try:
        argv = [str(databuild_bin), "build", "hold/id=2"]
        with in_terminal(argv, graph_dir, job_env) as term:
            job = _job_started(listener)
            term.ctrl_c()
            code = term.wait()
        assert code == 130, term.output
        assert "Traceback" not in term.output
        said = " ".join(term.output.split())
        assert f"interrupted: stopped following; the build goes on in the service at {url}" in (
            said
        ), said
        (want,) = httpx.get(f"{url}/api/v1/wants", timeout=30).json()["wants"]
        assert want["status"] == "building"  # it does go on
        assert f"databuild want cancel {want['want_id']} # hold/id=2" in said
        # and cancelling it as told stops the run: the job's connection closes
        cancel = _run(databuild_bin, graph_dir, job_env, "want", "cancel", want["want_id"])
        assert "canceled" in cancel.stdout
        assert job.recv(100) == b""
        job.close()
    finally:
        service.terminate()
        service.wait(timeout=30)
