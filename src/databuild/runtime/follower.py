"""``LogFollower``: a standby's view of a shared Build Event Log, kept current as it commits.

Who calls it: the graph host of a standby service (``service.host``), which serves reads and
the dashboard from ``state`` while another service is the leader. What it does: a thread
blocks on the log's ``CommitListener`` (PostgreSQL ``LISTEN``: it wakes on the leader's
``NOTIFY``, it does not poll), and each wake-up makes the event loop read the events after
the state's last sequence and fold them with ``BuildState.apply``, the fold a restart uses.
The listener's own timeout only lets the thread notice a stop.

What it must not do: write to the log, or decide anything; a read that fails is retried on
the next wake-up (a reconnecting listener always wakes once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from databuild.core.errors import StorageError
from databuild.core.state import BuildState
from databuild.log.port import SharedEventLog

log = logging.getLogger("databuild.follower")

_CHUNK = 50_000
_STOP_CHECK_SECONDS = 1.0


class LogFollower:
    def __init__(self, event_log: SharedEventLog, state: BuildState) -> None:
        self.log = event_log
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._commit_signal = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._folding = asyncio.Lock()  # one catch-up at a time, or events fold twice
        self.stopped = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, name="databuild-follower", daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self._fold_on_wake(), name="databuild-follower-fold")
        await self.catch_up()

    def _listen(self) -> None:
        listener = self.log.listen()
        try:
            while not self._stop.is_set():
                if listener.wait(_STOP_CHECK_SECONDS) and self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop closed: stopping
                        self._loop.call_soon_threadsafe(self._wake.set)
        finally:
            listener.close()

    async def _fold_on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.catch_up()

    async def catch_up(self) -> None:
        """Fold every event committed after the state's last one."""
        async with self._folding:
            await self._catch_up()

    async def _catch_up(self) -> None:
        try:
            while True:
                after = self.state.last_sequence
                chunk = await asyncio.to_thread(self.log.read, after, _CHUNK)
                if not chunk:
                    return
                if chunk[0].sequence != after + 1:
                    raise StorageError(f"the log skipped from event {after} to {chunk[0].sequence}")
                for event in chunk:
                    self.state.apply(event)
                self._signal_commit()
        except StorageError as exc:
            log.warning(
                "standby could not read the Build Event Log (retried on the next commit): %s", exc
            )

    def _signal_commit(self) -> None:
        signal, self._commit_signal = self._commit_signal, asyncio.Event()
        signal.set()

    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Until the state passes sequence ``after``, ``timeout`` passes, or a stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state.last_sequence <= after and not self.stopped:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            signal = self._commit_signal
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await signal.wait()
        return self.state.last_sequence

    async def stop(self, *, join: bool = True) -> None:
        """``join=False`` (a standby taking over): do not wait up to a second for the
        listener thread to notice; it ends by itself and closes its session."""
        self.stopped = True
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None and join:
            await asyncio.to_thread(self._thread.join, 2 * _STOP_CHECK_SECONDS + 10)
        self._signal_commit()
