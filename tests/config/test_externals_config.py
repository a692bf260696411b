"""[externals.NAME] in databuild.toml: loaded into the graph's ExternalSpecs; bad input is
a ConfigError naming the file and the key."""

from __future__ import annotations

from pathlib import Path

from databuild.core.refs import PartitionRef

from .config_helpers import MINIMAL, load_error, load_text

EXTERNAL = (
    MINIMAL
    + """
[externals.vendor]
partitions = ["vendor/date={date}"]
check = ["python", "checks/vendor.py"]
check_interval = "30s"
check_interval_max = "10m"
check_timeout = "5s"
"""
)


def test_an_external_is_loaded_and_routes_its_partitions(tmp_path: Path) -> None:
    config = load_text(tmp_path, EXTERNAL)
    (external,) = config.externals
    assert external.name == "vendor"
    assert external.check == ("python", "checks/vendor.py")
    assert external.check_interval_seconds == 30.0
    assert external.check_interval_max_seconds == 600.0
    assert external.check_timeout_seconds == 5.0
    route = config.graph.route(PartitionRef("vendor/date=2024-01-01"))
    assert route.external is external
    assert not route.problem and route.job is None


def test_an_external_without_check_has_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + '[externals.drop]\npartitions = ["drop/{name}"]\n')
    (external,) = config.externals
    assert external.check == ()
    assert external.check_interval_seconds == 60.0


def test_an_external_overlapping_a_job_output_is_refused(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, MINIMAL + '[externals.vendor]\npartitions = ["raw/date=2024-{rest}"]\n'
    )
    assert error.key == "externals.vendor.partitions[0]"
    assert "overlaps 'raw/date={date}' of job 'ingest'" in error.problem
    assert str(error).startswith(str(tmp_path / "databuild.toml"))


def test_an_external_with_the_same_pattern_as_an_upstream_is_refused(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '[upstreams.other]\nurl = "http://127.0.0.1:1"\npartitions = ["x/{a}"]\n'
        + '[externals.vendor]\npartitions = ["x/{a}"]\n'
    )
    error = load_error(tmp_path, text)
    assert error.key == "externals.vendor.partitions[0]"
    assert "also declared by upstream 'other'" in error.problem


def test_an_external_needs_partitions(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "[externals.vendor]\npartitions = []\n")
    assert error.key == "externals.vendor.partitions"


def test_a_check_command_must_be_a_list(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        MINIMAL + '[externals.vendor]\npartitions = ["v/{d}"]\ncheck = "ls -l"\n',
    )
    assert error.key == "externals.vendor.check"
    assert "not one string" in error.problem


def test_a_back_off_cap_below_the_interval_is_refused(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        MINIMAL
        + '[externals.vendor]\npartitions = ["v/{d}"]\ncheck = ["true"]\n'
        + 'check_interval = "10m"\ncheck_interval_max = "1m"\n',
    )
    assert error.key == "externals.vendor.check_interval_max"
    assert "at least check_interval (600s)" in error.problem


def test_check_settings_without_a_check_are_refused(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, MINIMAL + '[externals.vendor]\npartitions = ["v/{d}"]\ncheck_timeout = "1s"\n'
    )
    assert error.key == "externals.vendor.check_timeout"
    assert "has none" in error.problem


def test_an_unknown_key_in_an_external_is_refused(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, MINIMAL + '[externals.vendor]\npartitions = ["v/{d}"]\nchek = ["true"]\n'
    )
    assert error.key.startswith("externals.vendor")


def test_a_job_version_is_loaded(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + 'version = "2024.06-b"\n')
    assert config.graph.job("ingest").version == "2024.06-b"
    assert load_text(tmp_path, MINIMAL).graph.job("ingest").version == ""


def test_a_bad_job_version_names_the_key(tmp_path: Path) -> None:
    for bad in ('""', '" 1"', "3"):
        error = load_error(tmp_path, MINIMAL + f"version = {bad}\n")
        assert error.key == "jobs.ingest.version", bad
