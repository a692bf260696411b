"""``databuild build``: create wants through the service and follow them to the end.

Called by ``main``. It creates the wants, then follows the event stream (long-poll, no
sleeping loop) and shows live progress until every requested want is terminal; the exit
code says whether all were satisfied. It talks to the service through a ``BuildApi``: over
HTTP to a running service (``HttpBuildApi``), or in process to the embedded one ``main``
started (``databuild.cli.inprocess``). It does not start services (``main`` decides
between a running service and an embedded one) and holds no build logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table

from databuild.cli.client import Client
from databuild.cli.output import console, err_console, styled


class BuildApi(Protocol):
    """What a build needs of the service; answers are the API's JSON documents."""

    def last_sequence(self) -> int: ...

    def create_wants(self, body: dict[str, Any]) -> dict[str, Any]:
        """The create response: ``wants`` and ``notices`` (re-asks that differ)."""
        ...

    def events(self, after: int) -> dict[str, Any]:
        """Up to 1000 events after ``after``, waiting up to 10 s for one."""
        ...

    def want(self, want_id: str) -> dict[str, Any]: ...


class HttpBuildApi:
    def __init__(self, client: Client) -> None:
        self.client = client

    def last_sequence(self) -> int:
        return int(self.client.get("/healthz")["last_sequence"])

    def create_wants(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.post("/api/v1/wants", body)

    def events(self, after: int) -> dict[str, Any]:
        return self.client.get(
            "/api/v1/events", {"after": after, "limit": 1000, "wait": 10}, timeout=40.0
        )

    def want(self, want_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.client.get(f"/api/v1/wants/{want_id}")["want"]
        return found


TERMINAL = frozenset({"satisfied", "failed", "upstream_failed", "expired", "canceled"})


@dataclass
class Progress:
    wants: dict[str, dict[str, Any]]
    runs_queued: int = 0
    runs_done: int = 0
    runs_failed: int = 0
    running: set[str] = field(default_factory=set)
    partitions_live: int = 0
    derived_wants: int = 0
    last_failure: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(w["status"] in TERMINAL for w in self.wants.values())

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        payload = event.get(kind, {})
        if kind == "job_run_queued":
            self.runs_queued += 1
            self.running.add(payload["job_run_id"])
        elif kind in (
            "job_run_succeeded",
            "job_run_missing_deps",
            "job_run_failed",
            "job_run_canceled",
        ):
            self.running.discard(payload["job_run_id"])
            self.runs_done += 1
            if kind == "job_run_failed":
                self.runs_failed += 1
                retry = " (will retry)" if payload.get("retry_at") else ""
                self.last_failure = (
                    f"run {payload['job_run_id']} failed{retry}: {payload['message']}"
                )
                self.lines.append(self.last_failure)
        elif kind == "partition_live":
            self.partitions_live += 1
        elif kind == "want_created" and payload["want"]["source"] == "derived":
            self.derived_wants += 1
        want_id = payload.get("want_id")
        if want_id in self.wants:
            status = {
                "want_satisfied": "satisfied",
                "want_failed": "upstream_failed"
                if payload.get("reason") == "upstream_failed"
                else "failed",
                "want_expired": "expired",
                "want_canceled": "canceled",
                "want_reopened": "pending",
            }.get(kind)
            if status:
                self.wants[want_id]["status"] = status
                if kind in ("want_failed", "want_canceled"):
                    self.wants[want_id]["message"] = payload.get("message") or payload.get(
                        "reason", ""
                    )

    def summary(self) -> str:
        satisfied = sum(1 for w in self.wants.values() if w["status"] == "satisfied")
        return (
            f"{satisfied}/{len(self.wants)} wanted partitions ready · {self.partitions_live} partitions built · "
            f"{self.runs_done} runs done, {len(self.running)} running, {self.runs_failed} failed · "
            f"{self.derived_wants} dependencies discovered"
        )


def _render(progress: Progress) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_row(Spinner("dots"), escape(progress.summary()))
    if progress.last_failure:
        grid.add_row("", f"[yellow]{escape(progress.last_failure[:200])}[/yellow]")
    return grid


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C while a build was followed: the progress so far says what was in flight."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


def follow_build(api: BuildApi, body: dict[str, Any], *, quiet: bool) -> Progress:
    start = api.last_sequence()
    created = api.create_wants(body)
    print_notices(created)
    progress = Progress({w["want_id"]: w for w in created["wants"]})
    try:
        return _follow(api, progress, start, quiet=quiet)
    except KeyboardInterrupt:
        raise BuildInterrupted(progress) from None


def _follow(api: BuildApi, progress: Progress, start: int, *, quiet: bool) -> Progress:
    after = start
    live = (
        Live(_render(progress), console=console, transient=True, refresh_per_second=8)
        if (console.is_terminal and not quiet)
        else None
    )
    if live is not None:
        live.start()
    try:
        while not progress.done:
            page = api.events(after)
            for event in page["events"]:
                progress.apply(event)
            after = int(page["last_sequence"])
            if live is not None:
                live.update(_render(progress))
            elif not quiet:
                for line in progress.lines:
                    console.print(escape(line))
            progress.lines.clear()
    finally:
        if live is not None:
            live.stop()
    # the final word on each want comes from the service, not from the stream
    for want_id in progress.wants:
        progress.wants[want_id] = api.want(want_id)
    return progress


def print_notices(created: dict[str, Any]) -> None:
    """One warning line per re-ask that differs from the want it found (stderr)."""
    for notice in created.get("notices", []):
        err_console.print(f"[yellow]warning:[/yellow] {escape(notice['message'])}")


def print_outcome(progress: Progress) -> None:
    console.print(escape(progress.summary()))
    for w in progress.wants.values():
        line = f"{styled(w['status'])}  {escape(w['partition_ref'])}"
        if w["status"] != "satisfied" and w.get("message"):
            line += f"  [dim]{escape(w['message'])}[/dim]"
        console.print(line)
