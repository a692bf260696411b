"""How the CLI shows things: Rich tables for people, JSON for scripts.

Called by the commands in ``main`` with API response dicts. Refs and messages are printed
as text (Rich markup is escaped), so a hostile ref cannot restyle the terminal. No I/O
beyond writing to the console it is given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from databuild.core.data_time import format_timestamp

STATUS_STYLE = {
    "satisfied": "green",
    "live": "green",
    "succeeded": "green",
    "failed": "red",
    "upstream_failed": "red",
    "expired": "yellow",
    "canceled": "dim",
    "building": "cyan",
    "running": "cyan",
    "waiting": "magenta",
    "retrying": "yellow",
    "backoff": "yellow",
    "missing_deps": "magenta",
    "interrupted": "yellow",
}

# Piped output (scripts, logs) gets wide tables instead of Rich's 80-column default.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # one line per error


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/{style}]" if style else escape(status)


def _table(columns: Sequence[str]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def wants_table(wants: Iterable[dict[str, Any]]) -> Table:
    table = _table(["WANT", "PARTITION", "STATUS", "SOURCE", "SLA", "MESSAGE"])
    for w in wants:
        sla = format_timestamp(w["sla_deadline"]) if w["sla_deadline"] else "-"
        if w.get("sla_missed"):
            sla += " (missed)"
        table.add_row(
            escape(w["want_id"]),
            escape(w["partition_ref"]),
            styled(w["status"]),
            escape(w["source"]),
            escape(sla),
            escape(w["message"] or ", ".join(w.get("waiting_on", [])[:3])),
        )
    return table


def want_detail(detail: dict[str, Any]) -> None:
    w = detail["want"]
    console.print(f"[bold]want[/bold] {escape(w['want_id'])}  {styled(w['status'])}")
    rows = [
        ("partition", w["partition_ref"]),
        ("source", w["source"]),
        ("root want", w["root_want_id"]),
        ("parent want", w["parent_want_id"] or "-"),
        ("data time", format_timestamp(w["data_timestamp"])),
        (
            "SLA deadline",
            format_timestamp(w["sla_deadline"]) + (" (missed)" if w["sla_missed"] else ""),
        ),
        ("expires", format_timestamp(w["expires_at"])),
        ("created", format_timestamp(w["created_at"])),
        ("finished", format_timestamp(w["finished_at"])),
        ("message", w["message"] or "-"),
        ("waiting on", ", ".join(w["waiting_on"]) or "-"),
    ]
    for key, value in rows:
        console.print(f"  {key:<13} {escape(str(value))}")
    if detail["timeline"]:
        console.print("[bold]timeline[/bold]")
        for event in detail["timeline"]:
            console.print(
                f"  {format_timestamp(event['timestamp'])}  #{event['sequence']}  "
                f"{escape(event['type'])}{escape(_timeline_detail(event))}"
            )
    if detail["children"]:
        console.print("[bold]child wants[/bold]")
        console.print(wants_table(detail["children"]))
    if detail["job_runs"]:
        console.print("[bold]job runs[/bold]")
        console.print(runs_table(detail["job_runs"]))


def _timeline_detail(event: dict[str, Any]) -> str:
    """What a timeline line adds to the event type: the run, and why it failed."""
    payload = event.get(event["type"], {})
    run = payload.get("job_run_id") or ""
    detail = f" {run}" if run else ""
    if event["type"] == "job_run_failed":
        retry = ", will retry" if payload.get("retry_at") else ""
        first = (payload.get("message") or "").splitlines()[:1]
        detail += f" ({payload.get('kind', '')}{retry}){': ' + first[0] if first else ''}"
    elif event["type"] in ("want_failed", "want_canceled") and (
        payload.get("message") or payload.get("reason")
    ):
        detail += f": {payload.get('message') or payload.get('reason')}"
    return detail


def partitions_table(partitions: Iterable[dict[str, Any]]) -> Table:
    table = _table(["PARTITION", "STATUS", "JOB", "RUN", "DETAIL"])
    for p in partitions:
        detail = p["message"] or (
            ("waiting on " + ", ".join(p["waiting_on"][:3])) if p["waiting_on"] else ""
        )
        if p.get("stale"):
            detail = f"stale: built by version {p['job_version'] or '(none)'}"
        table.add_row(
            escape(p["partition_ref"]),
            styled(p["status"]),
            escape(p["job_name"] or p["upstream"] or "-"),
            escape(p["job_run_id"] or "-"),
            escape(detail),
        )
    return table


def runs_table(runs: Iterable[dict[str, Any]]) -> Table:
    table = _table(["RUN", "JOB", "STATUS", "PARTITIONS", "DURATION", "MESSAGE"])
    for r in runs:
        refs = r["partition_refs"]
        shown = refs[0] + (f" (+{len(refs) - 1})" if len(refs) > 1 else "")
        duration = f"{r['duration_seconds']:.2f}s" if r["duration_seconds"] else "-"
        table.add_row(
            escape(r["job_run_id"]),
            escape(r["job_name"]),
            styled(r["status"]),
            escape(shown),
            duration,
            escape(r["message"].splitlines()[0] if r["message"] else ""),
        )
    return table


def event_line(event: dict[str, Any]) -> str:
    kind = event["type"]
    payload = event.get(kind, {})
    subject = (
        payload.get("partition_ref") or payload.get("want_id") or payload.get("job_run_id") or ""
    )
    if kind == "want_created":
        subject = payload["want"]["partition_ref"]
    return f"#{event['sequence']:<7} {format_timestamp(event['timestamp'])}  {kind:<22} {subject}"
