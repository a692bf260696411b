"""docs/operations.md's "What DataBuild survives and how" names, for each fault, the tests
that prove it: every one it names must exist (a renamed or deleted test fails here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION = "## What DataBuild survives and how"


def named_tests() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index(SECTION) :].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "tests/" in line]
    found: list[tuple[str, str]] = []
    for row in rows:
        path = ""
        for ref in re.findall(r"`([^`]+)`", row.rsplit(" | ", 1)[1]):
            if ref.startswith("tests/"):
                path, _, name = ref.partition("::")
            else:  # `::name`: another test in the file named just before
                name = ref.removeprefix("::")
            found.append((path, name))
    return found


def test_the_survival_table_names_only_tests_that_exist() -> None:
    named = named_tests()
    assert len(named) >= 10
    for path, name in named:
        source = (REPO / path).read_text()
        if name:
            assert f"def {name}(" in source, f"docs/operations.md names {path}::{name}"
