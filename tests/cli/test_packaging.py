"""pyproject.toml's packaging metadata stays honest: one version, a license file that is
there, package data that exists, and the PostgreSQL driver only in its extra.

The built wheel itself is checked end to end in tests/e2e/test_wheel.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import databuild

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def test_the_version_is_written_once() -> None:
    data = _project()
    assert "version" not in data["project"] and "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "databuild.__version__"}
    assert databuild.__version__.count(".") >= 2


def test_every_license_file_exists_and_is_apache_2() -> None:
    project = _project()["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        text = (REPO / name).read_text()
        assert "Apache License" in text and "Version 2.0, January 2004" in text
        assert "END OF TERMS AND CONDITIONS" in text


def test_every_package_data_pattern_matches_a_file() -> None:
    package = REPO / "src" / "databuild"
    for pattern in _project()["tool"]["setuptools"]["package-data"]["databuild"]:
        assert any(p.is_file() for p in package.glob(pattern)), f"{pattern} matches nothing"


def test_urls_and_classifiers_are_declared() -> None:
    project = _project()["project"]
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(project["urls"])
    assert "Typing :: Typed" in project["classifiers"]
    # a license expression (PEP 639) and a License :: classifier cannot both be given
    assert not any(c.startswith("License ::") for c in project["classifiers"])


def test_psycopg_is_only_in_the_postgres_extra() -> None:
    project = _project()["project"]
    assert not any(d.startswith("psycopg") for d in project["dependencies"])
    assert any(d.startswith("psycopg") for d in project["optional-dependencies"]["postgres"])
