"""Benchmark 7: the calendar cold build in Luigi beside DataBuild's, as a ratio.

Luigi runs ``bench.luigi_calendar`` as a real subprocess (local scheduler, ``--workers`` =
DataBuild's ``--parallel``) in a fresh directory; DataBuild runs the cold build of
``bench.cold_build`` in another. Both write the same ``summary/all.json``, and the
benchmark checks they agree. Ratio = DataBuild wall / Luigi wall (target <= 0.2).

The two run as ``--pairs`` interleaved pairs (DataBuild, then Luigi, then again), each in
fresh directories, so that a slow spell of the machine (its disk's fsync latency varies
several-fold on a shared VM) hits both; the figure is the median of the pairs' ratios, and
every pair is in the JSON.

Run alone: ``.venv/bin/python -m bench.peer [--days 30 365] [--pairs 3]``.
Skipped, saying why, when luigi is not importable (``pip install 'luigi>=3.5,<4'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cold_build
from bench.common import ROOT, header, job_env, write_result
from bench.process import run_measured


def luigi_missing() -> str:
    if importlib.util.find_spec("luigi") is None:
        return "luigi is not importable (install the bench extra: pip install 'luigi>=3.5,<4')"
    return ""


def luigi_build(days: int, workers: int, parent: Path) -> dict[str, Any]:
    data = parent / f"luigi-{days}" / "data"
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


def run(days_list: tuple[int, ...], parallel: int, pairs: int = 3) -> dict[str, Any]:
    why = luigi_missing()
    if why:
        print(f"   peer skipped: {why}")
        return {"skipped": why}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        for days in days_list:
            taken = []
            for pair in range(pairs):
                parent = Path(tmp) / f"n{days}-pair{pair}"
                parent.mkdir()
                ours = cold_build.build(cold_build.fresh_copy(parent), days, parallel)
                theirs = luigi_build(days, parallel, parent)
                same = bool(ours["summary_digest"]) and (
                    ours["summary_digest"] == theirs["summary_digest"]
                )
                taken.append(
                    {
                        "databuild_wall_seconds": ours["wall_seconds"],
                        "luigi_wall_seconds": theirs["wall_seconds"],
                        "ratio": round(ours["wall_seconds"] / theirs["wall_seconds"], 3),
                        "same_summary": same,
                        "luigi_partitions_written": theirs["partitions_written"],
                        "luigi_peak_rss_mb": theirs["peak_rss_mb"],
                    }
                )
            ratios = [t["ratio"] for t in taken]
            ratio = statistics.median(ratios)
            ours_wall = statistics.median(t["databuild_wall_seconds"] for t in taken)
            their_wall = statistics.median(t["luigi_wall_seconds"] for t in taken)
            same = all(t["same_summary"] for t in taken)
            out[f"n_{days}"] = {
                "databuild_wall_seconds": ours_wall,
                "luigi_wall_seconds": their_wall,
                "ratio_databuild_over_luigi": round(ratio, 3),
                "ratios": ratios,
                "same_summary": same,
                "pairs": taken,
            }
            print(
                f"   peer N={days:>5}: DataBuild {ours_wall:.2f} s, Luigi {their_wall:.2f} s "
                f"(workers={parallel}; medians of {pairs} pairs), ratio {ratio:.2f} "
                f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)}; target <= 0.20); "
                f"same summary/all: {same}"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="the calendar cold build: DataBuild vs Luigi")
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved build pairs")
    args = parser.parse_args()
    info = header("peer: calendar cold build, DataBuild vs Luigi")
    write_result("peer", run(tuple(args.days), args.parallel, args.pairs), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
