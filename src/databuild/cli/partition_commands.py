"""``databuild partition ...``: commands that change one partition's standing.

``partition live REF...`` declares external partitions live (``POST /api/v1/partitions/live``):
the wants waiting on them go on. ``partition invalidate REF... [--downstream]`` (or ``--job
NAME --older-than-version``) makes live partitions that turned out wrong absent again
(``POST /api/v1/partitions/invalidate``); their wants are reopened and rebuilt. Argument parsing and output only; the service decides.
"""

from __future__ import annotations

import getpass
import socket
from contextlib import AbstractContextManager
from typing import Protocol

import click

from databuild.cli import output
from databuild.cli.client import Client
from databuild.core.refs import parse_ref


class _Context(Protocol):
    """What these commands need of the CLI's context object (``main.Context``)."""

    as_json: bool

    def service(self, *, write: bool) -> AbstractContextManager[Client]: ...


@click.group()
def partition() -> None:
    """Change a partition's standing (declare an external one live)."""


@partition.command("live")
@click.argument("refs", nargs=-1, required=True)
def partition_live(refs: tuple[str, ...]) -> None:
    """Declare external partitions live (idempotent); the wants waiting on them go on."""
    ctx: _Context = click.get_current_context().find_root().obj
    for raw in refs:
        parse_ref(raw)
    with ctx.service(write=True) as client:
        answer = client.post("/api/v1/partitions/live", {"partition_refs": list(refs)})
    if ctx.as_json:
        output.print_json(answer)
    else:
        output.console.print(output.partitions_table(answer["partitions"]))


def _actor() -> str:
    """Who asks, as recorded in the event log: user@host (cli)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (cli)"


@partition.command("invalidate")
@click.argument("refs", nargs=-1)
@click.option(
    "--downstream", is_flag=True, help="also every live partition built from them (transitively)"
)
@click.option("--job", default="", help="the live partitions of this job ...")
@click.option(
    "--older-than-version",
    is_flag=True,
    help="... built by another version than the job declares now (with --job)",
)
@click.option("--reason", default="", help="why (recorded in the event log)")
def partition_invalidate(
    refs: tuple[str, ...], downstream: bool, job: str, older_than_version: bool, reason: str
) -> None:
    """Make live partitions that turned out wrong absent: rebuilt when wanted (their
    client wants are reopened and rebuilt now). Their files stay until rebuilt."""
    ctx: _Context = click.get_current_context().find_root().obj
    if job and not older_than_version:
        raise click.UsageError("--job needs --older-than-version (the only selection by job)")
    if older_than_version and not job:
        raise click.UsageError("--older-than-version needs --job NAME")
    if job and (refs or downstream):
        raise click.UsageError("give partition refs or --job, not both")
    if not job and not refs:
        raise click.UsageError(
            "give the partition refs to invalidate (or --job NAME --older-than-version)"
        )
    for raw in refs:
        parse_ref(raw)
    body = {
        "partition_refs": list(refs),
        "downstream": downstream,
        "job": job,
        "reason": reason,
        "requested_by": _actor(),
    }
    with ctx.service(write=True) as client:
        answer = client.post("/api/v1/partitions/invalidate", body)
    if ctx.as_json:
        output.print_json(answer)
        return
    parts = answer["partitions"]
    if not parts:
        output.console.print("nothing to invalidate")
        return
    output.console.print(output.partitions_table(parts))
    reopened = answer["reopened_want_ids"]
    output.console.print(
        f"{len(parts)} partition(s) invalidated; {len(reopened)} want(s) reopened and rebuilding"
        if reopened
        else f"{len(parts)} partition(s) invalidated; rebuilt when wanted again"
    )
