"""The graph host: the composition root that wires config, log, executor and controller.

Called by the app's lifespan (``databuild serve`` and the embedded service of
``databuild build``) and, read-only, by the CLI when no service runs. It opens the Build
Event Log named by the config, builds the executor, and starts the controller; read-only,
it only folds the log into a state to answer queries. It also writes and removes the
``service.json`` discovery file. It holds no logic of its own beyond that wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import TYPE_CHECKING

from databuild.config import GraphConfig
from databuild.core.errors import ConfigError, ServiceError
from databuild.core.state import BuildState
from databuild.executors.local import LocalExecutor
from databuild.executors.port import Executor
from databuild.log import open_log
from databuild.log.port import BuildEventLog
from databuild.runtime.clock import Clock, SystemClock
from databuild.runtime.controller import Controller
from databuild.runtime.externals import ExternalChecker
from databuild.runtime.scheduler import Scheduler
from databuild.runtime.snapshots import SnapshotStore
from databuild.service.discovery import discovery_path, read_discovery

if TYPE_CHECKING:  # webhooks need httpx (~16 ms to import): loaded only when configured
    from databuild.runtime.alerts import AlertDispatcher
    from databuild.runtime.upstreams import UpstreamFollower


class GraphHost:
    """One graph, served: the log, the controller (None when read-only), the config."""

    def __init__(
        self,
        config: GraphConfig,
        *,
        graph_url: str = "",
        read_only: bool = False,
        clock: Clock | None = None,
        event_log: BuildEventLog | None = None,
        max_parallel: int | None = None,
        executor: Executor | None = None,
        run_schedules: bool = True,
    ) -> None:
        self.config = config
        self.graph_url = graph_url
        self.read_only = read_only
        self.clock: Clock = clock or SystemClock()
        self._log = event_log
        self._max_parallel = max_parallel
        self.controller: Controller | None = None
        self.scheduler: Scheduler | None = None
        self.external_checker: ExternalChecker | None = None
        self.alerts: AlertDispatcher | None = None
        self.followers: dict[str, UpstreamFollower] = {}  # [upstreams.NAME], when serving
        self._executor = executor
        # Off for the embedded service of one CLI command: a `databuild build` must not
        # create the graph's scheduled wants; `databuild serve` runs them.
        self.run_schedules = run_schedules
        self._offline_state: BuildState | None = None
        self.started_at = 0.0
        self.stream_subscriptions = 0  # open /api/v1/events/stream clients (a gauge)
        self.stream_cache: dict[int, bytes] = {}  # sequence -> the event as an SSE message

    def _configured_executor(self, config: GraphConfig) -> Executor:
        max_parallel = self._max_parallel or config.executor.max_parallel
        if config.executor.kind == "local":
            return LocalExecutor(max_parallel=max_parallel)
        if config.executor.kind == "ray":
            # Imported here, not at the top: Ray is an optional extra, and the embedded
            # default must neither need it nor pay for importing it.
            from databuild.executors.ray_executor import RayExecutor

            return RayExecutor(max_parallel=max_parallel, address=config.executor.address)
        raise ConfigError(
            str(config.path), "executor.kind", f"unknown executor {config.executor.kind!r}"
        )

    @property
    def log(self) -> BuildEventLog:
        if self._log is None:
            raise ServiceError("the graph host is not started")
        return self._log

    @property
    def state(self) -> BuildState:
        if self.controller is not None:
            return self.controller.state
        if self._offline_state is None:
            raise ServiceError("the graph host is not started")
        return self._offline_state

    async def start(self) -> None:
        config = self.config
        if self._log is None:
            self._log = await asyncio.to_thread(open_log, config.storage_url)
        self.started_at = time.time()
        if self.read_only:
            state = BuildState(config.graph)
            after = 0
            store = SnapshotStore(config.state_dir / "snapshots", config.graph)
            last = await asyncio.to_thread(self._log.last_sequence)
            snapshot = await asyncio.to_thread(store.load, last)
            if snapshot is not None:
                state, after = snapshot.state, snapshot.sequence
            while True:
                chunk = await asyncio.to_thread(self._log.read, after, 50_000)
                if not chunk:
                    break
                for event in chunk:
                    state.apply(event)
                after = chunk[-1].sequence
            self._offline_state = state
            return
        config.runs_dir.mkdir(parents=True, exist_ok=True)
        executor = self._executor or self._configured_executor(config)
        self.controller = Controller(
            config.graph,
            self._log,
            executor,
            root_dir=config.root_dir,
            runs_dir=config.runs_dir,
            graph_url=self.graph_url,
            clock=self.clock,
            owner=f"databuild service pid {os.getpid()} at {self.graph_url or 'no url'}",
            snapshots=SnapshotStore(config.state_dir / "snapshots", config.graph),
        )
        await self.controller.start()
        if config.alerts.webhooks:
            from databuild.runtime.alerts import AlertDispatcher

            self.alerts = AlertDispatcher(
                config.name, config.alerts.webhooks, self._log, self.controller, config.state_dir
            )
            await self.alerts.start()
        if config.upstreams and self.run_schedules:
            self._start_followers()
        if config.schedules and self.run_schedules:
            self.scheduler = Scheduler(config.schedules, self.controller, self.clock)
            await self.scheduler.start()
        if any(x.check for x in config.externals):
            self.external_checker = ExternalChecker(
                config.externals, self.controller, config.root_dir
            )
            await self.external_checker.start()
        self._write_discovery()

    def _start_followers(self) -> None:
        """One follower per upstream graph (runtime.upstreams), with its token if any."""
        from databuild.runtime.upstreams import UpstreamFollower

        assert self.controller is not None
        for spec in self.config.upstreams:
            token = os.environ.get(spec.token_env, "") if spec.token_env else ""
            follower = UpstreamFollower(spec, self.controller, token=token)
            follower.start()
            self.followers[spec.name] = follower

    async def stop(self) -> None:
        if self.external_checker is not None:
            await self.external_checker.stop()
        for follower in self.followers.values():
            await follower.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.controller is not None:
            self._remove_discovery()
            await self.controller.stop()
        if self._log is not None:
            await asyncio.to_thread(self._log.close)

    def _write_discovery(self) -> None:
        if not self.graph_url:
            return
        path = discovery_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"url": self.graph_url, "pid": os.getpid(), "graph": self.config.name})
        )
        tmp.replace(path)

    def _remove_discovery(self) -> None:
        record = read_discovery(self.config)
        if record is not None and record.pid == os.getpid():
            with contextlib.suppress(OSError):
                discovery_path(self.config).unlink()
