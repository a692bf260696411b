"""``databuild partition ...``: commands that change one partition's standing.

``partition live REF...`` declares external partitions live (``POST /api/v1/partitions/live``):
the wants waiting on them go on. Argument parsing and output only; the service decides.
"""

from __future__ import annotations

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
