"""Docs stay true: generated sections are fresh, links resolve, the README's commands exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

from databuild.core.lifecycle import JOB_RUN_TRANSITIONS, WANT_TRANSITIONS, mermaid

REPO = Path(__file__).resolve().parents[2]


def test_lifecycle_diagrams_are_generated_from_the_tables() -> None:
    path = REPO / "docs" / "lifecycles.md"
    text = path.read_text()
    blocks = re.findall(r"```mermaid\n(.*?)\n```", text, re.S)
    expected = [mermaid(WANT_TRANSITIONS), mermaid(JOB_RUN_TRANSITIONS)]
    if os.environ.get("DATABUILD_UPDATE_DOCS") == "1" and blocks != expected:
        for old, new in zip(blocks, expected, strict=True):
            text = text.replace(old, new)
        path.write_text(text)
        blocks = expected
    assert blocks == expected, (
        "docs/lifecycles.md is stale: DATABUILD_UPDATE_DOCS=1 pytest tests/docs"
    )


def test_every_relative_link_in_the_docs_resolves() -> None:
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_set_up_commands_are_the_scripts_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    assert "scripts/example" in readme and "scripts/check" in readme
    for script in ("example", "check", "setup", "gen-proto"):
        path = REPO / "scripts" / script
        assert path.exists() and os.access(path, os.X_OK), (
            f"scripts/{script} missing or not executable"
        )
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/check" in ci
    example = (REPO / "scripts" / "example").read_text()
    assert "cd examples/calendar" in example and "build summary/all" in example
