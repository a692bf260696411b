"""A head start for the embedded service of ``databuild build``: its warm workers start
while the command is still importing the service.

A warm worker takes ~50 ms to start (an interpreter, ``databuild.sdk``) and the service
stack ~60-90 ms to import, and a build's first run waits for both when they happen one
after the other. ``HeadStart.begin`` runs as soon as the command has its configuration:
it starts the event loop thread the embedded service will run on, with the local
executor, which starts the warm workers the first runs will want (``prepare``) at once.
The command imports the service meanwhile and hands its ``run`` to this loop
(``EmbeddedService(head_start=...)``); the controller's own ``prepare`` then finds those
workers and starts no more. Nothing is decided here: no log is opened, no run started.

``begin`` returns None when there is nothing to start early (no warm job, another
executor, no graph directory): the embedded service then starts as it always did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from databuild.config import GraphConfig
from databuild.executors.local import LocalExecutor

ServiceMain = Callable[[], Coroutine[Any, Any, None]]

logger = logging.getLogger(__name__)


class HeadStart:
    """The loop thread and the local executor, started ahead of the service."""

    def __init__(self, config: GraphConfig, executor: LocalExecutor) -> None:
        self.config = config
        self.executor = executor
        self.thread = threading.Thread(target=self._main, name="databuild-embedded", daemon=True)
        # what the loop runs next: the service's main (or None: nothing, shut down)
        self._next: concurrent.futures.Future[ServiceMain | None] = concurrent.futures.Future()
        self._prepared = threading.Event()

    @classmethod
    def begin(cls, config: GraphConfig, max_parallel: int | None) -> HeadStart | None:
        jobs = config.graph.jobs
        if config.executor.kind != "local" or not any(job.warm for job in jobs):
            return None
        if not config.root_dir.is_dir():
            return None  # the service says what is wrong, as it would without a head start
        head = cls(config, LocalExecutor(max_parallel or config.executor.max_parallel))
        head.thread.start()
        head._prepared.wait()
        return head

    @property
    def handed(self) -> bool:
        """Whether a service (or nothing, once abandoned) was handed to the loop."""
        return self._next.done()

    def run(self, main: ServiceMain) -> None:
        """Run the service's ``main`` on this loop, in this thread (once)."""
        self._next.set_result(main)

    def abandon(self) -> None:
        """No service will run here: the warm workers are stopped and the thread ends."""
        if not self._next.done():
            self._next.set_result(None)
        self.thread.join(timeout=10)

    def _main(self) -> None:
        try:
            with contextlib.suppress(BaseException):
                asyncio.run(self._serve())
        finally:
            self._prepared.set()  # whatever happened, ``begin`` does not wait for ever

    async def _serve(self) -> None:
        try:
            self.executor.prepare(self.config.graph.jobs, self.config.root_dir)
        except Exception:  # only time is lost: the controller's own prepare tries again
            logger.warning("could not start warm workers ahead of the service", exc_info=True)
        finally:
            self._prepared.set()
        main = await asyncio.wrap_future(self._next)
        try:
            if main is not None:
                await main()
        finally:
            # the host closes its executor when it stops, but not one it never led with
            # (bad storage, a failed start): the workers started here must not outlive it
            await self.executor.close()
