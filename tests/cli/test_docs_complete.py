"""Every command and option of ``databuild`` is documented in docs/cli.md."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from databuild.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def _names(group: click.Command = cli, name: str = "databuild") -> list[tuple[str, list[str]]]:
    """(the full command name, its options) for the group and every command under it."""
    options = [p.opts[-1] for p in group.params if isinstance(p, click.Option)]
    out = [(name, options)]
    if isinstance(group, click.Group):
        for sub_name, command in sorted(group.commands.items()):
            out.extend(_names(command, f"{name} {sub_name}"))
    return out


def test_there_are_commands_to_check() -> None:
    assert "databuild want create" in [name for name, _ in _names()]


@pytest.mark.parametrize(("command", "options"), _names(), ids=[n for n, _ in _names()])
def test_command_and_options_are_documented(command: str, options: list[str]) -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    assert f"`{command}" in text, f"{command} is not documented in docs/cli.md"
    for option in options:
        if option == "--help":
            continue
        assert f"`{option}" in text, f"{command} {option} is not documented in docs/cli.md"
