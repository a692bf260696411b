"""Running the service: on the main thread (``databuild serve``) or embedded in a thread
(``databuild build`` when no service runs, read commands without one, and tests).

It binds the socket first (so the URL, which jobs get in DATABUILD_GRAPH_URL, is known
before the controller starts), starts the graph host (so a start-up error is a clear
DataBuildError, not a server traceback), then serves the gateway app with uvicorn; on the
main thread it reloads databuild.toml on SIGHUP (``reloading``). An
embedded service also runs operations for the command that owns it, on its own event loop
(``call``), so that command needs no HTTP to its own service. Against floods it caps the
connections uvicorn holds (``connection_limit``: what ``ulimit -n`` leaves after the log's
and the jobs' needs, at most ``$DATABUILD_MAX_CONNECTIONS``; beyond, 503) and collapses
the flood's warnings into one line per interval (``FloodLogFilter``). Nothing else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

from databuild.config import GraphConfig
from databuild.core.errors import (
    ConfigError,
    DataBuildError,
    InvalidInput,
    ServiceError,
    StorageError,
)
from databuild.executors.port import Executor
from databuild.service.gateway import ServiceApp
from databuild.service.head_start import HeadStart
from databuild.service.host import GraphHost
from databuild.service.reloading import reload_config
from databuild.service.security import MAX_HEAD_BYTES, AccessPolicy, SecurityMiddleware

T = TypeVar("T")
log = logging.getLogger("databuild.service")

# File descriptors the service keeps for itself, beyond its HTTP connections: the Build
# Event Log's (a connection per reading thread), snapshots, and per job slot its output
# pipe, log file, result file and a warm worker's pipes.
FDS_RESERVED = 64
FDS_PER_JOB_SLOT = 8
MIN_CONNECTIONS = 8
# And never more than this (an event-stream client costs about 50 KiB): containers often
# allow a million descriptors. ``$DATABUILD_MAX_CONNECTIONS`` sets another cap.
MAX_CONNECTIONS_ENV = "DATABUILD_MAX_CONNECTIONS"
DEFAULT_MAX_CONNECTIONS = 16_384
_FLOOD_LOG_SECONDS = 10.0


def connection_limit(fd_limit: int | None, max_parallel: int, cap: int) -> int:
    """How many HTTP connections the service holds at once: what its file-descriptor limit
    (``ulimit -n``; None: unlimited) leaves after its own needs, at most ``cap``. Beyond
    it uvicorn answers 503 at once, so a flood of clients can take neither the descriptors
    the log and the jobs need nor unbounded memory."""
    if fd_limit is None:
        return cap
    left = fd_limit - FDS_RESERVED - FDS_PER_JOB_SLOT * max_parallel
    return max(MIN_CONNECTIONS, min(cap, left))


def max_connections_from(environ: Mapping[str, str]) -> int:
    """The cap on connections: ``$DATABUILD_MAX_CONNECTIONS`` or the default."""
    raw = environ.get(MAX_CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidInput(
            f"${MAX_CONNECTIONS_ENV} must be a whole number >= 1 (how many HTTP connections "
            f"the service holds at once); got {raw!r}"
        )
    return int(raw)


class FloodLogFilter(logging.Filter):
    """A flood's warnings, one per refused connection or failed ``accept``, become one line
    per interval saying how many and why, without a traceback."""

    def __init__(self, starts: str, say: Callable[[int], str], interval: float) -> None:
        super().__init__()
        self._starts = starts
        self._say = say
        self._interval = interval
        self._count = 0
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(self._starts):
            return True
        self._count += 1
        now = time.monotonic()
        if now < self._next:
            return False
        record.msg, record.args = self._say(self._count), ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._count, self._next = 0, now + self._interval
        return True


def limit_text(connections: int, fd_limit: int | None) -> str:
    """Where the connection limit comes from, for the log."""
    fds = "unlimited" if fd_limit is None else str(fd_limit)
    return f"at most {connections} connections (ulimit -n {fds}; ${MAX_CONNECTIONS_ENV})"


def _install_flood_filters(connections: int, fd_limit: int | None) -> None:
    for name in ("uvicorn.error", "asyncio"):  # once per process, however many services
        for old in [f for f in logging.getLogger(name).filters if isinstance(f, FloodLogFilter)]:
            logging.getLogger(name).removeFilter(old)
    logging.getLogger("uvicorn.error").addFilter(
        FloodLogFilter(
            "Exceeded concurrency limit",
            lambda n: (
                f"{n} request(s) refused with 503: the service holds "
                f"{limit_text(connections, fd_limit)}"
            ),
            _FLOOD_LOG_SECONDS,
        )
    )
    logging.getLogger("asyncio").addFilter(
        FloodLogFilter(
            "socket.accept() out of system resource",
            lambda n: (
                f"out of file descriptors (ulimit -n {fd_limit}): {n} connection(s) "
                "not accepted for now; they wait in the listen backlog"
            ),
            _FLOOD_LOG_SECONDS,
        )
    )


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    max_parallel: int | None = None
    log_level: str = "warning"
    read_only: bool = False
    advertise_url: str = ""  # where standbys forward writes while this one leads


def options_from(
    config: GraphConfig, host: str | None = None, port: int | None = None
) -> ServeOptions:
    token = os.environ.get(config.service.token_env) or None
    return ServeOptions(
        host=host or config.service.host,
        port=config.service.port if port is None else port,
        token=token,
    )


def checked_advertise_url(raw: str | None) -> str:
    """``--advertise-url``: an http(s) URL without a path (the API's paths are added)."""
    if not raw:
        return ""
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest or "?" in rest:
        raise InvalidInput(
            f"--advertise-url must be an http:// or https:// URL with a host and port and no "
            f"path, such as http://10.0.0.5:8080; got {raw!r}"
        )
    return url


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then; without it every small
    # response waits ~40 ms for the peer's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler, except for one race of its own: out of descriptors, ``accept``
    pauses and retries a second later (``_start_serving``); a server that stopped in that
    second has no socket left, and the retry fails with "Invalid file descriptor: -1".
    Nothing is lost (the service is stopping), so that retry says nothing."""
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    if (
        isinstance(context.get("exception"), ValueError)
        and getattr(callback, "__name__", "") == "_start_serving"
    ):
        return
    loop.default_exception_handler(context)


class Service:
    """One service instance; ``run`` serves until ``request_stop`` (or a signal).
    ``eager_app``: build the FastAPI app at once (else on the first request that needs it);
    ``executor``: the one the host runs (else the one the configuration names)."""

    def __init__(
        self,
        config: GraphConfig,
        options: ServeOptions,
        *,
        eager_app: bool = True,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.policy = AccessPolicy(options.host, options.token)  # refuses beyond loopback w/o token
        self.sock = _bind(options.host, options.port)
        self.url = _url(options.host, self.sock)
        self.host = GraphHost(
            config,
            graph_url=self.url,
            max_parallel=options.max_parallel,
            read_only=options.read_only,
            advertise_url=options.advertise_url,
            executor=executor,
        )
        app = SecurityMiddleware(ServiceApp(self.host, eager=eager_app), policy=self.policy)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        fd_limit = None if soft == resource.RLIM_INFINITY else soft
        self.connection_limit = connection_limit(
            fd_limit,
            options.max_parallel or config.executor.max_parallel,
            max_connections_from(os.environ),
        )
        _install_flood_filters(self.connection_limit, fd_limit)
        self._fd_limit = fd_limit
        uv_config = uvicorn.Config(
            app,
            limit_concurrency=self.connection_limit,
            log_level=options.log_level,
            access_log=False,
            lifespan="off",  # the host is started and stopped here, not by the app
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self.server = uvicorn.Server(uv_config)
        self.ready = threading.Event()
        self.serve_first = True  # see ``run``
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_loop_exception)
        try:
            await self.host.open()  # bad storage settings: one clear error, nothing served
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            self.sock.close()
            with contextlib.suppress(Exception):
                await self.host.stop()
            raise
        # Serve first, then start the host: while the log is replayed, /healthz answers
        # "starting" (alive) and /readyz 503 (not ready); every other request gets 503.
        # An embedded service starts its host first: nobody probes it, its first runs
        # start without waiting for uvicorn's start (~10 ms), and a job that asks before
        # uvicorn serves waits in the socket's backlog (it listens already).
        serving: asyncio.Task[None] | None = None
        try:
            if not self.serve_first:
                await self.host.start()
            serving = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            self._serving = serving
            while not self.server.started and not serving.done():
                await asyncio.sleep(0.005)
            if serving.done():
                serving.result()  # uvicorn could not start: its error, as it is
                raise ServiceError("the HTTP server stopped during start-up")
            if self.serve_first:
                await self.host.start()
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            if serving is not None:
                await self._stop_serving(serving)
            self.sock.close()
            with contextlib.suppress(Exception):
                await self.host.stop()
            raise
        watch = asyncio.create_task(self._stop_when_controller_fails())
        self._reload_on_sighup()
        try:
            self.ready.set()
            log.info(
                "serving %s at once; more get 503",
                limit_text(self.connection_limit, self._fd_limit),
            )
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        finally:
            watch.cancel()
            await self.host.stop()
            self.sock.close()
        failure = self.host.controller.failure if self.host.controller else self.host.failure
        if failure is not None:
            # Never stay up half-dead: exit non-zero so a supervisor restarts the service,
            # which then recovers from the log as after kill -9 (issue 14.2).
            raise StorageError(f"the service stopped: {failure}")

    async def _stop_serving(self, serving: asyncio.Task[None]) -> None:
        self.server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(serving, timeout=10)
        self.sock.close()

    async def _stop_when_controller_fails(self) -> None:
        if self.options.read_only:
            return
        await self.host.wait_for_failure()
        self.server.should_exit = True

    def _reload_on_sighup(self) -> None:
        """``databuild serve`` (the main thread) reloads databuild.toml on SIGHUP, as
        ``POST /api/v1/reload`` does; an embedded service leaves signals to its command."""
        if threading.current_thread() is not threading.main_thread() or self.options.read_only:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)

    def _start_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        try:
            await reload_config(self.host)
        except ConfigError:
            pass  # refused and logged with its error; the old configuration goes on
        except DataBuildError as exc:
            log.error("reload on SIGHUP failed: %s", exc)

    def request_stop(self, *, at_once: bool = False) -> None:
        """Graceful (uvicorn finishes open requests on its next 0.1 s tick), or, for an
        embedded service whose only client has gone, at once: the HTTP server is dropped
        and the host stopped cleanly all the same."""
        loop, serving = self._loop, self._serving
        if at_once and loop is not None and serving is not None:
            loop.call_soon_threadsafe(serving.cancel)
        else:
            self.server.should_exit = True


class EmbeddedService:
    """A service on a background thread with its own event loop, for one CLI command.
    With a ``head_start`` (see ``head_start``), it runs on that head start's thread and
    loop, with its executor and the warm workers that executor has started already."""

    def __init__(
        self, config: GraphConfig, options: ServeOptions, head_start: HeadStart | None = None
    ) -> None:
        self.head_start = head_start
        try:
            executor = head_start.executor if head_start is not None else None
            self.service = Service(config, options, eager_app=False, executor=executor)
        except BaseException:
            if head_start is not None:
                head_start.abandon()
            raise
        self.service.host.run_schedules = False  # schedules run in `databuild serve` only
        self.service.serve_first = False
        if head_start is not None:
            self.thread = head_start.thread
        else:
            self.thread = threading.Thread(
                target=self._main, name="databuild-embedded", daemon=True
            )

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def host(self) -> GraphHost:
        return self.service.host

    def call(self, operation: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run an operation on the service's event loop (where the controller lives) from
        the owning command's thread, and wait for its result or its error."""
        loop = self.service._loop
        if loop is None or not self.thread.is_alive():
            raise ServiceError("the embedded service is not running")
        try:
            return asyncio.run_coroutine_threadsafe(operation(), loop).result()
        except concurrent.futures.CancelledError:
            raise ServiceError("the embedded service stopped") from None

    def _main(self) -> None:
        with contextlib.suppress(BaseException):
            asyncio.run(self.service.run())
        self.service.ready.set()

    async def _run(self) -> None:  # the same, on the head start's loop
        try:
            with contextlib.suppress(BaseException):
                await self.service.run()
        finally:
            self.service.ready.set()

    def __enter__(self) -> EmbeddedService:
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        if self.head_start is not None:
            self.head_start.run(self._run)
        else:
            self.thread.start()
        while not self.service.ready.wait(0.05) and self.thread.is_alive():
            pass  # (a thread that died without a word: the check below says so)
        if self.service.error is not None:
            error = self.service.error
            if isinstance(error, DataBuildError):
                raise error
            raise ServiceError(f"the embedded service could not start: {error}")
        if not self.thread.is_alive():
            raise ServiceError("the embedded service stopped during start-up")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.head_start is not None and not self.head_start.handed:
            self.head_start.abandon()  # interrupted before the service was handed over
            return
        self.service.request_stop(at_once=True)
        self.thread.join(timeout=30)
