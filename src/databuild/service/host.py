"""The graph host: the composition root that wires config, log, executor and controller.

Called by the app's lifespan (``databuild serve`` and the embedded service of
``databuild build``) and, read-only, by the CLI when no service runs. It opens the Build
Event Log named by the config, builds the executor, and starts the controller; read-only,
it only folds the log into a state to answer queries. It also writes and removes the
``service.json`` discovery file. It holds no logic of its own beyond that wiring.

On a shared log (PostgreSQL) whose writer role another service holds, the host starts as
a *standby*: it folds the log (snapshot + events) into a state and follows new commits
(``runtime.follower``) to serve reads, while a thread waits in the database for the writer
role. When it gets it (the leader died or stopped answering), it becomes the *leader*: the
controller starts from the folded state, folds what is left, and retries the runs the old
leader had in flight. A leader told by the log that a newer one took over stops its
controller (``LeadershipLost``), and ``databuild serve`` exits non-zero for its supervisor
to restart it, as a standby. An SQLite log stays single-service (``LogLocked``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Literal

from databuild.config import GraphConfig
from databuild.core.errors import ConfigError, LeadershipLost, LogLocked, ServiceError
from databuild.core.state import BuildState
from databuild.executors.local import LocalExecutor
from databuild.executors.port import Executor
from databuild.log import open_log
from databuild.log.port import BuildEventLog, SharedEventLog, WriterRecord
from databuild.runtime.clock import Clock, SystemClock
from databuild.runtime.controller import Controller
from databuild.runtime.externals import ExternalChecker
from databuild.runtime.follower import LogFollower
from databuild.runtime.history import starting_state
from databuild.runtime.scheduler import Scheduler
from databuild.runtime.snapshots import SnapshotStore
from databuild.service.discovery import discovery_path, read_discovery

if TYPE_CHECKING:  # webhooks need httpx (~16 ms to import): loaded only when configured
    from databuild.runtime.alerts import AlertDispatcher
    from databuild.runtime.upstreams import UpstreamFollower

log = logging.getLogger("databuild.service")
Role = Literal["leader", "standby", "reader"]


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
        advertise_url: str = "",
    ) -> None:
        self.config = config
        self.graph_url = graph_url
        # where the standbys forward writes while this host leads (default: graph_url)
        self.advertise_url = advertise_url or graph_url
        self.role: Role = "reader" if read_only else "leader"
        self.follower: LogFollower | None = None  # while a standby
        self._promotion: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.leading = asyncio.Event()  # set once this host's controller runs
        self.failure: BaseException | None = None  # a standby that could not take over
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
        # True once start() has replayed the log and started everything: until then the
        # service answers only /healthz and /readyz (gateway), and those say "starting".
        self.ready = False
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

    async def open(self) -> BuildEventLog:
        """Open the Build Event Log (the quick part of ``start`` that fails on bad storage
        settings), so that a server can report such an error before it listens."""
        if self._log is None:
            self._log = await asyncio.to_thread(open_log, self.config.storage_url)
        return self._log

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.open()
        self.started_at = time.time()
        if self.read_only:
            self._offline_state = await self._fold()
            self.ready = True
            return
        shared = self._log if isinstance(self._log, SharedEventLog) else None
        if shared is not None:
            shared.advertise_url = self.advertise_url
            shared.on_writer_lost = self._writer_lost
            try:
                await asyncio.to_thread(shared.acquire_writer, self.owner)
            except LogLocked as exc:
                await self._start_standby(shared, exc)
                return
        await self._lead()

    @property
    def owner(self) -> str:
        return (
            f"databuild service pid {os.getpid()} on {socket.gethostname()} "
            f"at {self.advertise_url or 'no url'}"
        )

    async def _fold(self) -> BuildState:
        """The log folded into a state: from this graph's newest usable snapshot, then the
        events after it."""
        store = SnapshotStore(self.config.state_dir / "snapshots", self.config.graph)
        last = await asyncio.to_thread(self.log.last_sequence)
        state, after = await asyncio.to_thread(starting_state, store, self.config.graph, last)
        while True:
            chunk = await asyncio.to_thread(self.log.read, after, 50_000)
            if not chunk:
                break
            for event in chunk:
                state.apply(event)
            after = chunk[-1].sequence
        state.history.replay_done()
        return state

    async def _start_standby(self, shared: SharedEventLog, locked: LogLocked) -> None:
        self.role = "standby"
        log.warning("standby: %s; serving reads and forwarding writes to it", locked)
        self._offline_state = await self._fold()
        self.follower = LogFollower(shared, self._offline_state)
        await self.follower.start()
        self._write_discovery()
        self.ready = True  # folded: a standby serves reads (and forwards writes)
        self._promotion = asyncio.create_task(self._wait_and_lead(shared), name="databuild-standby")

    async def _wait_and_lead(self, shared: SharedEventLog) -> None:
        try:
            if not await asyncio.to_thread(shared.wait_for_writer, self.owner):
                return  # stopping
            follower, self.follower = self.follower, None
            if follower is not None:
                await follower.stop(join=False)
            log.warning("took over the writer role of the Build Event Log: now the leader")
            await self._lead(follower.state if follower is not None else None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the service must exit, not stay a headless standby
            self.failure = exc

    async def wait_for_failure(self) -> None:
        """Return once this host cannot go on: its controller stopped on an error, or a
        standby failed to take over. Never returns for a healthy host."""
        if self._promotion is not None:
            await asyncio.shield(self._promotion)
            if self.failure is not None:
                return
        if self.controller is None:
            await asyncio.Event().wait()  # a reader, or a standby told to stop
        assert self.controller is not None
        await self.controller.failed.wait()

    async def _lead(self, state: BuildState | None = None) -> None:
        config = self.config
        event_log = self.log
        config.runs_dir.mkdir(parents=True, exist_ok=True)
        executor = self._executor or self._configured_executor(config)
        self.controller = Controller(
            config.graph,
            event_log,
            executor,
            root_dir=config.root_dir,
            runs_dir=config.runs_dir,
            graph_url=self.graph_url,
            clock=self.clock,
            owner=self.owner,
            snapshots=SnapshotStore(config.state_dir / "snapshots", config.graph),
            state=state,
        )
        self.role = "leader"
        await self.controller.start()
        self.leading.set()
        if config.alerts.webhooks:
            from databuild.runtime.alerts import AlertDispatcher

            self.alerts = AlertDispatcher(
                config.name, config.alerts.webhooks, event_log, self.controller, config.state_dir
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
        self.ready = True

    def _writer_lost(self, message: str) -> None:
        """From the log's lease thread: another service leads now. Stop writing at once."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: already stopping
                loop.call_soon_threadsafe(self._abandon, message)

    def _abandon(self, message: str) -> None:
        if self.controller is not None:
            self.controller.abandon(LeadershipLost(message))

    async def wait_for_events(self, after: int, timeout: float) -> int:
        """Until an event after ``after`` is committed (leader) or folded (standby), or
        ``timeout``; the sequence reached."""
        if self.controller is not None:
            return await self.controller.wait_for_events(after, timeout)
        if self.follower is not None:
            return await self.follower.wait_for_events(after, timeout)
        return self.state.last_sequence

    def current_writer(self) -> WriterRecord | None:
        """The shared log's recorded writer (None for a log of one service). Blocking."""
        if isinstance(self._log, SharedEventLog):
            return self._log.current_writer()
        return None

    @property
    def more_events_may_come(self) -> bool:
        controller = self.controller
        if controller is not None:
            return controller.failure is None and not controller.stopping
        return self.follower is not None and not self.follower.stopped

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
        self.ready = False
        if self._promotion is not None and not self._promotion.done():
            if isinstance(self._log, SharedEventLog):
                self._log.stop_waiting()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._promotion
        if self.follower is not None:
            await self.follower.stop()
            self._remove_discovery()
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
