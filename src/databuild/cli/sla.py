"""``databuild sla``: which wants missed their SLA and which are predicted to miss it.

Registered on the ``databuild`` group by ``main``. It asks the service
(``/api/v1/sla/violations`` and ``/api/v1/sla/at-risk``; a read-only view of the log when
no service runs) and prints tables, or JSON with ``--json``. Argument parsing and output
only.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import click
from rich.markup import escape
from rich.table import Table

from databuild.cli import output
from databuild.cli.client import Client
from databuild.core.data_time import format_timestamp


class _Context(Protocol):
    """What this command needs of the CLI's context object (``main.Context``)."""

    as_json: bool

    def service(self, *, write: bool) -> AbstractContextManager[Client]: ...


def _table(columns: list[str]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _late(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def violations_table(violations: list[dict[str, Any]]) -> Table:
    columns = ["WANT", "PARTITION", "STATUS", "DEADLINE", "BLAMED", "WHY (AT THE DEADLINE)", "NOW"]
    table = _table(columns)
    for v in violations:
        w = v["want"]
        now = v["current_blame"]  # follows upstream graphs into theirs
        table.add_row(
            escape(w["want_id"]),
            escape(w["partition_ref"]),
            output.styled(w["status"]),
            escape(format_timestamp(v["deadline"])),
            escape(v["blame_ref"]),
            escape(v["blame"]),
            "" if now["reason"] == "not_held" else escape(now["text"]),
        )
    return table


def at_risk_table(at_risk: list[dict[str, Any]]) -> Table:
    table = _table(["WANT", "PARTITION", "DEADLINE", "PREDICTED", "LATE BY", "BLAMED", "WHY"])
    for a in at_risk:
        w = a["want"]
        table.add_row(
            escape(w["want_id"]),
            escape(w["partition_ref"]),
            escape(format_timestamp(a["deadline"])),
            escape(format_timestamp(a["predicted_finish"])),
            _late(a["slack_seconds"]),
            escape(a["blame"]["partition_ref"]),
            escape(a["blame"]["text"]),
        )
    return table


def _params(
    prefix: str | None, source: str | None, roots_only: bool
) -> dict[str, str | int | float | list[str]]:
    params: dict[str, str | int | float | list[str]] = {}
    if prefix:
        params["prefix"] = prefix
    if source:
        params["source"] = source
    if roots_only:
        params["roots_only"] = "true"
    return params


@click.command("sla")
@click.argument("which", type=click.Choice(["all", "violations", "at-risk"]), default="all")
@click.option("--prefix", help="partition ref prefix")
@click.option(
    "--source",
    type=click.Choice(["cli", "api", "dashboard", "scheduled", "derived", "upstream_graph"]),
)
@click.option("--roots-only", is_flag=True, help="only root wants, not the wants they caused")
@click.option("--limit", type=click.IntRange(1, None), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def sla(
    which: str,
    prefix: str | None,
    source: str | None,
    roots_only: bool,
    limit: int,
    as_json: bool,
) -> None:
    """SLA violations (wants that missed their deadline, with the blame) and at-risk wants
    (predicted to miss it). WHICH: all (default), violations or at-risk."""
    ctx: _Context = click.get_current_context().find_root().obj
    params = _params(prefix, source, roots_only)
    result: dict[str, Any] = {}
    with ctx.service(write=False) as client:
        if which in ("all", "violations"):
            result["violations"] = list(
                client.pages("/api/v1/sla/violations", "violations", params, limit)
            )
        if which in ("all", "at-risk"):
            result["at_risk"] = list(client.pages("/api/v1/sla/at-risk", "at_risk", params, limit))
    if as_json or ctx.as_json:
        output.print_json(result)
        return
    if "violations" in result:
        output.console.print(f"[bold]SLA violations[/bold] ({len(result['violations'])})")
        if result["violations"]:
            output.console.print(violations_table(result["violations"]))
    if "at_risk" in result:
        output.console.print(f"[bold]at risk[/bold] ({len(result['at_risk'])})")
        if result["at_risk"]:
            output.console.print(at_risk_table(result["at_risk"]))
