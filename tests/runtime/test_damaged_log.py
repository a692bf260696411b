"""A damaged Build Event Log tail is detected at start (issue 14.3): the message names the
last good event, how many follow it, and what to do; nothing is changed; ``databuild serve``
exits non-zero with that one line; after the suggested repair the service starts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from databuild.config import load_config
from databuild.core.errors import StorageError
from databuild.core.model import WantRequest, WantSource
from databuild.core.refs import PartitionRef
from databuild.executors.fake import FakeExecutor
from databuild.log import SqliteEventLog
from databuild.service.host import GraphHost

CONFIG = """
[graph]
name = "g"

[jobs.up]
outputs = ["up/{n}"]
command = ["true"]
"""


def start_and_want(tmp_path: Path, refs: list[str]) -> int:
    config = load_config(tmp_path / "databuild.toml", {})

    async def scenario() -> int:
        host = GraphHost(config, executor=FakeExecutor(slots=0))
        try:
            await host.start()  # as the service does: stopped (log closed) even if it fails
            assert host.controller is not None
            requests = [WantRequest(PartitionRef(r), 0, WantSource.API) for r in refs]
            await host.controller.create_wants(requests)
            return host.controller.last_committed
        finally:
            await host.stop()

    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, int]:
    """A graph whose SQLite BEL has an undecodable event second from the end."""
    (tmp_path / "databuild.toml").write_text(CONFIG)
    last = start_and_want(tmp_path, ["up/1", "up/2", "up/3"])
    assert last >= 3
    bel = tmp_path / ".databuild" / "bel.sqlite"
    with sqlite3.connect(bel) as conn:
        conn.execute(
            "UPDATE build_events SET payload = x'ffffffff0f' WHERE sequence = ?", (last - 1,)
        )
    return tmp_path, last


def test_a_damaged_tail_is_named_with_what_to_do_and_nothing_changes(
    damaged: tuple[Path, int],
) -> None:
    graph, last = damaged
    bel = graph / ".databuild" / "bel.sqlite"
    with pytest.raises(StorageError) as caught:
        start_and_want(graph, ["up/4"])
    message = str(caught.value)
    assert f"damaged after event {last - 2} of {last}" in message
    assert "cannot decode" in message
    assert f"DELETE FROM build_events WHERE sequence > {last - 2}" in message
    assert "lose the 2 after them" in message
    with SqliteEventLog(bel) as log:
        assert log.last_sequence() == last
    with sqlite3.connect(bel) as conn:
        assert conn.execute("SELECT COUNT(*) FROM build_events").fetchone()[0] == last

    # the repair the message suggests lets the service start again
    with sqlite3.connect(bel) as conn:
        conn.execute(f"DELETE FROM build_events WHERE sequence > {last - 2}")
    assert start_and_want(graph, ["up/4"]) > last - 2


def test_databuild_serve_on_a_damaged_log_exits_with_one_line(damaged: tuple[Path, int]) -> None:
    graph, last = damaged
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("databuild")), "serve", "--port", "0"],
        cwd=graph,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"damaged after event {last - 2} of {last}" in errors[0]
    assert "Traceback" not in result.stderr
