"""Cross-graph coordination through two real ``databuild serve`` processes (issue 9).

The ``ingest`` and ``reports`` graphs of examples/federation, each in its own folder with
its own SQLite Build Event Log, on free loopback ports; real job processes; killed by pid.
A want on ``reports`` is forwarded to ``ingest``, which builds the raw day; ``reports``
hears it on ingest's event stream and builds its report. Then the failure modes: a kill
-9 of the downstream (nothing missed, nothing recorded twice), an unreachable upstream,
an upstream failure, an upstream whose log was replaced (relist).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

Launcher = Callable[..., tuple["subprocess.Popen[bytes]", str]]  # conftest's launch_service
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "federation"
GUARD_SECONDS = 60.0  # against a hang, not an expectation
DAY = 86_400
JAN = 1_704_067_200  # 2024-01-01T00:00:00Z


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, then SIGKILL if it does not go (as conftest does)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Federation:
    """A copy of examples/federation with its ports rewritten, and its two services."""

    def __init__(self, root: Path, launch: Launcher, env: dict[str, str]) -> None:
        shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", ".databuild"))
        self.root = root
        self.launch_service = launch
        self.env = {**env, "FEDERATION_DATA": str(root / "data")}
        self.ingest_port = free_port()
        self.ingest_dir = root / "ingest"
        self.reports_dir = root / "reports"
        self.ingest_url = f"http://127.0.0.1:{self.ingest_port}"
        toml = self.reports_dir / "databuild.toml"
        toml.write_text(toml.read_text().replace("http://127.0.0.1:8181", self.ingest_url))
        self.ingest: subprocess.Popen[bytes] | None = None
        self.reports: subprocess.Popen[bytes] | None = None
        self.reports_url = ""

    def start_ingest(self, **extra_env: str) -> None:
        env = {**self.env, **extra_env}
        self.ingest, _ = self.launch_service(
            self.ingest_dir, "--port", str(self.ingest_port), env=env
        )

    def start_reports(self) -> None:
        self.reports, self.reports_url = self.launch_service(self.reports_dir, env=self.env)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "databuild"), *args],
            cwd=self.reports_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def kill9(self, proc: subprocess.Popen[bytes] | None) -> None:
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in (self.reports, self.ingest):
            if proc is not None:
                stop_process(proc)


@pytest.fixture
def federation(tmp_path: Path, launch_service: Launcher, job_env: dict[str, str]) -> Any:
    fed = Federation(tmp_path / "federation", launch_service, job_env)
    yield fed
    fed.stop()


def get(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def want(url: str, ref: str, stamp: int) -> str:
    response = httpx.post(
        f"{url}/api/v1/wants", json={"partition_refs": [ref], "data_timestamp": stamp}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["wants"][0]["want_id"])


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + GUARD_SECONDS
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached; last seen {last!r}")


def want_status(url: str, want_id: str) -> dict[str, Any]:
    return dict(get(url, f"/api/v1/wants/{want_id}")["want"])


def ended(url: str, want_id: str) -> dict[str, Any] | None:
    found = want_status(url, want_id)
    terminal = ("satisfied", "failed", "upstream_failed", "expired", "canceled")
    return found if found["status"] in terminal else None


def all_events(url: str, types: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = get(url, "/api/v1/events", after=after, types=types, limit=1000)
        out += page["events"]
        if not page["events"]:
            return out
        after = page["events"][-1]["sequence"]


def upstream_lives(url: str) -> list[dict[str, Any]]:
    """The reports graph's PartitionLive events learned from ingest."""
    return [
        e["partition_live"]
        for e in all_events(url, "partition_live")
        if e["partition_live"]["upstream"] == "ingest"
    ]


def ingest_live_sequences(url: str) -> dict[str, int]:
    return {
        e["partition_live"]["partition_ref"]: e["sequence"]
        for e in all_events(url, "partition_live")
    }


def follower(url: str) -> dict[str, Any]:
    ups = get(url, "/api/v1/graph")["upstreams"]
    assert [u["name"] for u in ups] == ["ingest"]
    return dict(ups[0])


def day(n: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(JAN + (n - 1) * DAY))


