"""``databuild config``: commands about the configuration file itself.

``databuild config schema`` prints the JSON schema of ``databuild.toml`` (from the pydantic
models the loader validates with, so it always matches the installed version); the same
text is committed as ``schema/databuild.schema.json`` for editors (docs/config.md).
Registered on the ``databuild`` group by ``main``. Argument parsing and output only.
"""

from __future__ import annotations

import json

import click

from databuild.config.file_schema import graph_file_json_schema


def schema_text() -> str:
    return json.dumps(graph_file_json_schema(), indent=2) + "\n"


@click.group("config")
def config() -> None:
    """About databuild.toml itself: `config schema`."""


@config.command("schema")
def config_schema() -> None:
    """Print the JSON schema of databuild.toml (for editors: docs/config.md)."""
    click.echo(schema_text(), nl=False)
