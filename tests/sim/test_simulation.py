"""The deterministic simulation (issue 14.6): the real controller on faulty simulated
storage, executor, clock and restarts, its invariants checked after every step.

CI runs a fixed set of seeds; ``python -m bench.simulation --seeds 1000`` runs many more.
"""

from __future__ import annotations

import pytest

from .harness import Faults, simulate

CI_SEEDS = range(1, 41)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_a_seed_keeps_every_invariant_and_every_want_ends(seed: int) -> None:
    report = simulate(seed)
    assert report.events > 0
    assert sum(report.wants.values()) > 0  # wants were made, and every one ended
    assert set(report.wants) <= {"satisfied", "failed", "upstream_failed", "canceled", "expired"}


def test_faults_are_injected_across_the_seeds() -> None:
    found: dict[str, int] = {}
    for seed in range(1, 11):
        for kind, n in simulate(seed).found.items():
            found[kind] = found.get(kind, 0) + n
    assert set(found) == {
        "connection lost",
        "commit outcome unknown",
        "slow fsync",
        "job crash",
        "job failed",
        "clock jump",
        "restart",
    }, found


def test_a_seed_replays_exactly() -> None:
    first, second = simulate(7), simulate(7)
    assert first.digest == second.digest and first.events == second.events
    assert first.found == second.found
    assert simulate(8).digest != first.digest


def test_without_faults_everything_asked_for_is_built() -> None:
    report = simulate(3, faults=Faults.none())
    assert set(report.wants) <= {"satisfied", "canceled"}, report.wants
