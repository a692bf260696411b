"""``databuild config schema`` and the committed ``schema/databuild.schema.json``.

The committed schema must equal what the models give (CI catches drift), the command must
print exactly that, and the schema must accept every ``databuild.toml`` the project ships
(examples, the ``init`` scaffold, docs/config.md's complete example) and reject what the
loader rejects for shape (unknown keys, a command as one string, a bad job name).
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from databuild.cli.config_commands import schema_text
from databuild.config.file_schema import GraphFile

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "schema" / "databuild.schema.json"
SHIPPED = [
    REPO / "examples" / "calendar" / "databuild.toml",
    REPO / "src" / "databuild" / "cli" / "scaffold" / "calendar" / "databuild.toml",
]


def _validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(COMMITTED.read_text()))


def test_committed_schema_is_the_models_schema() -> None:
    assert COMMITTED.read_text() == schema_text(), (
        "schema/databuild.schema.json is stale: "
        "databuild config schema > schema/databuild.schema.json"
    )


def test_schema_describes_every_top_level_table() -> None:
    schema = json.loads(COMMITTED.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(GraphFile.model_fields)
    assert schema["required"] == ["graph", "jobs"]


def test_the_command_prints_the_committed_schema(databuild_bin: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(databuild_bin), "config", "schema"],
        cwd=tmp_path,  # no databuild.toml needed
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == COMMITTED.read_text()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_is_valid(path: Path) -> None:
    document = tomllib.loads(path.read_text())
    errors = [e.message for e in _validator().iter_errors(document)]
    assert errors == []


def test_the_docs_complete_example_is_valid() -> None:
    text = (REPO / "docs" / "config.md").read_text().split("## A complete example", 1)[1]
    found = re.search(r"```toml\n(.*?)```", text, re.S)
    assert found is not None
    assert [e.message for e in _validator().iter_errors(tomllib.loads(found.group(1)))] == []


BAD_SHAPES = [
    ({"graph": {"name": "g"}, "jobs": {"a": {"outputs": ["x/{y}"], "command": "python a.py"}}}),
    (
        {
            "graph": {"name": "g"},
            "jobs": {"a": {"outputs": ["x/{y}"], "command": ["a"], "timout": 1}},
        }
    ),
    ({"graph": {"name": "g"}, "jobs": {"bad name": {"outputs": ["x/{y}"], "command": ["a"]}}}),
    ({"graph": {"name": "g"}, "jobs": {}}),
    ({"graph": {"name": "g"}, "jobs": {"a": {"outputs": ["x"], "command": ["a"]}}, "storag": {}}),
    ({"graph": {"name": "g"}, "jobs": {"a": {"outputs": ["x"], "command": ["a"], "retries": "2"}}}),
    (
        {
            "graph": {"name": "g"},
            "jobs": {"a": {"outputs": ["x"], "command": ["a"]}},
            "executor": {"kind": "k8s"},
        }
    ),
]


@pytest.mark.parametrize("document", BAD_SHAPES)
def test_the_schema_rejects_what_the_loader_rejects(document: dict[str, Any]) -> None:
    assert not _validator().is_valid(document)
    with pytest.raises(ValueError):
        GraphFile.model_validate(document)
