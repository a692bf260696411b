"""End to end through the real CLI and a real ``databuild serve``: calendar wants waiting on
external partitions that land later.

A calendar copy gets two externals and two jobs. ``vendor/date=D`` is a tariff file a vendor
lands in ``landing/vendor/D.csv``; its check command is the one docs/config.md shows (run
from there, so the doc stays true). ``signoff/date=D`` is a manual sign-off, without a
check: only ``databuild partition live`` makes it live. ``priced/date=D`` = the day's
``daily`` total times the vendor's price; ``published/date=D`` copies ``priced`` once signed
off. A want for ``published/date=2024-01-03`` waits on the vendor file (shown so), goes on
by itself once the file lands (the check finds it), then waits on the sign-off until the CLI
declares it live; the published contents are checked against the daily total and price.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import cli, wait_until

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_SECONDS = 120.0
DAY = "2024-01-03"

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]

JOBS = """
[jobs.priced]
outputs = ["priced/date={date}"]
command = ["python", "jobs/priced.py"]

[jobs.published]
outputs = ["published/date={date}"]
command = ["python", "jobs/published.py"]
"""

PRICED = """
import json, pathlib, sys
from databuild import sdk

def build(ref):
    day = ref.removeprefix("priced/date=")
    sdk.require(f"daily/date={day}", f"vendor/date={day}")
    daily = json.loads(pathlib.Path(f"data/daily/date={day}.json").read_text())
    price = int(pathlib.Path(f"landing/vendor/{day}.csv").read_text().strip())
    out = pathlib.Path(f"data/{ref}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total_wh": daily["total_wh"], "price": price,
                               "cost": daily["total_wh"] * price}))

sdk.run(build)
"""

PUBLISHED = """
import pathlib
from databuild import sdk

def build(ref):
    day = ref.removeprefix("published/date=")
    sdk.require(f"priced/date={day}")  # first the data, then (only then) its sign-off
    sdk.require(f"signoff/date={day}")
    out = pathlib.Path(f"data/{ref}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(pathlib.Path(f"data/priced/date={day}.json").read_text())

sdk.run(build)
"""


def documented_externals() -> str:
    """The externals of docs/concepts.md ("External partitions")."""
    text = (REPO / "docs" / "concepts.md").read_text(encoding="utf-8")
    section = text.split("## External partitions", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert found is not None, "docs/concepts.md shows no externals"
    return found.group(1)


def documented_check() -> str:
    """The check command of docs/config.md ("The check protocol")."""
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    section = text.split("**The check protocol.**", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "docs/config.md shows no check command"
    return found.group(1)


def metric(text: str, name: str, external: str) -> float:
    found = re.search(rf'^{name}{{external="{external}"}} (\S+)$', text, re.MULTILINE)
    assert found is not None, f"no {name} for {external} in /metrics"
    return float(found.group(1))


def test_a_want_waits_on_externals_that_land_later(
    calendar_factory: Callable[[], Path],
    launch_service: Launcher,
    databuild_bin: Path,
    job_env: dict[str, str],
) -> None:
    graph = calendar_factory()
    config = graph / "databuild.toml"
    config.write_text(config.read_text() + documented_externals() + JOBS)
    (graph / "jobs" / "priced.py").write_text(PRICED)
    (graph / "jobs" / "published.py").write_text(PUBLISHED)
    (graph / "checks").mkdir()
    (graph / "checks" / "vendor_files.py").write_text(documented_check())
    proc, url = launch_service(graph)
    with httpx.Client(base_url=url, timeout=30) as client:
        made = cli(
            databuild_bin,
            graph,
            job_env,
            "--json",
            "want",
            "create",
            f"published/date={DAY}",
            "--sla",
            "1h",
        )
        assert made.returncode == 0, made.stderr
        want_id = json.loads(made.stdout)["wants"][0]["want_id"]

        # the daily is built; priced waits on the vendor file, and the root says so
        waiting = f"waiting on external vendor: vendor/date={DAY}"
        want = wait_until(client, want_id, lambda w: w["message"] == waiting)
        assert want["status"] == "waiting"
        shown = cli(databuild_bin, graph, job_env, "want", "status", want_id)
        assert shown.returncode == 0, shown.stderr
        assert waiting in " ".join(shown.stdout.split())
        listed = cli(databuild_bin, graph, job_env, "want", "list", "--status", "active")
        assert f"vendor/date={DAY}" in listed.stdout
        # its SLA (an hour after the data date) is long missed: the blame names the external
        violations = client.get("/api/v1/sla/violations").json()["violations"]
        (violation,) = [v for v in violations if v["want"]["want_id"] == want_id]
        assert violation["current_blame"]["reason"] == "external"
        assert violation["current_blame"]["text"] == waiting
        before = client.get("/metrics").text
        assert metric(before, "databuild_external_refs_waiting", "vendor") == 1
        assert metric(before, "databuild_external_checks_total", "vendor") >= 1

        # (a) the file lands: the check command finds it, priced is built, then published
        # waits on the manual sign-off
        landing = graph / "landing" / "vendor"
        landing.mkdir(parents=True)
        (landing / f"{DAY}.csv").write_text("3\n")
        signoff = f"waiting on external signoff: signoff/date={DAY}"
        wait_until(client, want_id, lambda w: w["message"] == signoff)
        vendor = client.get(f"/api/v1/partitions/vendor/date={DAY}").json()
        assert vendor["status"] == "live" and vendor["upstream"] == "external vendor"
        after = client.get("/metrics").text
        assert metric(after, "databuild_external_refs_found_total", "vendor") == 1
        assert metric(after, "databuild_external_refs_waiting", "signoff") == 1

        # a ref no external declares is refused, exit 2, and nothing changes
        refused = cli(databuild_bin, graph, job_env, "partition", "live", f"daily/date={DAY}")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "is not an external partition" in refused.stderr
        assert "Traceback" not in refused.stderr

        # (b) the sign-off through the CLI (twice: idempotent)
        for _ in range(2):
            live = cli(databuild_bin, graph, job_env, "partition", "live", f"signoff/date={DAY}")
            assert live.returncode == 0, live.stderr
            assert f"signoff/date={DAY}" in live.stdout
        done = wait_until(
            client,
            want_id,
            lambda w: w["status"] not in ("pending", "waiting", "building", "retrying"),
        )
        assert done["status"] == "satisfied", done
        daily = json.loads((graph / "data" / f"daily/date={DAY}.json").read_text())
        published = json.loads((graph / "data" / f"published/date={DAY}.json").read_text())
        assert published == {
            "total_wh": daily["total_wh"],
            "price": 3,
            "cost": daily["total_wh"] * 3,
        }
        events = client.get(
            "/api/v1/events", params={"types": "partition_live", "partition": "signoff/{rest}"}
        ).json()["events"]
        assert len(events) == 1  # declared live twice, recorded once
    proc.terminate()
    proc.wait(timeout=30)
