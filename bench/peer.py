"""Benchmark 7: the calendar cold build in Luigi beside DataBuild's, as a ratio.

Luigi runs ``bench.luigi_calendar`` as a real subprocess (local scheduler, ``--workers`` =
DataBuild's ``--parallel``) in a fresh directory; DataBuild's figure is the cold build of
``bench.cold_build`` (taken in the same run). Both write the same ``summary/all.json``,
and the benchmark checks they agree. Ratio = DataBuild wall / Luigi wall (target <= 0.2).

Run alone: ``.venv/bin/python -m bench.peer [--days 30 365]`` (runs both builds).
Skipped, saying why, when luigi is not importable (``pip install 'luigi>=3.5,<4'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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


def run(
    days_list: tuple[int, ...], parallel: int, databuild: dict[str, Any] | None = None
) -> dict[str, Any]:
    why = luigi_missing()
    if why:
        print(f"   peer skipped: {why}")
        return {"skipped": why}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        for days in days_list:
            ours = (databuild or {}).get(f"cold_{days}")
            if ours is None:
                graph_dir = cold_build.fresh_copy(Path(tmp), f"calendar-{days}")
                ours = cold_build.build(graph_dir, days, parallel)
            theirs = luigi_build(days, parallel, Path(tmp))
            same = (
                bool(ours["summary_digest"]) and ours["summary_digest"] == theirs["summary_digest"]
            )
            ratio = ours["wall_seconds"] / theirs["wall_seconds"]
            out[f"n_{days}"] = {
                "databuild_wall_seconds": ours["wall_seconds"],
                "luigi_wall_seconds": theirs["wall_seconds"],
                "ratio_databuild_over_luigi": round(ratio, 3),
                "luigi_partitions_written": theirs["partitions_written"],
                "luigi_peak_rss_mb": theirs["peak_rss_mb"],
                "same_summary": same,
            }
            print(
                f"   peer N={days:>5}: DataBuild {ours['wall_seconds']:.2f} s, Luigi "
                f"{theirs['wall_seconds']:.2f} s (workers={parallel}), ratio {ratio:.2f} "
                f"(target <= 0.20); same summary/all: {same}"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="the calendar cold build: DataBuild vs Luigi")
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    info = header("peer: calendar cold build, DataBuild vs Luigi")
    write_result("peer", run(tuple(args.days), args.parallel), info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
