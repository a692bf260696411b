"""The one clock at the edge. The core takes ``now`` as a number; only the runtime asks a
Clock for it, so tests pass a FakeClock instead of patching time.

Clock faults (issue 14.4): ``SystemClock`` never goes backwards within a process. A wall
clock stepped back (an NTP correction, a VM resumed from an old snapshot) holds its time
still until the wall clock catches up, so no timer fires early, no deadline passes twice
and the Build Event Log's timestamps stay in order (the controller also clamps them against
the log's newest event, across restarts). A forward step is taken as time that passed:
SLA deadlines and TTLs are wall-clock facts. Waits whose length is the point (the storage
back-off and grace) use the event loop's monotonic clock, not this one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    """The wall clock (``time.time``, or ``wall`` in tests), clamped never to go back."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._latest = 0.0
        self._lock = threading.Lock()  # the API's worker threads read it too

    def now(self) -> float:
        reading = self._wall()
        with self._lock:
            if reading > self._latest:
                self._latest = reading
            return self._latest


class FakeClock:
    """A clock that moves only when told to (backwards too: tests of clock faults)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, value: float) -> None:
        self._now = value
