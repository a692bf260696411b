"""End to end through the real CLI: a job's version is recorded on what it builds, and a new
version deployed by ``databuild reload`` makes those partitions stale, listed by
``databuild partitions --stale`` and rebuilt by nothing until ``databuild partition
invalidate --job NAME --older-than-version`` asks for it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import cli, wait_done

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]
HANG_GUARD_SECONDS = 120.0


def set_version(graph: Path, version: str) -> None:
    config = graph / "databuild.toml"
    text = config.read_text()
    marker = 'command = ["python", "jobs/clean.py"]\n'
    head, tail = text.split(marker, 1)
    tail = "\n".join(line for line in tail.split("\n") if not line.startswith("version = "))
    config.write_text(f'{head}{marker}version = "{version}"\n{tail}')


def test_a_new_job_version_makes_its_old_partitions_stale(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> None:
    graph = calendar_factory()
    config = graph / "databuild.toml"  # without its schedule, which would build other days
    config.write_text(config.read_text().split("[schedules.daily]", 1)[0])
    set_version(graph, "1")
    proc, url = launch_service(graph)
    with httpx.Client(base_url=url, timeout=30) as client:
        made = cli(
            databuild_bin, graph, job_env, "--json", "want", "create", "daily/date=2024-01-02"
        )
        assert made.returncode == 0, made.stderr
        want = wait_done(client, json.loads(made.stdout)["wants"][0]["want_id"])
        assert want["status"] == "satisfied", want
        daily = client.get("/api/v1/partitions/daily/date=2024-01-02").json()
        assert (daily["job_version"], daily["stale"]) == ("1", False)
        none = cli(databuild_bin, graph, job_env, "--json", "partitions", "--stale")
        assert json.loads(none.stdout) == {"partitions": []}

        set_version(graph, "2")
        reloaded = cli(databuild_bin, graph, job_env, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        runs_before = len(client.get("/api/v1/job-runs").json()["job_runs"])
        listed = cli(databuild_bin, graph, job_env, "--json", "partitions", "--stale")
        assert listed.returncode == 0, listed.stderr
        (stale,) = json.loads(listed.stdout)["partitions"]
        assert stale["partition_ref"] == "daily/date=2024-01-02"
        assert (stale["status"], stale["job_version"], stale["stale"]) == ("live", "1", True)
        shown = cli(databuild_bin, graph, job_env, "partitions", "--stale")
        assert "stale: built by version 1" in shown.stdout
        # the raw partition's job declares no version: never stale; nothing was rebuilt
        raw = client.get("/api/v1/partitions/raw/date=2024-01-02").json()
        assert (raw["status"], raw["stale"]) == ("live", False)
        assert len(client.get("/api/v1/job-runs").json()["job_runs"]) == runs_before

        # asked for explicitly: the old version's partitions are invalidated in one step,
        # their want reopened, and rebuilt under version 2 (raw, of no version, stays)
        done = cli(
            databuild_bin, graph, job_env, "--json", "partition", "invalidate",
            "--job", "clean", "--older-than-version", "--reason", "clean v2 deployed",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert [p["partition_ref"] for p in answer["partitions"]] == ["daily/date=2024-01-02"]
        (reopened,) = answer["reopened_want_ids"]
        assert wait_done(client, reopened)["status"] == "satisfied"
        daily = client.get("/api/v1/partitions/daily/date=2024-01-02").json()
        assert (daily["status"], daily["job_version"], daily["stale"]) == ("live", "2", False)
        assert client.get("/api/v1/partitions/raw/date=2024-01-02").json()["status"] == "live"
        none = cli(databuild_bin, graph, job_env, "--json", "partitions", "--stale")
        assert json.loads(none.stdout) == {"partitions": []}
    proc.terminate()
    proc.wait(timeout=30)
