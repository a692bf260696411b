"""The scheduler: turns each ``[schedules.NAME]`` of ``databuild.toml`` into wants.

Started and stopped by the graph host beside the controller. A firing of a schedule at T
wants the schedule's partition for the data date T stands for (``yesterday`` or ``today``
in the schedule's time zone), with ``data_timestamp`` = that date's midnight UTC and the
schedule's SLA and TTL measured from it, source ``scheduled``; it submits the wants through
``Controller.create_wants``, like any client.

Timing: one asyncio task sleeps until the earliest next firing (a timer; nothing polls),
or until ``poke`` (tests move a FakeClock and poke). On start it catches up the firings it
missed while the service was down: those in the last ``ttl + 2 days`` (with a TTL) or the
last ``catch_up_seconds`` (without one; 7 days by default), skipping every firing whose
want would already be past its TTL. Want ids are deterministic, and a firing whose want
already exists in the state is skipped (a failed or canceled scheduled want is not reopened
by a restart), so restarting never duplicates a want.

What it must not do: decide anything about the want once created (that is the reconciler's
job), or keep state of its own that a restart would need: the Build Event Log is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from databuild.config.schedule import ScheduleSpec
from databuild.core.model import WantId, WantRequest, WantSource
from databuild.core.refs import PartitionRef
from databuild.runtime.clock import Clock
from databuild.runtime.controller import Controller

log = logging.getLogger("databuild.scheduler")

DAY = 86_400
DEFAULT_CATCH_UP_SECONDS = 7 * DAY
"""How far back missed firings of a schedule without a TTL are caught up after downtime."""


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing of a schedule and the want it stands for."""

    schedule: str
    fire_time: float
    partition_ref: PartitionRef
    data_timestamp: int
    request: WantRequest


def _aware(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def firing_at(schedule: ScheduleSpec, fire_time: float) -> Firing:
    """The want a firing of ``schedule`` at ``fire_time`` asks for. Pure."""
    day = schedule.data_date_for(_aware(fire_time))
    ref = schedule.ref_for(day)
    stamp = ScheduleSpec.data_timestamp_for(day)
    request = WantRequest(
        ref,
        stamp,
        WantSource.SCHEDULED,
        ttl_seconds=schedule.ttl_seconds,
        sla_seconds=schedule.sla_seconds,
    )
    return Firing(schedule.name, fire_time, ref, stamp, request)


def firings_between(
    schedule: ScheduleSpec, after: float, until: float, *, limit: int = 100_000
) -> list[Firing]:
    """Firings with ``after < fire_time <= until``, oldest first. Pure."""
    out: list[Firing] = []
    moment = _aware(after)
    while len(out) < limit:
        moment = schedule.next_fire_after(moment)
        if moment.timestamp() > until:
            break
        out.append(firing_at(schedule, moment.timestamp()))
    return out


def catch_up(
    schedule: ScheduleSpec, now: float, catch_up_seconds: float = DEFAULT_CATCH_UP_SECONDS
) -> list[Firing]:
    """The firings to make up for at start-up, one per want, oldest first. Pure.

    Looks back ``ttl + 2 days`` with a TTL (a firing's data date is at most a day before
    it, so nothing older can still be within its TTL), else ``catch_up_seconds``; drops
    firings whose want is already past its TTL.
    """
    window = schedule.ttl_seconds + 2 * DAY if schedule.ttl_seconds else catch_up_seconds
    out: list[Firing] = []
    seen: set[WantId] = set()
    for firing in firings_between(schedule, now - window, now):
        request = firing.request
        if _past_ttl(firing, now) or request.want_id in seen:
            continue
        seen.add(request.want_id)
        out.append(firing)
    return out


def _past_ttl(firing: Firing, now: float) -> bool:
    ttl = firing.request.ttl_seconds
    return bool(ttl) and firing.data_timestamp + ttl <= now


class Scheduler:
    """Fires the schedules of one graph into its controller."""

    def __init__(
        self,
        schedules: Sequence[ScheduleSpec],
        controller: Controller,
        clock: Clock,
        *,
        catch_up_seconds: float = DEFAULT_CATCH_UP_SECONDS,
    ) -> None:
        self.schedules = tuple(schedules)
        self.controller = controller
        self.clock = clock
        self.catch_up_seconds = catch_up_seconds
        self.fired: list[Firing] = []  # what this scheduler submitted (wants may be old)
        self._checked_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pokes: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        """Catch up missed firings (durably), then start the timer task."""
        now = self.clock.now()
        backlog = [f for s in self.schedules for f in catch_up(s, now, self.catch_up_seconds)]
        backlog.sort(key=lambda f: f.fire_time)
        await self._submit(backlog, now)
        self._checked_until = now
        self._task = asyncio.create_task(self._run(), name="databuild-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def poke(self) -> None:
        """Check for due firings now (tests move a FakeClock, then poke)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pokes.append(done)
        self._wake.set()
        await done

    def next_fire_time(self) -> float | None:
        """The earliest firing after the last check, over all schedules."""
        times = [s.next_fire_after(_aware(self._checked_until)).timestamp() for s in self.schedules]
        return min(times) if times else None

    async def _run(self) -> None:
        while True:
            wake = self.next_fire_time()
            timer = None
            if wake is not None:
                delay = max(0.0, wake - self.clock.now())
                timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            self._wake.clear()
            pokes, self._pokes = self._pokes, []
            try:
                await self._fire_due()
            except Exception as exc:  # a stopped controller: log, keep the timer alive
                log.error("scheduler could not create wants: %s", exc)
                for done in pokes:
                    if not done.done():
                        done.set_exception(exc)
                await asyncio.sleep(1.0)
                continue
            for done in pokes:
                if not done.done():
                    done.set_result(None)

    async def _fire_due(self) -> None:
        now = self.clock.now()
        if now <= self._checked_until:
            return
        due = [f for s in self.schedules for f in firings_between(s, self._checked_until, now)]
        due.sort(key=lambda f: f.fire_time)
        await self._submit(due, now)
        self._checked_until = now

    async def _submit(self, firings: list[Firing], now: float) -> None:
        # A want that exists already is left alone: re-asking would reopen a failed or
        # canceled scheduled want on every restart, which nobody asked for.
        wants = self.controller.state.wants
        fresh: list[Firing] = []
        seen: set[WantId] = set()
        for firing in firings:
            want_id = firing.request.want_id
            if want_id in wants or want_id in seen or _past_ttl(firing, now):
                continue
            seen.add(want_id)
            fresh.append(firing)
        if not fresh:
            return
        await self.controller.create_wants([f.request for f in fresh])
        self.fired.extend(fresh)
        for firing in fresh:
            log.info(
                "schedule %s fired: want %s for %s",
                firing.schedule,
                firing.request.want_id,
                firing.partition_ref,
                extra={
                    "schedule": firing.schedule,
                    "want_id": firing.request.want_id,
                    "partition_ref": firing.partition_ref,
                },
            )
