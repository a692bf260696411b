"""Alert hooks: POST a JSON payload to each ``[alerts] webhooks`` URL for alert-worthy events.

Started and stopped by the graph host beside the controller. Alert-worthy are an
``sla_missed`` or a ``want_failed`` event of a *root* want (one a client or a schedule
asked for). Derived wants are not alerted: they share their root's SLA deadline (so their
violations repeat the root's, at the same moment), and a derived want's failure fails its
root as ``upstream_failed`` with a message naming the partition that failed, so the root's
alert already carries it.

How: one asyncio task per webhook follows the Build Event Log (``log.read`` after its
cursor, woken by ``Controller.wait_for_events``; it never polls and never runs inside a
reconcile step, so a slow or dead receiver cannot delay the reconciler). Each alert is
POSTed until the receiver answers 2xx, retrying with exponential back-off (any other
answer or a transport error is retried; alerts for one webhook stay in order). After each
delivery the webhook's cursor (the sequence delivered) is written atomically to
``<state_dir>/alerts/<hash of the url>.json``, so after a restart delivery resumes with
the first undelivered alert: at-least-once. Each payload carries an idempotency key
(``<graph>:<sequence>``, also sent as the ``Idempotency-Key`` header) so a receiver can
drop the duplicate it may get when the service stopped between a POST and its cursor write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from databuild import __version__
from databuild.core import events as ev
from databuild.core.data_time import format_timestamp
from databuild.core.model import NO_DEADLINE
from databuild.core.state import BuildState
from databuild.log.port import BuildEventLog
from databuild.runtime.controller import Controller

log = logging.getLogger("databuild.alerts")

ALERT_EVENT_TYPES = ("sla_missed", "want_failed")
_READ_CHUNK = 500
_IDLE_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Back-off between attempts: ``backoff_seconds * 2**n``, at most ``backoff_max_seconds``."""

    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    timeout_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempt)))


def idempotency_key(graph: str, sequence: int) -> str:
    return f"{graph}:{sequence}"


def alert_payload(graph: str, event: ev.Event, state: BuildState) -> dict[str, Any] | None:
    """The JSON body for ``event``, or None when it is not alert-worthy. Pure."""
    payload = event.payload
    if not isinstance(payload, ev.SlaMissed | ev.WantFailed):
        return None
    record = state.wants.get(payload.want_id)
    if record is None or record.want.want_id != record.want.root_want_id:
        return None
    want = record.want
    body: dict[str, Any] = {
        "idempotency_key": idempotency_key(graph, event.sequence),
        "graph": graph,
        "sequence": event.sequence,
        "timestamp": event.timestamp,
        "want": {
            "want_id": want.want_id,
            "root_want_id": want.root_want_id,
            "partition_ref": want.partition_ref,
            "data_timestamp": want.data_timestamp,
            "sla_seconds": want.sla_seconds,
            "ttl_seconds": want.ttl_seconds,
            "sla_deadline": 0.0 if want.sla_deadline == NO_DEADLINE else want.sla_deadline,
            "source": want.source.value,
        },
    }
    if isinstance(payload, ev.SlaMissed):
        body["type"] = "sla_missed"
        body["sla_missed"] = {
            "deadline": payload.deadline,
            "blame_ref": payload.blame_ref,
            "blame": payload.blame,
        }
        body["summary"] = (
            f"{graph}: {want.partition_ref} missed its SLA "
            f"({format_timestamp(payload.deadline)}): {payload.blame_ref} {payload.blame}"
        )
    else:
        body["type"] = "want_failed"
        body["want_failed"] = {
            "reason": payload.reason.value,
            "message": payload.message,
            "upstream_ref": payload.upstream_ref or "",
        }
        body["summary"] = f"{graph}: want for {want.partition_ref} failed: {payload.message}"
    return body


class DeliveryCursor:
    """The last event sequence delivered to one webhook, in a small JSON file."""

    def __init__(self, state_dir: Path, url: str) -> None:
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = state_dir / "alerts" / f"{digest}.json"
        self.url = url

    def load(self) -> int:
        try:
            data = json.loads(self.path.read_text())
            return int(data["delivered"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged cursor must not lose alerts: start over (receivers dedupe by key).
            log.error(
                "alert cursor %s is unreadable (%s); resending from the start", self.path, exc
            )
            return 0

    def save(self, delivered: int) -> None:
        """Write-then-rename, fsynced: a crash leaves the old cursor or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"url": self.url, "delivered": delivered}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


class AlertDispatcher:
    """Delivers alerts of one graph to its webhooks, one follower task per webhook."""

    def __init__(
        self,
        graph: str,
        webhooks: Sequence[str],
        event_log: BuildEventLog,
        controller: Controller,
        state_dir: Path,
        *,
        policy: DeliveryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.graph = graph
        self.webhooks = tuple(webhooks)
        self.log = event_log
        self.controller = controller
        self.state_dir = state_dir
        self.policy = policy or DeliveryPolicy()
        self._transport = transport
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered: list[tuple[str, int]] = []  # (url, sequence), for observability
        self.failed_attempts = 0

    async def start(self) -> None:
        for url in self.webhooks:
            cursor = DeliveryCursor(self.state_dir, url)
            self._tasks.append(asyncio.create_task(self._follow(cursor), name=f"alerts {url}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _follow(self, cursor: DeliveryCursor) -> None:
        position = await asyncio.to_thread(cursor.load)
        async with httpx.AsyncClient(
            timeout=self.policy.timeout_seconds, transport=self._transport
        ) as client:
            while True:
                head = self.controller.last_committed
                events = await asyncio.to_thread(
                    self.log.read, position, _READ_CHUNK, ALERT_EVENT_TYPES
                )
                if not events:
                    # nothing alert-worthy up to ``head``: sleep until the log grows past it
                    position = max(position, head)
                    await self.controller.wait_for_events(position, _IDLE_WAIT_SECONDS)
                    continue
                for event in events:
                    body = alert_payload(self.graph, event, self.controller.state)
                    if body is not None:
                        await self._deliver(client, cursor.url, event.sequence, body)
                        await asyncio.to_thread(cursor.save, event.sequence)
                        self.delivered.append((cursor.url, event.sequence))
                    position = event.sequence

    async def _deliver(
        self, client: httpx.AsyncClient, url: str, sequence: int, body: dict[str, Any]
    ) -> None:
        headers = {
            "Idempotency-Key": idempotency_key(self.graph, sequence),
            "User-Agent": f"databuild/{__version__}",
        }
        attempt = 0
        while True:
            try:
                response = await client.post(url, json=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            delay = self.policy.delay(attempt)
            self.failed_attempts += 1
            log.warning(
                "alert %s to %s failed (%s); retrying in %.1fs", sequence, url, problem, delay
            )
            attempt += 1
            await asyncio.sleep(delay)
