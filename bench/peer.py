"""Benchmark 7: the calendar cold build in Luigi beside DataBuild's, as ratios.

Luigi runs ``bench.luigi_calendar`` as a real subprocess (local scheduler) in a fresh
directory, with 1 worker (tasks run in the scheduler's process: the configuration a user
would pick for this workload) and with ``--parallel`` workers (a forked process per task).
DataBuild runs the cold build of ``bench.cold_build`` on variants of the calendar
(``bench.calendar_variants``): the example's jobs batched and warm, every job
``max_batch = 1`` with warm and with cold (a new Python process per run) jobs, and shell
jobs, all without input hints (discovery alone); and ``batched_warm_hints``,
``unbatched_warm_hints``, ``unbatched_cold_hints`` with the example's hint on ``clean``. The
headline ratio is DataBuild wall / the *faster* Luigi's wall.

Per variant it reports runs per build, runs per partition (runs / partitions Luigi writes)
and orchestration overhead per run, ``(wall x slots - jobs' own time) / runs``: the slot
time a run costs beyond its job's own run time (the job's interpreter start and the SDK's
questions are in the job's own time). For cold variants it also measures the floor: spawning
``python -c "from databuild import sdk"`` once per run of the build, ``--parallel`` at a
time, and reports wall / floor.

Everything runs as ``--pairs`` interleaved rounds (each round: every DataBuild variant, the
floors, Luigi with 1 and with P workers, each in fresh directories), so that a slow spell of
the machine (its disk's fsync latency varies several-fold on a shared VM) hits them all;
figures are medians over the rounds of each round's ratio, and every round is in the JSON.
The Python variants and Luigi write the same ``summary/all.json`` (checked by digest).

Run alone: ``.venv/bin/python -m bench.peer [--days 30 365] [--pairs 3]
[--variants batched_warm unbatched_warm ...]``.
Skipped, saying why, when luigi is not importable (``pip install 'luigi>=3.5,<4'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import calendar_variants, cold_build
from bench.common import ROOT, header, job_env, write_result
from bench.process import run_measured

DEFAULT_VARIANTS = tuple(calendar_variants.VARIANTS)


def luigi_missing() -> str:
    if importlib.util.find_spec("luigi") is None:
        return "luigi is not importable (install the bench extra: pip install 'luigi>=3.5,<4')"
    return ""


def luigi_build(days: int, workers: int, parent: Path) -> dict[str, Any]:
    data = parent / f"luigi-{days}-w{workers}" / "data"
    cmd = [
        sys.executable,
        "-m",
        "bench.luigi_calendar",
        "--days",
        str(days),
        "--workers",
        str(workers),
        "--data",
        str(data),
    ]
    measured = run_measured(cmd, ROOT, job_env())
    if measured.returncode != 0:
        raise RuntimeError(f"the Luigi build failed: {measured.stderr[-2000:]}")
    written = sum(1 for _ in data.rglob("*.json"))
    return {
        "days": days,
        "workers": workers,
        "wall_seconds": round(measured.wall_seconds, 3),
        "partitions_written": written,
        "peak_rss_mb": measured.peak_rss_mb,
        "summary_digest": cold_build.summary_digest(data),
    }


PYTHON_FLOOR = [sys.executable, "-c", "from databuild import sdk"]
SHELL_FLOOR = ["sh", "-c", ":"]


def spawn_floor(cmd: list[str], runs: int, slots: int) -> float:
    """Wall time of ``runs`` spawns of ``cmd``, ``slots`` at a time: what a cold build's job
    processes cost at the least (``python -c "from databuild import sdk"`` for Python
    jobs, ``sh -c :`` for shell jobs)."""
    env = job_env()
    os.sync()
    began = time.perf_counter()
    running: list[subprocess.Popen[bytes]] = []
    started = 0
    while started < runs or running:
        while started < runs and len(running) < slots:
            running.append(subprocess.Popen(cmd, env=env))
            started += 1
        running.pop(0).wait()
    return time.perf_counter() - began


def databuild_build(
    variant: calendar_variants.Variant, days: int, parallel: int, parent: Path, partitions: int
) -> dict[str, Any]:
    graph = calendar_variants.make(parent, variant)
    built = cold_build.build(graph, days, parallel)
    runs = built["jobs_run"]
    wall = built["wall_seconds"]
    figures: dict[str, Any] = {
        "variant": variant.name,
        "wall_seconds": wall,
        "runs": runs,
        "runs_per_partition": round(runs / partitions, 3),
        "runs_by_outcome": built["runs_by_outcome"],
        "job_seconds_sum": built["job_seconds_sum"],
        "overhead_per_run_ms": round((wall * parallel - built["job_seconds_sum"]) / runs * 1000, 2)
        if runs
        else None,
        "startup_seconds": built.get("startup_seconds"),
        "peak_rss_mb": built["peak_rss_mb"],
        "summary_digest": built["summary_digest"],
    }
    if variant.cold or variant.shell:
        floor = spawn_floor(SHELL_FLOOR if variant.shell else PYTHON_FLOOR, runs, parallel)
        figures["floor_seconds"] = round(floor, 3)
        figures["over_floor"] = round(wall / floor, 3)
        figures["above_floor_per_run_ms"] = round((wall - floor) * parallel / runs * 1000, 2)
    return figures


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(
    days_list: tuple[int, ...],
    parallel: int,
    pairs: int = 3,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
) -> dict[str, Any]:
    why = luigi_missing()
    if why:
        print(f"   peer skipped: {why}")
        return {"skipped": why}
    chosen = [calendar_variants.VARIANTS[name] for name in variants]
    luigi_workers = sorted({1, parallel})
    out: dict[str, Any] = {"parallel": parallel, "luigi_workers": luigi_workers}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        for days in days_list:
            # luigi_calendar imports luigi, which is optional: only once it is known present
            from bench.luigi_calendar import expected_partitions

            partitions = expected_partitions(days)
            rounds: list[dict[str, Any]] = []
            for pair in range(pairs):
                parent = Path(tmp) / f"n{days}-round{pair}"
                parent.mkdir()
                ours = {
                    v.name: databuild_build(v, days, parallel, parent, partitions) for v in chosen
                }
                theirs = {w: luigi_build(days, w, parent) for w in luigi_workers}
                best = min(theirs.values(), key=lambda t: t["wall_seconds"])
                for figures in ours.values():
                    figures["ratio_to_best_luigi"] = round(
                        figures["wall_seconds"] / best["wall_seconds"], 3
                    )
                    figures["same_summary"] = bool(figures["summary_digest"]) and (
                        figures["summary_digest"] == best["summary_digest"]
                    )
                rounds.append(
                    {
                        "databuild": ours,
                        "luigi": {f"workers_{w}": t for w, t in theirs.items()},
                        "best_luigi_workers": best["workers"],
                    }
                )
            summary: dict[str, Any] = {"partitions": partitions, "luigi": {}, "databuild": {}}
            for w in luigi_workers:
                walls = [r["luigi"][f"workers_{w}"]["wall_seconds"] for r in rounds]
                summary["luigi"][f"workers_{w}"] = {"wall_seconds": _median(walls), "walls": walls}
            best_walls = [min(t["wall_seconds"] for t in r["luigi"].values()) for r in rounds]
            print(
                f"   peer N={days}: Luigi "
                + ", ".join(
                    f"{w} worker(s) {summary['luigi'][f'workers_{w}']['wall_seconds']:.2f} s"
                    for w in luigi_workers
                )
                + f" (medians of {pairs} rounds; faster per round: {best_walls})"
            )
            for v in chosen:
                taken = [r["databuild"][v.name] for r in rounds]
                fig: dict[str, Any] = {
                    "describe": v.describe,
                    "wall_seconds": _median([t["wall_seconds"] for t in taken]),
                    "ratio_to_best_luigi": _median([t["ratio_to_best_luigi"] for t in taken]),
                    "ratios": [t["ratio_to_best_luigi"] for t in taken],
                    "runs": _median([t["runs"] for t in taken]),
                    "runs_per_partition": _median([t["runs_per_partition"] for t in taken]),
                    "overhead_per_run_ms": _median([t["overhead_per_run_ms"] for t in taken]),
                    "same_summary": all(t["same_summary"] for t in taken),
                }
                line = (
                    f"   {v.name:<22} {fig['wall_seconds']:6.2f} s, ratio to faster Luigi "
                    f"{fig['ratio_to_best_luigi']:.2f} (rounds {fig['ratios']}), "
                    f"{fig['runs']:.0f} runs, {fig['runs_per_partition']:.3f} runs/partition, "
                    f"overhead {fig['overhead_per_run_ms']:.2f} ms/run"
                )
                if "over_floor" in taken[0]:
                    fig["floor_seconds"] = _median([t["floor_seconds"] for t in taken])
                    fig["over_floor"] = _median([t["over_floor"] for t in taken])
                    fig["above_floor_per_run_ms"] = _median(
                        [t["above_floor_per_run_ms"] for t in taken]
                    )
                    line += (
                        f", floor {fig['floor_seconds']:.2f} s: x{fig['over_floor']:.2f} "
                        f"({fig['above_floor_per_run_ms']:.2f} ms/run above it)"
                    )
                if not v.shell:
                    line += f"; same summary/all: {fig['same_summary']}"
                print(line)
                summary["databuild"][v.name] = fig
            summary["rounds"] = rounds
            out[f"n_{days}"] = summary
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="the calendar cold build: DataBuild vs Luigi")
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=DEFAULT_VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help="the DataBuild configurations to build (bench/calendar_variants.py)",
    )
    args = parser.parse_args()
    info = header("peer: calendar cold build, DataBuild vs Luigi")
    figures = run(tuple(args.days), args.parallel, args.pairs, tuple(args.variants))
    write_result("peer", figures, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
