"""Many seeds of the deterministic simulation (issue 14.6): the real controller on faulty
simulated storage, executor, clock and restarts, invariants checked after every step.

    .venv/bin/python -m bench.simulation --seeds 1000          # seeds 1..1000
    .venv/bin/python -m bench.simulation --seed 8              # replay one seed exactly
    .venv/bin/python -m bench.simulation --seeds 200 --steps 400

Prints how many seeds ran, the faults injected, the histories' sizes and any failing seed
with its message (each replays exactly with --seed). CI runs a fixed 40 (tests/sim).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

from bench.common import ROOT, header, write_result

sys.path.insert(0, str(ROOT / "tests"))
from sim.harness import SimulationFailure, simulate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=500, help="run seeds 1..N")
    parser.add_argument("--seed", type=int, default=None, help="replay this one seed")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    # the controller logs each simulated outage and recovery: thousands of lines
    logging.getLogger("databuild").setLevel(logging.ERROR)
    info = header("deterministic simulation")
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    found: Counter[str] = Counter()
    wants: Counter[str] = Counter()
    events = 0
    failures: list[str] = []
    started = time.perf_counter()
    for seed in seeds:
        try:
            report = simulate(seed, steps=args.steps)
        except SimulationFailure as exc:
            failures.append(str(exc))
            continue
        found.update(report.found)
        wants.update(report.wants)
        events += report.events
        if args.seed is not None:
            print(f"   seed {seed}: {report.events} events, digest {report.digest}")
    wall = time.perf_counter() - started
    print(f"   {len(seeds)} seeds x {args.steps} steps in {wall:.1f} s; {events} events")
    print(f"   faults injected: {dict(sorted(found.items()))}")
    print(f"   wants at the end: {dict(sorted(wants.items()))}")
    print(f"   failing seeds: {len(failures)}")
    for failure in failures[:20]:
        print(f"     {failure}")
    figures = {
        "seeds": len(seeds),
        "steps": args.steps,
        "seconds": round(wall, 1),
        "events": events,
        "faults": dict(found),
        "wants": dict(wants),
        "failures": failures,
    }
    if args.seed is None:
        write_result("simulation", figures, info)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
