"""The calendar example: its databuild.toml loads to the graph the README describes, and the
copy ``databuild init`` ships (the scaffold, the single source) is byte-identical to it."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

from databuild.config import DataDate, load_config
from databuild.core import hints

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "calendar"
SCAFFOLD = REPO / "src" / "databuild" / "cli" / "scaffold" / "calendar"


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and not {"data", ".databuild"} & set(path.relative_to(root).parts)
    }


def test_scaffold_and_example_are_identical() -> None:
    scaffold = files_under(SCAFFOLD)
    assert set(scaffold) == {
        ".gitignore",
        "README.md",
        "databuild.toml",
        "jobs/clean.py",
        "jobs/ingest.py",
        "jobs/summary.py",
        "jobs/weekly.py",
    }
    example = files_under(EXAMPLE)
    assert sorted(example) == sorted(scaffold), "file lists differ"
    for name, content in scaffold.items():
        assert example[name] == content, (
            f"examples/calendar/{name} differs from the scaffold; the scaffold is the source: "
            f"cp -a src/databuild/cli/scaffold/calendar/. examples/calendar/"
        )


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE / "databuild.toml", environ={})

    assert config.name == "calendar"
    assert config.root_dir == EXAMPLE
    jobs = {job.name: job for job in config.jobs}
    assert sorted(jobs) == ["clean", "ingest", "summary", "weekly"]
    assert [p.template for p in jobs["ingest"].outputs] == ["raw/date={date}"]
    assert [p.template for p in jobs["clean"].outputs] == ["daily/date={date}"]
    assert [p.template for p in jobs["weekly"].outputs] == ["weekly/week={week}"]
    assert [p.template for p in jobs["summary"].outputs] == ["summary/all"]
    assert [p.template for p in jobs["clean"].inputs] == ["raw/date={date}"]
    assert [hints.written(p) for p in jobs["weekly"].inputs] == ["daily/date={week|iso_week_days}"]
    assert jobs["ingest"].inputs == jobs["summary"].inputs == ()
    assert (jobs["ingest"].max_batch, jobs["clean"].max_batch, jobs["weekly"].max_batch) == (
        256,
        256,
        64,
    )
    for name, job in jobs.items():
        assert job.command == ("python", f"jobs/{name}.py")
        assert (EXAMPLE / job.command[1]).is_file()
    assert dict(jobs["summary"].env) == {"CALENDAR_START": "2024-01-01", "CALENDAR_DAYS": "365"}
    for ref, job_name in [
        ("raw/date=2024-01-01", "ingest"),
        ("daily/date=2024-01-01", "clean"),
        ("weekly/week=2024-W01", "weekly"),
        ("summary/all", "summary"),
    ]:
        route = config.graph.route(ref)
        assert route.job is not None and route.job.name == job_name
    daily = config.schedule("daily")
    assert daily.data_date is DataDate.YESTERDAY
    assert daily.sla_seconds == 33 * 3600
    assert config.storage_url == f"sqlite:///{EXAMPLE}/.databuild/bel.sqlite"


def test_calendar_range_can_be_overridden_from_the_environment() -> None:
    config = load_config(
        EXAMPLE / "databuild.toml", environ={"CALENDAR_DAYS": "30", "CALENDAR_START": "2023-06-01"}
    )

    summary = config.graph.job("summary")
    assert dict(summary.env) == {"CALENDAR_START": "2023-06-01", "CALENDAR_DAYS": "30"}


def test_gitignore_keeps_data_and_state_out() -> None:
    lines = (EXAMPLE / ".gitignore").read_text(encoding="utf-8").splitlines()

    assert "data/" in lines
    assert ".databuild/" in lines


def test_every_scaffold_file_is_package_data() -> None:
    """setuptools globs package-data like ``glob(recursive=True)``, where ``*`` skips dot
    files: without a ``.*`` pattern, ``databuild init`` would ship no .gitignore."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["databuild"]
    package = REPO / "src" / "databuild"
    shipped = {
        Path(found).resolve()
        for pattern in patterns
        for found in glob.glob(str(package / pattern), recursive=True)
    }
    for name in files_under(SCAFFOLD):
        assert (SCAFFOLD / name).resolve() in shipped, f"{name} is not in package-data"
