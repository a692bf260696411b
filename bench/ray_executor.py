"""Benchmark: trivial job runs through the Ray executor with 2 worker slots vs the local pool.

Starts a one-node Ray cluster with 2 CPUs (so 2 runs at once) inside a loopback-only network
namespace (root: ``unshare(CLONE_NEWNET)``, ``ip link set lo up``), connects to it, and runs
``true`` as a job through ``RayExecutor(2)`` and ``LocalExecutor(2)``: throughput (runs/s,
keeping both slots busy) and the latency of one run alone (start to outcome), whose
difference is the per-run overhead Ray adds. Stops the cluster it started (by its own
handles, never by name). Prints the figures with the git commit and machine, and writes
bench/results/ray_executor.json.

Run: ``.venv/bin/python -m bench.ray_executor [--runs 200] [--alone 30]``.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import header, summary_ms, write_result
from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import ExecutorReport, RunFinishedReport, RunSucceeded
from databuild.core.refs import parse_ref
from databuild.executors import Executor, LocalExecutor, RunRequest

SLOTS = 2
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise SystemExit(
                f"cannot create a network namespace: {os.strerror(ctypes.get_errno())} (root?)"
            )
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
        finally:
            libc.setns(original, CLONE_NEWNET)
    finally:
        os.close(original)


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.done: dict[str, float] = {}
        self.failed: list[str] = []
        self.job = JobSpec(name="trivial", outputs=(), command=("true",), timeout_seconds=60)

    def request(self) -> RunRequest:
        self.count += 1
        return RunRequest(
            JobRunId(f"r{self.count:08d}"),
            self.job,
            (parse_ref("out/x"),),
            "http://127.0.0.1:9",
            self.root,
            self.root / "runs",
        )

    def report(self, report: ExecutorReport) -> None:
        if isinstance(report, RunFinishedReport):
            self.done[report.job_run_id] = time.perf_counter()
            if not isinstance(report.outcome, RunSucceeded):
                self.failed.append(f"{report.job_run_id}: {report.outcome}")

    async def throughput(self, executor: Executor, runs: int) -> float:
        executor.set_reporter(self.report)
        began = time.perf_counter()
        for _ in range(runs):
            while executor.free_slots() == 0:
                await asyncio.sleep(0.0005)
            await executor.start(self.request())
        while len(self.done) < self.count:
            await asyncio.sleep(0.0005)
        return runs / (time.perf_counter() - began)

    async def alone(self, executor: Executor, runs: int) -> list[float]:
        executor.set_reporter(self.report)
        latencies = []
        for _ in range(runs):
            request = self.request()
            began = time.perf_counter()
            await executor.start(request)
            while request.job_run_id not in self.done:
                await asyncio.sleep(0.0002)
            latencies.append(self.done[request.job_run_id] - began)
        return latencies


async def measure(make: Any, root: Path, runs: int, alone: int) -> dict[str, Any]:
    warmup = Bench(root / "warmup")
    executor = make()
    await warmup.throughput(executor, 2 * SLOTS)  # Ray starts its workers on first use
    bench = Bench(root / "throughput")
    runs_per_second = await bench.throughput(executor, runs)
    single = Bench(root / "alone")
    latencies = await single.alone(executor, alone)
    await executor.close()
    return {
        "runs": runs,
        "runs_per_second": round(runs_per_second, 1),
        "alone": summary_ms(latencies),
        "failed": bench.failed + single.failed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs for the throughput")
    parser.add_argument("--alone", type=int, default=30, help="runs one at a time")
    args = parser.parse_args()
    info = header(f"Ray executor ({SLOTS} worker slots) vs the local pool, trivial jobs")
    root = Path(tempfile.mkdtemp(prefix="dbbench-"))
    temp_dir = tempfile.mkdtemp(prefix="dbray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    figures: dict[str, Any] = {"slots": SLOTS}
    try:
        figures["local"] = asyncio.run(
            measure(lambda: LocalExecutor(SLOTS), root / "local", args.runs, args.alone)
        )
        with loopback_only_network():
            import ray
            from ray.cluster_utils import Cluster

            from databuild.executors.ray_executor import RayExecutor

            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": SLOTS,
                    "node_ip_address": "127.0.0.1",
                    "include_dashboard": False,
                    "temp_dir": temp_dir,
                },
            )
            try:
                ray.init(
                    address=cluster.address, log_to_driver=False, logging_level=logging.WARNING
                )
                figures["ray"] = asyncio.run(
                    measure(lambda: RayExecutor(SLOTS), root / "ray", args.runs, args.alone)
                )
                figures["ray_version"] = ray.__version__
            finally:
                ray.shutdown()
                cluster.shutdown()  # type: ignore[no-untyped-call]
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
    local, on_ray = figures["local"], figures["ray"]
    overhead = on_ray["alone"]["mean_ms"] - local["alone"]["mean_ms"]
    figures["ray_overhead_per_run_ms"] = round(overhead, 1)
    for name, f in (("local pool", local), ("Ray", on_ray)):
        a = f["alone"]
        print(
            f"   {name:10}: {f['runs_per_second']:7.1f} runs/s with {SLOTS} slots "
            f"({f['runs']} runs); one run alone: mean {a['mean_ms']:.1f} ms, "
            f"p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms"
            + (f"; {len(f['failed'])} FAILED" if f["failed"] else "")
        )
    print(f"   Ray adds about {overhead:.1f} ms per run (mean, one run alone)")
    write_result("ray_executor", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
