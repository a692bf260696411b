"""Dispatch is ordered by SLA deadline: a short-SLA want overtakes a queue of long-SLA wants
for the same job, with a concurrency limit of one, in the reconciler and in a real controller."""

from __future__ import annotations

import asyncio
from pathlib import Path

from databuild.core.outcomes import RunSucceeded
from databuild.core.refs import parse_ref

from .helpers import DAY, HOUR, T0, Rig, Sim, graph, job, request

ONE_AT_A_TIME = graph(job("daily", "daily/date={date}", concurrency=1))


def test_a_short_sla_want_overtakes_long_sla_wants_in_the_reconciler() -> None:
    sim = Sim(ONE_AT_A_TIME)
    for day in (1, 2, 3, 4):
        sim.want(f"daily/date=2024-01-0{day}", sla=3 * DAY)
    sim.want("daily/date=2024-01-09", sla=HOUR)
    order = [sim.started[0].partition_refs[0]]
    while len(order) < 5:
        sim.finish(sim.started[-1].job_run_id, RunSucceeded(1.0))
        order.append(sim.started[-1].partition_refs[0])
    assert order == [
        "daily/date=2024-01-01",  # already running when the urgent want came
        "daily/date=2024-01-09",
        "daily/date=2024-01-02",
        "daily/date=2024-01-03",
        "daily/date=2024-01-04",
    ]


def test_a_short_sla_want_overtakes_long_sla_wants_in_a_real_controller(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        rig = Rig(ONE_AT_A_TIME, tmp_path, slots=4)
        await rig.start()
        try:
            await rig.controller.create_wants(
                [request(f"daily/date=2024-01-0{d}", sla=3 * DAY) for d in (1, 2, 3, 4)]
            )
            await rig.controller.create_wants([request("daily/date=2024-01-09", sla=HOUR)])
            while len(rig.executor.started) < 5:
                (running,) = rig.executor.running
                rig.clock.advance(60)
                rig.executor.finish(running, RunSucceeded(60.0))
                await rig.settle()
            return [r.partition_refs[0] for r in rig.executor.started]
        finally:
            await rig.stop()

    assert asyncio.run(scenario()) == [
        parse_ref("daily/date=2024-01-01"),
        parse_ref("daily/date=2024-01-09"),
        parse_ref("daily/date=2024-01-02"),
        parse_ref("daily/date=2024-01-03"),
        parse_ref("daily/date=2024-01-04"),
    ]


def test_the_data_timestamp_decides_the_deadline_not_the_sla_alone() -> None:
    # same SLA, older data: the older data's deadline is earlier, so it goes first
    sim = Sim(ONE_AT_A_TIME)
    sim.want("daily/date=2024-01-05", ts=T0 + 4 * DAY, sla=DAY)  # runs at once
    sim.want("daily/date=2024-01-04", ts=T0 + 3 * DAY, sla=DAY)
    sim.want("daily/date=2024-01-02", ts=T0 + DAY, sla=DAY)
    sim.finish(sim.started[-1].job_run_id, RunSucceeded(1.0))
    assert sim.started[-1].partition_refs == (parse_ref("daily/date=2024-01-02"),)