def check_exactly_once(fed: Federation) -> None:
    """Every raw day live in ingest is live in reports, learned once, from its event."""
    upstream = ingest_live_sequences(fed.ingest_url)
    learned = upstream_lives(fed.reports_url)
    counts = Counter(p["partition_ref"] for p in learned)
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) == set(upstream)
    for p in learned:
        assert p["upstream_sequence"] in (0, upstream[p["partition_ref"]]), p
        assert p["job_run_id"] is None


def test_want_forwarded_built_upstream_then_downstream(federation: Federation) -> None:
    fed = federation
    fed.start_ingest()
    fed.start_reports()
    report = f"report/date={day(2)}"
    want_id = want(fed.reports_url, report, JAN + DAY)
    done = wait_until(lambda: ended(fed.reports_url, want_id), "the report want ends")
    assert done["status"] == "satisfied", done
    # the upstream got one want for the raw day, from an upstream graph, same data time
    ups = get(fed.ingest_url, "/api/v1/wants")["wants"]
    assert [(w["partition_ref"], w["source"], w["data_timestamp"]) for w in ups] == [
        (f"raw/date={day(2)}", "upstream_graph", JAN + DAY)
    ]
    assert ups[0]["status"] == "satisfied"
    # the local PartitionLive names the upstream and carries its sequence (the cursor), or
    # 0 when the forwarder's answer "satisfied" came before the stream's event (a race
    # either side may win; the partition is learned once all the same)
    learned = upstream_lives(fed.reports_url)
    assert [p["partition_ref"] for p in learned] == [f"raw/date={day(2)}"]
    assert learned[0]["upstream_sequence"] in (
        0,
        ingest_live_sequences(fed.ingest_url)[f"raw/date={day(2)}"],
    )
    # no local run ever built the upstream's partition
    runs = get(fed.reports_url, "/api/v1/job-runs")["job_runs"]
    assert {r["job_name"] for r in runs} == {"report"}
    assert all(f"raw/date={day(2)}" not in r["partition_refs"] for r in runs)
    data = json.loads((fed.root / "data" / f"{report}.json").read_text())
    assert data["date"] == day(2) and data["total_wh"] > 0
    state = follower(fed.reports_url)
    assert state["connected"] and state["following"] and state["relists"] == 0
    assert state["cursor"] >= learned[0]["upstream_sequence"]
    assert state["transport"] == "sse"
    # the example README's commands, in the reports folder
    shown = fed.cli("upstreams")
    assert shown.startswith(f"ingest at {fed.ingest_url}: connected, cursor {state['cursor']}")
    assert f"upstream ingest at {fed.ingest_url}" in fed.cli("graph")
    fed.cli("want", "create", f"report/date={day(3)}", "--data-date", day(3))
    wanted = json.loads(fed.cli("--json", "want", "list"))
    assert f"report/date={day(3)}" in {w["partition_ref"] for w in wanted["wants"]}


