"""The one clock at the edge. The core takes ``now`` as a number; only the runtime asks a
Clock for it, so tests pass a FakeClock instead of patching time.

Clock faults (issue 14.4): ``SystemClock`` never goes backwards within a process. A wall
clock stepped back (an NTP correction, a VM resumed from an old snapshot) holds its time
still until the wall clock catches up, so no timer fires early, no deadline passes twice
and the Build Event Log's timestamps stay in order (the controller also clamps them against
the log's newest event, across restarts). A forward step is time that passed for SLA
deadlines and TTLs, which are wall-clock facts; but not for retry back-offs, whose length is
the point: ``take_step`` tells the controller how far the wall clock leapt beyond the
monotonic clock, and it records a ``ClockStepped`` event that moves waiting back-offs later
by as much. Waits inside the shell (the storage back-off and grace) use the event loop's
monotonic clock directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

# A leap of the wall clock ahead of the monotonic clock beyond this is a step, not drift
# (NTP slews drift by well under a millisecond per second).
STEP_SECONDS = 1.0


class Clock(Protocol):
    def now(self) -> float: ...

    def take_step(self) -> float:
        """Seconds the wall clock stepped forward, beyond the time that passed, since the
        last call (0.0: none)."""
        ...


class SystemClock:
    """The wall clock (``time.time``, or ``wall`` in tests), clamped never to go back."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._latest = 0.0
        self._lock = threading.Lock()  # the API's worker threads read it too
        # wall - monotonic: constant while no one steps the wall clock. The highest seen is
        # the baseline, so a step back and its later correction forward count as no step.
        self._offset: float | None = None
        self._stepped = 0.0

    def now(self) -> float:
        reading = self._wall()
        offset = reading - self._monotonic()
        with self._lock:
            if self._offset is None:
                self._offset = offset
            elif offset - self._offset > STEP_SECONDS:
                self._stepped += offset - self._offset
                self._offset = offset
            if reading > self._latest:
                self._latest = reading
            return self._latest

    def take_step(self) -> float:
        """Steps seen by the readings so far (the controller reads ``now`` first)."""
        with self._lock:
            stepped, self._stepped = self._stepped, 0.0
            return stepped


class FakeClock:
    """A clock that moves only when told to (backwards too: tests of clock faults)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._stepped = 0.0

    def now(self) -> float:
        return self._now

    def step(self, seconds: float) -> float:
        """The wall clock steps by ``seconds`` without that time passing (NTP, VM resume);
        ``advance`` is time that passes."""
        self._now += seconds
        if seconds > 0:
            self._stepped += seconds
        return self._now

    def take_step(self) -> float:
        stepped, self._stepped = self._stepped, 0.0
        return stepped

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, value: float) -> None:
        self._now = value
