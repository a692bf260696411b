"""Benchmark 3: reaction latency, from an upstream partition becoming live to the job
waiting on it starting.

A two-job graph, written into a temporary directory: job ``a`` builds ``a/{n}`` at once;
job ``b`` builds ``b/{n}`` and needs ``a/{n}`` (both are tiny ``sh`` scripts speaking the
job protocol, so a trial costs little besides orchestration). Each trial wants ``b/{n}``
from a real ``databuild serve``: b runs and reports ``a/{n}`` missing, a runs and makes it
live, b runs again. From the service's own event log afterwards:

    reaction = started_at(job_run_started of b's second run) - timestamp(partition_live a/n)

(``started_at``: when the service heard that the run had started; its event may be
committed a little later, together with the run's result.)

It excludes a's run time and the detection of a's exit (partition_live is stamped when the
controller handles a's finish) and includes the decision, the durable append of that step,
spawning b's process and the executor's started report. ``decide`` (live -> b's run queued)
is given separately. Trials run one after another.

Run alone: ``.venv/bin/python -m bench.reaction [--trials 300]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import header, summary_ms, write_result
from bench.service import ServeProcess

GRAPH = """\
[graph]
name = "reaction"

[jobs.a]
outputs = ["a/{n}"]
command = ["sh", "jobs/a.sh"]
concurrency = 4

[jobs.b]
outputs = ["b/{n}"]
command = ["sh", "jobs/b.sh"]
concurrency = 4

[executor]
max_parallel = 4
"""

JOB_A = """\
mkdir -p data/a
for ref in "$@"; do : > "data/$ref"; done
"""

JOB_B = """\
mkdir -p data/b
for ref in "$@"; do
  n="${ref#b/}"
  if [ -e "data/a/$n" ]; then : > "data/$ref"
  else printf '{"missing": {"%s": ["a/%s"]}}\\n' "$ref" "$n" >> "$DATABUILD_RESULT_PATH"
  fi
done
"""


def write_graph(parent: Path) -> Path:
    graph = parent / "reaction"
    (graph / "jobs").mkdir(parents=True)
    (graph / "databuild.toml").write_text(GRAPH)
    (graph / "jobs" / "a.sh").write_text(JOB_A)
    (graph / "jobs" / "b.sh").write_text(JOB_B)
    return graph


def wait_satisfied(client: httpx.Client, want_id: str, after: int) -> int:
    """Follow the event stream (long-poll) until ``want_id`` is satisfied."""
    while True:
        page = client.get(
            "/api/v1/events",
            params={
                "after": after,
                "limit": 1000,
                "wait": 10,
                "types": "want_satisfied,want_failed",
            },
            timeout=30,
        ).json()
        for event in page["events"]:
            payload = event[event["type"]]
            if payload.get("want_id") == want_id:
                if event["type"] != "want_satisfied":
                    raise RuntimeError(f"trial want failed: {payload}")
                return int(page["last_sequence"])
        after = int(page["last_sequence"])


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get("/api/v1/events", params={"after": after, "limit": 1000}).json()
        if not page["events"]:
            return out
        out.extend(page["events"])
        after = int(page["last_sequence"])


def latencies(events: list[dict[str, Any]], first_trial: int) -> tuple[list[float], list[float]]:
    """Per trial n >= first_trial: (live -> b started, live -> b queued), in seconds."""
    live_at: dict[str, float] = {}
    run_of: dict[str, tuple[str, str]] = {}  # run id -> (job, ref)
    queued_at: dict[str, float] = {}
    started_at: dict[str, float] = {}
    b_runs: dict[str, list[str]] = {}
    for event in events:
        kind, payload, ts = event["type"], event[event["type"]], float(event["timestamp"])
        if kind == "partition_live" and payload["partition_ref"].startswith("a/"):
            live_at[payload["partition_ref"][2:]] = ts
        elif kind == "job_run_queued":
            ref = payload["partition_refs"][0]
            run_of[payload["job_run_id"]] = (payload["job_name"], ref)
            queued_at[payload["job_run_id"]] = ts
            if payload["job_name"] == "b":
                b_runs.setdefault(ref[2:], []).append(payload["job_run_id"])
        elif kind == "job_run_started":
            # when the service heard of the start; the event itself may be committed later,
            # with the run's result (the controller's start coalescing, issue 13)
            started_at[payload["job_run_id"]] = float(payload.get("started_at") or ts)
    started, queued = [], []
    for n, runs in b_runs.items():
        if int(n) < first_trial or len(runs) < 2 or n not in live_at:
            continue
        retry = runs[1]
        started.append(started_at[retry] - live_at[n])
        queued.append(queued_at[retry] - live_at[n])
    return started, queued


def run(trials: int, warmup: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-reaction-") as tmp:
        graph = write_graph(Path(tmp))
        with ServeProcess(graph) as service, httpx.Client(base_url=service.url) as client:
            after = int(client.get("/healthz").json()["last_sequence"])
            t0 = time.perf_counter()
            for n in range(warmup + trials):
                created = client.post("/api/v1/wants", json={"partition_refs": [f"b/{n}"]})
                created.raise_for_status()
                after = wait_satisfied(client, created.json()["wants"][0]["want_id"], after)
            elapsed = time.perf_counter() - t0
            events = all_events(client)
    started, queued = latencies(events, warmup)
    figures = {
        "trials": len(started),
        "live_to_started": summary_ms(started),
        "live_to_queued": summary_ms(queued),
        "trial_seconds_mean": round(elapsed / (warmup + trials), 4),
    }
    s = figures["live_to_started"]
    print(
        f"   reaction (a/n live -> b started), {len(started)} trials: p50 {s['p50_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms (target p99 < 50 ms); "
        f"live -> queued p99 {figures['live_to_queued']['p99_ms']:.2f} ms"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description="reaction latency: live -> dependent started")
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    info = header("reaction latency")
    write_result("reaction", run(args.trials), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
