"""The wheel, installed into a fresh virtual environment without the ``postgres`` extra.

``python -m build --wheel`` on a copy of the source tree; a new venv; ``pip install`` of
the wheel with its dependencies (from the configured index or mirror); then, with nothing of
this checkout on the path: ``databuild --version`` and ``python -m databuild``, ``databuild
init`` and a build of the calendar example on SQLite, ``import psycopg`` failing, and a
PostgreSQL URL giving the one line that names the extra. The wheel's metadata is checked
too: one version, the license file, psycopg only under the extra.

Slow (a build and a pip install: tens of seconds); every step has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import databuild

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("src", "pyproject.toml", "README.md", "LICENSE")
BUILD_SECONDS = 300
INSTALL_SECONDS = 600
COMMAND_SECONDS = 120
MISSING_EXTRA = (
    "error: the PostgreSQL Build Event Log needs the postgres extra (psycopg), which is not "
    "installed: pip install 'databuild[postgres]'"
)


def _run(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source,
                tree / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".mypy_cache"),
            )
        else:
            shutil.copy2(source, tree / name)
    out = tmp_path_factory.mktemp("dist")
    done = _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(tree)],
        BUILD_SECONDS,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = out.glob("databuild-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a fresh venv holding only the wheel and its dependencies."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    bin_dir = env_dir / "bin"
    # Nothing of this checkout may be visible (PYTHONPATH=src would make pip see databuild as
    # installed already, and the CLI would import the checkout instead of the wheel).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DATABUILD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    done = _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        INSTALL_SECONDS,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listed = _run([str(bin_dir / "python"), "-m", "pip", "list"], COMMAND_SECONDS, env=env)
    assert f"databuild {databuild.__version__}".split() in [
        line.split() for line in listed.stdout.splitlines()
    ], listed.stdout
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"  # jobs run its python
    env["VIRTUAL_ENV"] = str(env_dir)
    env["CALENDAR_DAYS"] = "8"
    env["CALENDAR_START"] = "2024-01-01"
    return env


def test_the_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        licence = archive.read(info.replace("METADATA", "licenses/LICENSE")).decode()
    assert metadata["Version"] == databuild.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert metadata.get_all("Classifier") and metadata.get_all("Project-URL")
    psycopg = [r for r in metadata.get_all("Requires-Dist") or [] if r.startswith("psycopg")]
    assert psycopg and all('extra == "postgres"' in r for r in psycopg), psycopg
    assert "databuild/py.typed" in names
    assert "databuild/cli/scaffold/calendar/databuild.toml" in names
    assert any(n.startswith("databuild/log/migrations/sqlite/") for n in names)
    # the dashboard's templates and vendored assets (with the license) ship in the wheel
    for asset in ("templates/base.html", "static/htmx.min.js", "static/htmx.LICENSE"):
        assert f"databuild/service/dashboard/{asset}" in names, asset
    assert any(r.startswith("jinja2") for r in metadata.get_all("Requires-Dist") or [])


def test_the_installed_cli_runs_without_this_checkout(
    installed: dict[str, str], tmp_path: Path
) -> None:
    here = installed["VIRTUAL_ENV"]
    for argv in (
        [f"{here}/bin/databuild", "--version"],
        ["python", "-m", "databuild", "--version"],
    ):
        done = _run(argv, COMMAND_SECONDS, env=installed, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"databuild, version {databuild.__version__}"
    where = _run(
        ["python", "-c", "import databuild; print(databuild.__file__)"],
        COMMAND_SECONDS,
        env=installed,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(installed["VIRTUAL_ENV"]), where.stdout
    schema = _run(["databuild", "config", "schema"], COMMAND_SECONDS, env=installed, cwd=tmp_path)
    assert schema.stdout == (REPO / "schema" / "databuild.schema.json").read_text()


def test_init_and_build_on_sqlite_without_psycopg(
    installed: dict[str, str], tmp_path: Path
) -> None:
    no_driver = _run(["python", "-c", "import psycopg"], COMMAND_SECONDS, env=installed)
    assert no_driver.returncode != 0 and "No module named 'psycopg'" in no_driver.stderr

    init = _run(["databuild", "init", "graph"], COMMAND_SECONDS, env=installed, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    graph = tmp_path / "graph"
    built = _run(
        ["databuild", "--json", "build", "summary/all"],
        COMMAND_SECONDS,
        env=installed,
        cwd=graph,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    result = json.loads(built.stdout)
    assert result["ok"] is True and [w["status"] for w in result["wants"]] == ["satisfied"]
    assert json.loads((graph / "data" / "summary" / "all.json").read_text())["days"] == 8
    assert (graph / ".databuild" / "bel.sqlite").exists()

    config = graph / "databuild.toml"
    config.write_text(
        config.read_text() + '\n[storage]\nurl = "postgresql://postgres@127.0.0.1:5432/test"\n'
    )
    for argv in (["databuild", "want", "list"], ["databuild", "build", "summary/all"]):
        done = _run(argv, COMMAND_SECONDS, env=installed, cwd=graph)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [MISSING_EXTRA]
