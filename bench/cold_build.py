"""Benchmarks 1 and 2: cold build and no-op rebuild of the calendar example.

For each N (days), a fresh copy of examples/calendar (no .databuild, no data/) builds
``summary/all`` with ``databuild build`` as a real subprocess (its embedded service, SQLite
BEL, local process pool of ``--parallel`` = CPU count). Then the same command runs again
with everything live (the no-op rebuild). The job runs come from the BEL afterwards, via
``databuild --json runs``. docs/performance.md defines each figure.

Run alone: ``.venv/bin/python -m bench.cold_build [--days 30 365] [--parallel P]``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import EXAMPLE, databuild_exe, header, job_env, write_result
from bench.process import run_measured

DEFAULT_DAYS = (30, 365)


def fresh_copy(parent: Path, name: str = "calendar") -> Path:
    target = parent / name
    shutil.copytree(
        EXAMPLE, target, ignore=shutil.ignore_patterns(".databuild", "data", "__pycache__")
    )
    return target


def job_runs(graph_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    found = subprocess.run(
        [databuild_exe(), "--json", "runs", "--limit", "100000"],
        cwd=graph_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    runs: list[dict[str, Any]] = json.loads(found.stdout)["job_runs"]
    return runs


def busy_seconds(runs: list[dict[str, Any]]) -> float:
    """Length of the union of the runs' [started_at, finished_at] intervals: the time at
    least one job process was running."""
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs if r["finished_at"])
    total = 0.0
    current_start, current_end = None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def summary_digest(data_dir: Path) -> str:
    """A digest of ``summary/all.json``'s content, to check the peer computed the same."""
    path = data_dir / "summary" / "all.json"
    if not path.exists():
        return ""
    canonical = json.dumps(json.loads(path.read_text()), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def build(graph_dir: Path, days: int, parallel: int) -> dict[str, Any]:
    """One ``databuild build summary/all``, measured, with the runs it added to the BEL."""
    env = job_env({"CALENDAR_DAYS": str(days)})
    before = job_runs(graph_dir, env) if (graph_dir / ".databuild").exists() else []
    cmd = [databuild_exe(), "build", "summary/all", "--quiet", "--parallel", str(parallel)]
    measured = run_measured(cmd, graph_dir, env)
    if measured.returncode != 0:
        raise RuntimeError(
            f"databuild build failed ({measured.returncode}): {measured.stderr[-2000:]}"
        )
    known = {r["job_run_id"] for r in before}
    runs = [r for r in job_runs(graph_dir, env) if r["job_run_id"] not in known]
    wall = measured.wall_seconds
    job_seconds = sum(r["duration_seconds"] for r in runs)
    busy = busy_seconds(runs)
    figures: dict[str, Any] = {
        "days": days,
        "parallel": parallel,
        "wall_seconds": round(wall, 3),
        "jobs_run": len(runs),
        "runs_by_outcome": dict(
            collections.Counter(f"{r['job_name']}:{r['status']}" for r in runs)
        ),
        "job_seconds_sum": round(job_seconds, 3),
        "job_busy_seconds": round(busy, 3),
        "peak_rss_mb": measured.peak_rss_mb,
        "maxrss_with_children_mb": measured.maxrss_with_children_mb,
        "summary_digest": summary_digest(graph_dir / "data"),
    }
    if runs:
        first_start = min(r["started_at"] for r in runs)
        last_end = max(r["finished_at"] for r in runs)
        idle = wall - busy
        figures.update(
            {
                "orchestration_seconds": round(idle, 3),
                "overhead_per_run_ms": round(idle / len(runs) * 1000, 1),
                "startup_seconds": round(first_start - measured.started_at, 3),
                "shutdown_seconds": round(measured.ended_at - last_end, 3),
                "gaps_between_runs_seconds": round(
                    idle - (first_start - measured.started_at) - (measured.ended_at - last_end),
                    3,
                ),
                "wall_minus_sum_over_parallel_per_run_ms": round(
                    (wall - job_seconds / parallel) / len(runs) * 1000, 1
                ),
            }
        )
    return figures


def cli_floor(env: dict[str, str]) -> float:
    """Wall time of ``databuild --version``: the CLI's import cost, paid by every command."""
    measured = run_measured([databuild_exe(), "--version"], Path.cwd(), env)
    return round(measured.wall_seconds, 3)


def run(days_list: tuple[int, ...], parallel: int, keep: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"cli_version_seconds": cli_floor(job_env())}
    print(f"   `databuild --version` (CLI import floor): {out['cli_version_seconds']:.2f} s")
    with tempfile.TemporaryDirectory(prefix="bench-calendar-") as tmp:
        for days in days_list:
            graph_dir = fresh_copy(keep or Path(tmp), f"calendar-{days}")
            cold = build(graph_dir, days, parallel)
            print(
                f"   cold build N={days:>5}: {cold['wall_seconds']:7.2f} s wall, "
                f"{cold['jobs_run']} job runs, jobs' own time {cold['job_seconds_sum']:.2f} s "
                f"(busy {cold['job_busy_seconds']:.2f} s), overhead "
                f"{cold.get('overhead_per_run_ms', 0):.0f} ms/run "
                f"(startup {cold.get('startup_seconds', 0):.2f} s), "
                f"peak RSS {cold['peak_rss_mb']} MB"
            )
            noop = build(graph_dir, days, parallel)
            print(
                f"   no-op rebuild N={days:>5}: {noop['wall_seconds']:7.2f} s wall, "
                f"{noop['jobs_run']} job runs, peak RSS {noop['peak_rss_mb']} MB"
            )
            out[f"cold_{days}"] = cold
            out[f"noop_{days}"] = noop
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="cold build and no-op rebuild of the calendar")
    parser.add_argument("--days", type=int, nargs="+", default=list(DEFAULT_DAYS))
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="build under this directory and keep it")
    args = parser.parse_args()
    info = header("cold build / no-op rebuild (calendar example)")
    figures = run(tuple(args.days), args.parallel, args.keep)
    write_result("cold_build", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
