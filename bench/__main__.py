"""Run every benchmark and write all figures to bench/results/latest.json.

    .venv/bin/python -m bench                # N = 30 and 365, a 1M-event BEL
    .venv/bin/python -m bench --full         # also N = 3650 and a 10M-event BEL
    .venv/bin/python -m bench --full --keep /tmp/bels   # keep (and next time reuse) the BELs
    .venv/bin/python -m bench --only reaction api

PostgreSQL figures need DATABUILD_TEST_POSTGRES_URL (or --postgres). The Luigi peer needs
``luigi`` (the ``bench`` extra); without it the peer is skipped, saying so. Each scenario
also runs alone: ``python -m bench.cold_build``, ``bench.reaction``,
``bench.reconciler_scale``, ``bench.bel_rate``, ``bench.api``, ``bench.peer``,
``bench.failover`` (two replicas on PostgreSQL: leader kill -9 -> first write accepted); and,
not part of the suite (it starts a Ray cluster in a network namespace, as root),
``python -m bench.ray_executor`` (Ray executor vs the local pool).
Benchmarks measure; they assert nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench import api, bel_rate, cold_build, failover, peer, reaction, reconciler_scale
from bench.common import RESULTS, ROOT, header

SCENARIOS = ("cold_build", "reaction", "reconciler_scale", "bel_rate", "api", "peer", "failover")


def main() -> int:
    parser = argparse.ArgumentParser(description="DataBuild's benchmark suite")
    parser.add_argument("--full", action="store_true", help="add N=3650 and a 10M-event BEL")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--trials", type=int, default=300, help="reaction-latency trials")
    parser.add_argument("--pairs", type=int, default=3, help="DataBuild/Luigi build pairs")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the generated BELs and snapshots in DIR; reuse them if already there",
    )
    parser.add_argument("--postgres", default=os.environ.get("DATABUILD_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    chosen = args.only or SCENARIOS
    days = (30, 365, 3650) if args.full else (30, 365)
    bel_sizes = (1_000_000, 10_000_000) if args.full else (1_000_000,)

    info = header("DataBuild benchmark suite")
    results: dict[str, Any] = {**info, "full": args.full, "scenarios": {}}
    done = results["scenarios"]
    began = time.perf_counter()
    if "cold_build" in chosen:
        print("-- 1, 2. cold build and no-op rebuild")
        done["cold_build"] = cold_build.run(days, args.parallel)
    if "reaction" in chosen:
        print("-- 3. reaction latency")
        done["reaction"] = reaction.run(args.trials)
    if "reconciler_scale" in chosen:
        print("-- 4. reconciler scale and service start")
        done["reconciler_scale"] = reconciler_scale.run(
            (10_000, 50_000, 100_000), 2000, bel_sizes, args.keep
        )
    if "bel_rate" in chosen:
        print("-- 5. BEL append rate")
        done["bel_rate"] = bel_rate.run(200, args.postgres)
    if "api" in chosen:
        print("-- 6. API want creation")
        done["api"] = api.run((8, 32), 3000)
    if "peer" in chosen:
        print("-- 7. peer (Luigi)")
        peer_days = tuple(d for d in days if d <= 365)
        done["peer"] = peer.run(peer_days, args.parallel, args.pairs)
    if "failover" in chosen:
        print("-- 8. failover of two replicas on PostgreSQL")
        done["failover"] = failover.run(10, args.postgres)
    results["suite_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"== done in {results['suite_seconds']} s; all figures in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
