"""Reloading ``databuild.toml`` into a running service (SIGHUP, ``POST /api/v1/reload``,
``databuild reload``).

``reload_config(host)`` reads and validates the file again. A file that does not load, or
that changes what only a restart can change (the graph's name, storage, executor, where
the service listens, alerts), is refused with a ``ConfigError`` naming the file and key,
logged, and the service goes on with the configuration it runs. Otherwise the controller
routes new runs by the new graph (runs in flight finish under their old spec), the root
wants that failed only because no job built a partition are reopened (``config_reloaded``
in the log, then ``want_reopened``), and the schedules are replaced. One reload at a time.

Called by ``admin_routes`` and ``server`` (the signal handler). It decides nothing about
wants itself: the reconciler does (``Reconciler.reload``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from databuild.config import GraphConfig, load_config
from databuild.core.errors import ConfigError
from databuild.core.model import WantId
from databuild.runtime.externals import ExternalChecker
from databuild.runtime.scheduler import Scheduler
from databuild.service.host import GraphHost
from databuild.service.operations import controller_of

log = logging.getLogger("databuild.service")

# (key named in the refusal, what a restart-only setting is)
_RESTART_ONLY: tuple[tuple[str, Callable[[GraphConfig], object]], ...] = (
    ("graph.name", lambda c: c.name),
    ("storage", lambda c: (c.storage_url, c.state_dir)),
    ("executor", lambda c: c.executor),
    ("service", lambda c: c.service),
    ("alerts", lambda c: c.alerts),
)

_locks: weakref.WeakKeyDictionary[GraphHost, asyncio.Lock] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class ReloadResult:
    config_path: str
    config_digest: str  # of the configuration now running
    previous_digest: str
    jobs_added: tuple[str, ...]
    jobs_changed: tuple[str, ...]
    jobs_removed: tuple[str, ...]
    schedules_changed: bool
    wants_retried: tuple[WantId, ...]

    @property
    def summary(self) -> str:
        """One line for the service log and the CLI."""
        if self.config_digest == self.previous_digest:
            return f"configuration reloaded from {self.config_path}: unchanged"
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added job(s)", self.jobs_added),
                ("changed job(s)", self.jobs_changed),
                ("removed job(s)", self.jobs_removed),
            )
            if names
        ]
        if self.schedules_changed:
            parts.append("schedules replaced")
        if self.wants_retried:
            parts.append(f"{len(self.wants_retried)} failed want(s) retried")
        changes = "; ".join(parts) or "no job or schedule changed"
        return f"configuration reloaded from {self.config_path}: {changes}"


def _refused(error: ConfigError, running: GraphConfig) -> ConfigError:
    return ConfigError(
        error.path,
        error.key,
        f"{error.problem}; reload refused: the service keeps running the configuration it "
        f"loaded (sha256 {running.digest[:12]})",
    )


def _lock(host: GraphHost) -> asyncio.Lock:
    lock = _locks.get(host)
    if lock is None:
        lock = _locks[host] = asyncio.Lock()
    return lock


async def reload_config(host: GraphHost) -> ReloadResult:
    """Load the host's ``databuild.toml`` again and apply it, or raise ConfigError."""
    controller = controller_of(host)
    async with _lock(host):
        running = host.config
        try:
            new = await asyncio.to_thread(load_config, running.path)
            for key, setting in _RESTART_ONLY:
                if setting(new) != setting(running):
                    raise ConfigError(
                        str(running.path),
                        key,
                        "changed, and that takes a restart of the service "
                        "(stop it and run `databuild serve` again)",
                    )
        except ConfigError as exc:
            refused = _refused(exc, running)
            log.error("%s", refused)
            raise refused from None
        started = time.monotonic()
        summary = await controller.reload(new.graph, new.digest)
        schedules_changed = new.schedules != running.schedules
        if schedules_changed and host.run_schedules:
            if host.scheduler is not None:
                await host.scheduler.stop()
                host.scheduler = None
            if new.schedules:
                host.scheduler = Scheduler(new.schedules, controller, host.clock)
                await host.scheduler.start()
        if new.externals != running.externals:
            if host.external_checker is not None:
                await host.external_checker.stop()
                host.external_checker = None
            if any(x.check for x in new.externals):
                host.external_checker = ExternalChecker(new.externals, controller, new.root_dir)
                await host.external_checker.start()
        host.config = new
        result = ReloadResult(
            config_path=str(new.path),
            config_digest=new.digest,
            previous_digest=running.digest,
            jobs_added=summary.jobs_added,
            jobs_changed=summary.jobs_changed,
            jobs_removed=summary.jobs_removed,
            schedules_changed=schedules_changed,
            wants_retried=summary.wants_retried,
        )
        # a warning, not info: the service's default log (warnings and up) should show every
        # change of the configuration it runs, as it shows every refusal
        log.warning("%s (%.3f s)", result.summary, time.monotonic() - started)
        return result
