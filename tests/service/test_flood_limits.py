"""The service's defences against floods (issue 14.5): its connection limit from the
file-descriptor limit, flood warnings collapsed into one line per interval, and a 503 for a
request that finds no file descriptor (a real embedded service in this process, with this
process's descriptors all taken)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from databuild.config.loader import load_config
from databuild.core.errors import InvalidInput
from databuild.service.server import (
    DEFAULT_MAX_CONNECTIONS,
    FDS_PER_JOB_SLOT,
    FDS_RESERVED,
    MIN_CONNECTIONS,
    EmbeddedService,
    FloodLogFilter,
    ServeOptions,
    connection_limit,
    max_connections_from,
)


def test_the_connection_limit_leaves_descriptors_for_the_log_and_the_jobs() -> None:
    cap = DEFAULT_MAX_CONNECTIONS
    assert connection_limit(1024, 4, cap) == 1024 - FDS_RESERVED - 4 * FDS_PER_JOB_SLOT
    assert connection_limit(20_000, 2, cap) > 10_000
    assert connection_limit(50, 16, cap) == MIN_CONNECTIONS  # never none at all


def test_the_connection_limit_is_capped_whatever_the_descriptors() -> None:
    assert connection_limit(1 << 20, 4, DEFAULT_MAX_CONNECTIONS) == DEFAULT_MAX_CONNECTIONS
    assert connection_limit(None, 4, 100) == 100  # ulimit -n unlimited
    assert connection_limit(1024, 4, 100) == 100
    assert max_connections_from({}) == DEFAULT_MAX_CONNECTIONS
    assert max_connections_from({"DATABUILD_MAX_CONNECTIONS": " 500 "}) == 500


@pytest.mark.parametrize("raw", ["0", "-3", "lots", "1e4", "²"])
def test_a_bad_max_connections_says_what_is_expected(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        max_connections_from({"DATABUILD_MAX_CONNECTIONS": raw})
    assert str(caught.value) == (
        "$DATABUILD_MAX_CONNECTIONS must be a whole number >= 1 (how many HTTP connections "
        f"the service holds at once); got {raw!r}"
    )


def record(msg: str, *, exc: bool = False) -> logging.LogRecord:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), exc_info)


def test_a_flood_of_warnings_is_one_line_per_interval_with_a_count_and_no_traceback() -> None:
    flood = FloodLogFilter("socket.accept() out", lambda n: f"{n} not accepted", 3600)
    first = record("socket.accept() out of system resource\nsocket: <x>", exc=True)
    assert flood.filter(first)
    assert (first.getMessage(), first.exc_info, first.levelname) == (
        "1 not accepted",
        None,
        "WARNING",
    )
    assert not any(
        flood.filter(record("socket.accept() out of system resource")) for _ in range(99)
    )
    other = record("something else")
    assert flood.filter(other) and other.getMessage() == "something else"


def test_with_no_interval_every_warning_is_its_own_line() -> None:
    flood = FloodLogFilter("Exceeded", lambda n: f"{n} refused", 0.0)
    lines = []
    for _ in range(3):
        rec = record("Exceeded concurrency limit.")
        if flood.filter(rec):
            lines.append(rec.getMessage())
    assert lines == ["1 refused", "1 refused", "1 refused"]


GRAPH = """
[graph]
name = "descriptors"

[jobs.quick]
outputs = ["quick/{n}"]
command = ["python", "-c", "print('hello')"]
retries = 0
"""


@contextlib.contextmanager
def no_descriptors_left() -> Iterator[None]:
    """Every file descriptor of this process taken (the limit lowered to make it quick);
    all given back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    taken: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_request_that_finds_no_file_descriptor_gets_503_and_the_next_one_works(
    tmp_path: Path, job_env: dict[str, str]
) -> None:
    (tmp_path / "databuild.toml").write_text(GRAPH)
    config = load_config(tmp_path / "databuild.toml", job_env)
    with (
        EmbeddedService(config, ServeOptions(port=0)) as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        client.post("/api/v1/wants", json={"partition_refs": ["quick/1"]}).raise_for_status()
        deadline = time.monotonic() + 60
        while (
            not (runs := client.get("/api/v1/job-runs").json()["job_runs"])
            or runs[0]["status"] != "succeeded"
        ):
            assert time.monotonic() < deadline, runs
            time.sleep(0.05)
        log_url = f"/api/v1/job-runs/{runs[0]['job_run_id']}/log"
        with no_descriptors_left():  # the client's connection is already open
            refused = client.get(log_url)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert re.fullmatch(
            r"the service is out of file descriptors \(ulimit -n \d+\): "
            r"Too many open files; try again later",
            refused.json()["error"],
        ), refused.text
        again = client.get(log_url)
        assert again.status_code == 200 and "hello" in again.text