def test_token_protected_upstream(federation: Federation) -> None:
    fed = federation
    fed.start_ingest(DATABUILD_TOKEN="s3cret-upstream-token")
    toml = fed.reports_dir / "databuild.toml"
    toml.write_text(
        toml.read_text().replace(
            'partitions = ["raw/date={date}"]',
            'partitions = ["raw/date={date}"]\ntoken_env = "INGEST_TOKEN"',
        )
    )
    fed.env["INGEST_TOKEN"] = "wrong"
    fed.start_reports()
    want_id = want(fed.reports_url, f"report/date={day(8)}", JAN)
    state = wait_until(
        lambda: "token" in (s := follower(fed.reports_url))["last_error"] and s,
        "the refused token is shown",
    )
    assert "401" in state["last_error"] and "wrong" not in state["last_error"]
    assert fed.reports is not None
    stop_process(fed.reports)
    fed.env["INGEST_TOKEN"] = "s3cret-upstream-token"
    fed.start_reports()
    done = wait_until(lambda: ended(fed.reports_url, want_id), "the report with the token")
    assert done["status"] == "satisfied", done
    # the token is in no log and no event
    for folder in (fed.reports_dir, fed.ingest_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"s3cret-upstream-token" not in path.read_bytes(), path


def test_kill9_downstream_resumes_without_gap_or_repeat(federation: Federation) -> None:
    fed = federation
    fed.start_ingest()
    fed.start_reports()
    first = [want(fed.reports_url, f"report/date={day(n)}", JAN) for n in (1, 2, 3)]
    wait_until(lambda: all(ended(fed.reports_url, w) for w in first), "first reports")
    # kill -9 the downstream; the upstream goes on building days it is asked for directly
    fed.kill9(fed.reports)
    for n in range(10, 15):
        want(fed.ingest_url, f"raw/date={day(n)}", JAN)
    wait_until(lambda: len(ingest_live_sequences(fed.ingest_url)) == 8, "ingest builds 5 more days")
    fed.start_reports()
    wait_until(lambda: len(upstream_lives(fed.reports_url)) >= 8, "reports learns the 5 days")
    # a want posted, then the downstream killed at once: forwarded again after restart
    late = want(fed.reports_url, f"report/date={day(20)}", JAN)
    fed.kill9(fed.reports)
    fed.start_reports()
    done = wait_until(lambda: ended(fed.reports_url, late), "the late report")
    assert done["status"] == "satisfied", done
    check_exactly_once(fed)
    assert follower(fed.reports_url)["relists"] == 0
    # and the five days learned while down are live here, made by ingest
    parts = get(
        fed.reports_url,
        "/api/v1/partitions",
        ref=[f"raw/date={day(n)}" for n in range(10, 15)],
    )["partitions"]
    assert [(p["status"], p["upstream"]) for p in parts] == [("live", "ingest")] * 5


def test_unreachable_upstream_is_visible_then_recovers(federation: Federation) -> None:
    fed = federation
    fed.start_reports()  # ingest not started: nothing listens at its port
    state = wait_until(
        lambda: (s := follower(fed.reports_url))["last_error"] and s, "the error is shown"
    )
    assert state["following"] and not state["connected"]
    assert "connect" in state["last_error"]
    metrics = httpx.get(f"{fed.reports_url}/metrics", timeout=10).text
    assert 'databuild_upstream_connected{upstream="ingest"} 0.0' in metrics
    want_id = want(fed.reports_url, f"report/date={day(4)}", JAN)
    raw_want = wait_until(
        lambda: [
            w
            for w in get(fed.reports_url, "/api/v1/wants")["wants"]
            if w["partition_ref"] == f"raw/date={day(4)}"
        ],
        "the report job asks for the raw day",
    )[0]
    shown = want_status(fed.reports_url, raw_want["want_id"])
    assert shown["message"].startswith("waiting on upstream graph ingest: want not yet")
    assert "unreachable" in shown["message"]
    fed.start_ingest()
    done = wait_until(lambda: ended(fed.reports_url, want_id), "the report after ingest is up")
    assert done["status"] == "satisfied", done
    state = wait_until(
        lambda: (s := follower(fed.reports_url))["connected"] and s, "the follower connected"
    )
    assert state["last_error"] == "" and state["reconnects"] >= 1
    # an upstream still replaying its log (/healthz "starting", last_sequence 0) was not
    # taken for one whose log was reset
    assert state["relists"] == 0
    metrics = httpx.get(f"{fed.reports_url}/metrics", timeout=10).text
    assert 'databuild_upstream_connected{upstream="ingest"} 1.0' in metrics
    check_exactly_once(fed)


def test_upstream_failure_fails_local_wants(federation: Federation) -> None:
    fed = federation
    fed.start_ingest(FEDERATION_FAIL=day(5))
    fed.start_reports()
    want_id = want(fed.reports_url, f"report/date={day(5)}", JAN)
    done = wait_until(lambda: ended(fed.reports_url, want_id), "the report want ends")
    assert done["status"] == "upstream_failed", done
    assert "upstream graph ingest" in done["message"]
    assert f"no readings delivered for {day(5)}" in done["message"]
    # a day that does not fail still works
    ok = want(fed.reports_url, f"report/date={day(6)}", JAN)
    assert wait_until(lambda: ended(fed.reports_url, ok), "day 6")["status"] == "satisfied"


def test_replaced_upstream_log_is_relisted(federation: Federation) -> None:
    fed = federation
    fed.start_ingest()
    fed.start_reports()
    first = [want(fed.reports_url, f"report/date={day(n)}", JAN) for n in (1, 2, 3, 4)]
    wait_until(lambda: all(ended(fed.reports_url, w) for w in first), "first reports")
    cursor = follower(fed.reports_url)["cursor"]
    # the upstream's log is replaced: a new, empty one (its data stays)
    assert fed.ingest is not None
    stop_process(fed.ingest)
    shutil.rmtree(fed.ingest_dir / ".databuild")
    fed.start_ingest()
    want_id = want(fed.reports_url, f"report/date={day(7)}", JAN)
    done = wait_until(lambda: ended(fed.reports_url, want_id), "a report after the reset")
    assert done["status"] == "satisfied", done
    state = follower(fed.reports_url)
    assert state["relists"] == 1, state
    assert state["cursor"] < cursor  # it follows the new log, from where it was relisted
    learned = Counter(p["partition_ref"] for p in upstream_lives(fed.reports_url))
    assert learned[f"raw/date={day(7)}"] == 1 and all(n == 1 for n in learned.values())


DIGEST_TOML = """
[graph]
name = "digest"

[upstreams.reports]
url = "URL"
partitions = ["report/date={date}"]

[jobs.digest]
outputs = ["digest/date={date}"]
command = ["python", "-c", '''
import sys
from databuild import sdk
def build(ref):
    day = ref.removeprefix("digest/date=")
    sdk.require_for(ref, "report/date=" + day)
sdk.run(build)
''']
timeout = "1m"
"""


def test_chain_and_diamond(federation: Federation, tmp_path: Path) -> None:
    """ingest -> reports -> digest (a chain), and a second reports graph following the
    same ingest (a diamond): one upstream want serves both, each learns the day once."""
    fed = federation
    fed.start_ingest()
    fed.start_reports()
    twin_dir = tmp_path / "reports-twin"
    shutil.copytree(fed.reports_dir, twin_dir, ignore=shutil.ignore_patterns(".databuild"))
    twin, twin_url = fed.launch_service(twin_dir, env=fed.env)
    digest_dir = tmp_path / "digest"
    digest_dir.mkdir()
    (digest_dir / "databuild.toml").write_text(DIGEST_TOML.replace("URL", fed.reports_url))
    digest, digest_url = fed.launch_service(digest_dir, env=fed.env)
    try:
        top = want(digest_url, f"digest/date={day(9)}", JAN)
        side = want(twin_url, f"report/date={day(9)}", JAN)
        assert wait_until(lambda: ended(digest_url, top), "digest")["status"] == "satisfied"
        assert wait_until(lambda: ended(twin_url, side), "twin")["status"] == "satisfied"
        # ingest built the raw day once, for one want asked by both downstreams
        runs = get(fed.ingest_url, "/api/v1/job-runs")["job_runs"]
        assert [r["partition_refs"] for r in runs] == [[f"raw/date={day(9)}"]]
        ups = get(fed.ingest_url, "/api/v1/wants")["wants"]
        assert [(w["partition_ref"], w["source"]) for w in ups] == [
            (f"raw/date={day(9)}", "upstream_graph")
        ]
        # reports built the report once; digest learned it from reports, once
        report_runs = [
            r
            for r in get(fed.reports_url, "/api/v1/job-runs")["job_runs"]
            if r["status"] == "succeeded"
        ]
        assert len(report_runs) == 1
        learned = [
            e["partition_live"]
            for e in all_events(digest_url, "partition_live")
            if e["partition_live"]["upstream"] == "reports"
        ]
        assert [p["partition_ref"] for p in learned] == [f"report/date={day(9)}"]
        for url in (fed.reports_url, twin_url):
            assert [p["partition_ref"] for p in upstream_lives(url)] == [f"raw/date={day(9)}"]
    finally:
        stop_process(digest)
        stop_process(twin)


def test_kill9_upstream_resumes_from_the_cursor(federation: Federation) -> None:
    """The upstream killed -9 and restarted on its own log: the follower resumes after its
    cursor (no relist), the want forwarded meanwhile is acknowledged once it is back."""
    fed = federation
    fed.start_ingest()
    fed.start_reports()
    first = want(fed.reports_url, f"report/date={day(11)}", JAN)
    wait_until(lambda: ended(fed.reports_url, first), "the first report")
    fed.kill9(fed.ingest)
    wait_until(lambda: not follower(fed.reports_url)["connected"], "the follower notices")
    late = want(fed.reports_url, f"report/date={day(12)}", JAN)
    fed.start_ingest()
    done = wait_until(lambda: ended(fed.reports_url, late), "the report after the restart")
    assert done["status"] == "satisfied", done
    state = follower(fed.reports_url)
    assert state["relists"] == 0 and state["connected"]
    check_exactly_once(fed)


def test_sla_blame_follows_the_chain_into_the_upstream(federation: Federation) -> None:
    """A report want late because ingest's job keeps failing on the raw day: the
    downstream's blame names the upstream graph, its job's failure and the upstream ref,
    from the upstream's own blame of the forwarded want (GET /api/v1/sla/blame)."""
    fed = federation
    toml = fed.ingest_dir / "databuild.toml"
    toml.write_text(
        toml.read_text().replace(
            "max_batch = 16\n", 'max_batch = 16\nretries = 5\nretry_backoff = "2m"\n'
        )
    )
    fed.start_ingest(FEDERATION_FLAKY=day(7))
    fed.start_reports()
    response = httpx.post(
        f"{fed.reports_url}/api/v1/wants",
        json={"partition_refs": [f"report/date={day(7)}"], "data_timestamp": JAN, "sla_seconds": 1},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    want_id = response.json()["wants"][0]["want_id"]

    def blamed() -> dict[str, Any] | None:
        found = get(fed.reports_url, f"/api/v1/sla/blame/{want_id}")
        return found if "retry scheduled" in found["blame"]["text"] else None

    found = wait_until(blamed, "the blame reaches into ingest")
    blame = found["blame"]
    assert found["graph"] == "reports"
    assert blame["partition_ref"] == f"raw/date={day(7)}"
    assert blame["reason"] == "retrying"
    assert blame["text"].startswith("upstream graph ingest: job failed (")
    assert f"the meter feed for {day(7)} timed out" in blame["text"]
    assert blame["text"].endswith(f"on raw/date={day(7)}")
    # the SLA (1 s after the data date, long past) is missed: the violation's current blame
    # follows the chain too, and so does the CLI
    violations = get(fed.reports_url, "/api/v1/sla/violations")["violations"]
    (late,) = [v for v in violations if v["want"]["want_id"] == want_id]
    assert late["current_blame"]["text"] == blame["text"]
    assert late["blame"]  # what held it up at the deadline, recorded then (here: the queue)
    shown = json.loads(fed.cli("sla", "violations", "--json"))["violations"]
    (mine,) = [v for v in shown if v["want"]["want_id"] == want_id]
    assert mine["current_blame"]["text"] == blame["text"]
    for page in ("/sla", f"/wants/{want_id}"):  # the dashboard says so too
        html = httpx.get(f"{fed.reports_url}{page}", timeout=10).text
        assert "upstream graph ingest: job failed (the meter feed" in html, page


def test_sla_blame_of_an_unknown_want_is_404(federation: Federation) -> None:
    federation.start_ingest()
    response = httpx.get(f"{federation.ingest_url}/api/v1/sla/blame/wnope", timeout=10)
    assert response.status_code == 404
    assert "no want 'wnope'" in response.json()["error"]


class NoStreamProxy:
    """A reverse proxy in front of ingest that offers no event stream (404), as an older
    DataBuild or a buffering proxy would: the follower must fall back to the long-poll."""

    def __init__(self, target: str) -> None:
        import http.server
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if self.path.startswith("/api/v1/events/stream"):
                    proxy.refused += 1
                    body = b'{"error": "no such route"}'
                    self.send_response(404)
                else:
                    length = int(self.headers.get("content-length") or 0)
                    sent = self.rfile.read(length) if length else None
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type")
                    }
                    answer = httpx.request(
                        self.command,
                        f"{target}{self.path}",
                        content=sent,
                        headers=headers,
                        timeout=60,
                    )
                    body = answer.content
                    self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.refused = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_upstream_without_a_stream_is_followed_by_long_poll(federation: Federation) -> None:
    fed = federation
    fed.start_ingest()
    proxy = NoStreamProxy(fed.ingest_url)
    try:
        toml = fed.reports_dir / "databuild.toml"
        toml.write_text(toml.read_text().replace(fed.ingest_url, proxy.url))
        fed.start_reports()
        want_id = want(fed.reports_url, f"report/date={day(4)}", JAN)
        done = wait_until(lambda: ended(fed.reports_url, want_id), "the report want ends")
        assert done["status"] == "satisfied", done
        state = follower(fed.reports_url)
        assert state["transport"] == "long-poll" and state["connected"], state
        assert proxy.refused >= 1
        assert [p["partition_ref"] for p in upstream_lives(fed.reports_url)] == [
            f"raw/date={day(4)}"
        ]
    finally:
        proxy.close()
