"""``databuild build`` in process reads the stream in pages that gather many commits.

Each page waits for a first event, then up to ``LINGER_SECONDS`` for more, and is cut short
as soon as a want the build asked for ends: the command wakes a few times a second instead
of once per commit, and never waits to learn that its build is over. Through the real
embedded service, with real job processes."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from databuild.cli import inprocess
from databuild.cli.inprocess import InProcessBuildApi
from databuild.config import load_config
from databuild.service.server import EmbeddedService, ServeOptions

GRAPH = """
[graph]
name = "pages"

[jobs.gated]
outputs = ["gated/{n}"]
command = ["python", "-c", "import os, time\\nwhile not os.path.exists('go'): time.sleep(0.01)"]
retries = 0

[jobs.quick]
outputs = ["quick/{n}"]
command = ["python", "-c", "pass"]
retries = 0
"""
NEVER = 120.0  # only so that a broken page fails the test instead of hanging it


def types_of(page: dict[str, Any], ref: str, want_id: str) -> list[str]:
    """The event types of ``page`` about ``ref``: its want's, its run's, its partition's."""
    found = []
    for event in page["events"]:
        body = event[event["type"]]
        refs = [body.get("partition_ref"), *body.get("partition_refs", [])]
        ids = [body.get("want_id"), body.get("want", {}).get("want_id"), *body.get("want_ids", [])]
        if ref in refs or want_id in ids:
            found.append(event["type"])
    return found


def test_a_page_gathers_the_commits_until_an_asked_want_ends(
    tmp_path: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inprocess, "LINGER_SECONDS", NEVER)  # only an asked want's end cuts it
    (tmp_path / "databuild.toml").write_text(GRAPH)
    config = load_config(tmp_path / "databuild.toml", job_env)
    with (
        EmbeddedService(config, ServeOptions(port=0)) as service,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        api = InProcessBuildApi(service)
        start = api.last_sequence()
        created = api.create_wants({"partition_refs": ["gated/1"]})
        (asked,) = (w["want_id"] for w in created["wants"])
        page = pool.submit(api.events, start)
        # Another client's build commits while the page lingers: its events join the page.
        other = InProcessBuildApi(service)
        other_start = other.last_sequence()
        (quick_id,) = (
            w["want_id"] for w in other.create_wants({"partition_refs": ["quick/1"]})["wants"]
        )
        seen: list[str] = []
        after = other_start
        while "want_satisfied" not in seen:
            other_page = other.events(after)  # its own asked want ends its pages
            seen += types_of(other_page, "quick/1", quick_id)
            after = other_page["last_sequence"]
        assert not page.done()  # gated/1 has not ended: the page still waits
        (tmp_path / "go").touch()
        gathered = page.result(timeout=NEVER)
    quick = types_of(gathered, "quick/1", quick_id)
    assert quick[0] == "want_created" and {"partition_live", "want_satisfied"} <= set(quick)
    gated = types_of(gathered, "gated/1", asked)
    assert gated[0] == "want_created" and gated[-1] == "want_satisfied"
    ends = [e for e in gathered["events"] if e["type"] == "want_satisfied"]
    assert ends[-1]["want_satisfied"]["want_id"] == asked  # the page ends with the asked end
    sequences = [e["sequence"] for e in gathered["events"]]
    assert sequences == sorted(sequences) and gathered["last_sequence"] == sequences[-1]
