"""Benchmark: one calendar variant built by this checkout and by another source tree, in
interleaved rounds, so that a slow spell of a shared machine hits both alike.

Each round builds ``summary/all`` from a fresh state (no ``.databuild``, no ``data``) once
with this checkout's DataBuild and once with the sources at ``--base`` (a worktree of an
earlier commit: ``git worktree add /tmp/base <commit>``), put first on ``PYTHONPATH`` of the
``databuild build`` process and of its jobs. It prints, per side, the median and range of
the wall time and the median CPU time of the build (the service and its job processes), and
writes ``bench/results/ab_build.json``. Used for the before/after tables of
docs/performance.md; a benchmark, not a test: it asserts nothing.

Run: ``.venv/bin/python -m bench.ab_build --base /tmp/base/src [--variant
unbatched_warm_hints] [--rounds 8] [--days 365] [--parallel 2]``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import calendar_variants
from bench.common import databuild_exe, header, job_env, write_result


def build_once(graph: Path, env: dict[str, str], parallel: int) -> tuple[float, float]:
    """Wall and CPU seconds of one build of ``summary/all`` from a fresh state."""
    shutil.rmtree(graph / ".databuild", ignore_errors=True)
    shutil.rmtree(graph / "data", ignore_errors=True)
    cmd = [databuild_exe(), "build", "-q", "--parallel", str(parallel), "summary/all"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=graph, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the build failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def run(base: Path, variant: str, rounds: int, days: int, parallel: int) -> dict[str, Any]:
    sides = {
        "this": job_env({"CALENDAR_DAYS": str(days)}),
        "base": job_env({"CALENDAR_DAYS": str(days), "PYTHONPATH": str(base)}),
    }
    walls: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        graph = calendar_variants.make(Path(tmp), calendar_variants.VARIANTS[variant])
        for _ in range(rounds):
            for side, env in sides.items():
                wall, cpu = build_once(graph, env, parallel)
                walls[side].append(round(wall, 3))
                cpus[side].append(round(cpu, 3))
    figures: dict[str, Any] = {"variant": variant, "days": days, "parallel": parallel}
    for side in sides:
        figures[side] = {
            "wall_median_seconds": round(statistics.median(walls[side]), 3),
            "cpu_median_seconds": round(statistics.median(cpus[side]), 3),
            "walls": walls[side],
            "cpus": cpus[side],
        }
        print(
            f"   {side:<5} {variant}: wall median {figures[side]['wall_median_seconds']:.2f} s "
            f"({min(walls[side]):.2f}-{max(walls[side]):.2f}), CPU median "
            f"{figures[side]['cpu_median_seconds']:.2f} s; walls {walls[side]}"
        )
    faster = sum(1 for a, b in zip(walls["this"], walls["base"], strict=True) if a < b)
    figures["rounds_this_faster"] = faster
    print(f"   this checkout faster in {faster} of {rounds} rounds")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree's src/ dir")
    parser.add_argument(
        "--variant", default="unbatched_warm_hints", choices=sorted(calendar_variants.VARIANTS)
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    if not (args.base / "databuild" / "__init__.py").is_file():
        parser.error(f"--base {args.base}: no databuild package there (give a tree's src/)")
    if args.rounds < 1 or args.days < 1 or args.parallel < 1:
        parser.error("--rounds, --days and --parallel must be at least 1")
    info = header(f"A/B build: this checkout vs {args.base}")
    figures = run(args.base.resolve(), args.variant, args.rounds, args.days, args.parallel)
    write_result("ab_build", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
