"""Benchmark: reaction across graphs, from an upstream graph's partition becoming live to
the downstream job waiting on it starting (issue 9).

Two real ``databuild serve`` processes on loopback, each in its own folder: ``up`` builds
``a/{n}`` (a tiny ``sh`` job); ``down`` declares ``[upstreams.up]`` for ``a/{n}`` and its
job ``b`` needs ``a/{n}``. Each trial wants ``b/{n}`` from ``down``: b runs and reports
``a/{n}`` missing, ``down`` forwards a want to ``up``, a runs there and makes it live,
``down`` hears it on up's SSE event stream, records it and starts b again. From the
two services' logs afterwards (same machine, same clock):

    reaction = timestamp(down: job_run_started of b's second run) - timestamp(up: partition_live a/n)
    learned  = timestamp(down: partition_live a/n) - timestamp(up: partition_live a/n)

Run alone: ``.venv/bin/python -m bench.federation_reaction [--trials 300]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import header, summary_ms, write_result
from bench.reaction import JOB_A, JOB_B, all_events, wait_satisfied
from bench.service import ServeProcess

UP = """\
[graph]
name = "up"

[jobs.a]
outputs = ["a/{n}"]
command = ["sh", "jobs/a.sh"]
concurrency = 4
"""

DOWN = """\
[graph]
name = "down"

[upstreams.up]
url = "URL"
partitions = ["a/{n}"]

[jobs.b]
outputs = ["b/{n}"]
command = ["sh", "jobs/b.sh"]
concurrency = 4
"""


def write(parent: Path, name: str, toml: str, job: str, script: str) -> Path:
    graph = parent / name
    (graph / "jobs").mkdir(parents=True)
    (graph / "databuild.toml").write_text(toml)
    (graph / "jobs" / job).write_text(script)
    return graph


def run(trials: int, warmup: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        root = Path(tmp)
        shared = root / "data"
        up_dir = write(root, "up", UP, "a.sh", JOB_A)
        with ServeProcess(up_dir) as up:
            down_dir = write(root, "down", DOWN.replace("URL", up.url), "b.sh", JOB_B)
            # both jobs read and write data/ of their own folder: make it one folder
            shared.mkdir()
            (up_dir / "data").symlink_to(shared)
            (down_dir / "data").symlink_to(shared)
            with ServeProcess(down_dir) as down, httpx.Client(base_url=down.url) as client:
                after = int(client.get("/healthz").json()["last_sequence"])
                t0 = time.perf_counter()
                for n in range(warmup + trials):
                    made = client.post("/api/v1/wants", json={"partition_refs": [f"b/{n}"]})
                    made.raise_for_status()
                    after = wait_satisfied(client, made.json()["wants"][0]["want_id"], after)
                elapsed = time.perf_counter() - t0
                down_events = all_events(client)
            with httpx.Client(base_url=up.url) as client:
                up_events = all_events(client)
    up_live = {
        e["partition_live"]["partition_ref"][2:]: float(e["timestamp"])
        for e in up_events
        if e["type"] == "partition_live"
    }
    learned_at: dict[str, float] = {}
    b_runs: dict[str, list[str]] = {}
    started_at: dict[str, float] = {}
    for e in down_events:
        kind, payload, ts = e["type"], e[e["type"]], float(e["timestamp"])
        if kind == "partition_live" and payload["upstream"] == "up":
            learned_at[payload["partition_ref"][2:]] = ts
        elif kind == "job_run_queued" and payload["job_name"] == "b":
            b_runs.setdefault(payload["partition_refs"][0][2:], []).append(payload["job_run_id"])
        elif kind == "job_run_started":
            started_at[payload["job_run_id"]] = ts
    reaction, learned = [], []
    for n, runs in b_runs.items():
        if int(n) < warmup or len(runs) < 2 or n not in up_live:
            continue
        reaction.append(started_at[runs[1]] - up_live[n])
        learned.append(learned_at[n] - up_live[n])
    figures = {
        "trials": len(reaction),
        "up_live_to_down_started": summary_ms(reaction),
        "up_live_to_down_live": summary_ms(learned),
        "trial_seconds_mean": round(elapsed / (warmup + trials), 4),
    }
    s = figures["up_live_to_down_started"]
    print(
        f"   reaction across graphs (up: a/n live -> down: b started), {len(reaction)} "
        f"trials: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms "
        f"(target p99 < 20 ms); up live -> down live p50 "
        f"{figures['up_live_to_down_live']['p50_ms']:.1f} ms, p99 "
        f"{figures['up_live_to_down_live']['p99_ms']:.1f} ms"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description="reaction latency across two graphs")
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    info = header("reaction across graphs")
    write_result("federation_reaction", run(args.trials), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
