"""The ``inputs`` key of a job (input hints): loaded into the JobSpec, refused at load time
with the file, the key and what is wrong when a hint names a field its job's output lacks or
when the hints form a cycle."""

from __future__ import annotations

from pathlib import Path

from databuild.core import hints
from databuild.core.refs import PartitionRef

from .config_helpers import MINIMAL, load_error, load_text


def clean(inputs: str, outputs: str = '["daily/date={date}"]') -> str:
    return (
        MINIMAL + f'\n[jobs.clean]\noutputs = {outputs}\ncommand = ["clean"]\ninputs = {inputs}\n'
    )


def test_inputs_load_into_the_job_and_resolve_from_the_output_fields(tmp_path: Path) -> None:
    config = load_text(tmp_path, clean('["raw/date={date}", "raw/date={date}/meta"]'))
    job = config.graph.job("clean")
    assert [p.template for p in job.inputs] == ["raw/date={date}", "raw/date={date}/meta"]
    assert config.graph.job("ingest").inputs == ()
    assert hints.resolve(job, PartitionRef("daily/date=2024-01-01")) == (
        "raw/date=2024-01-01",
        "raw/date=2024-01-01/meta",
    )


def test_a_hint_naming_a_field_the_output_lacks_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, clean('["raw/date={day}"]'))
    assert error.key == "jobs.clean.inputs[0]"
    text = str(error)
    assert str(tmp_path / "databuild.toml") in text
    assert "job 'clean'" in text and "{day}" in text and "'daily/date={date}'" in text


def test_a_hint_must_fit_every_output_pattern_of_its_job(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, clean('["raw/date={date}"]', '["daily/date={date}", "daily/latest"]')
    )
    assert error.key == "jobs.clean.inputs[0]"
    assert "'daily/latest' (jobs.clean.outputs[1]) lacks" in str(error)


def test_a_hint_that_can_match_its_own_output_is_a_cycle(tmp_path: Path) -> None:
    error = load_error(tmp_path, clean('["daily/date={date}"]'))
    assert error.key == "jobs.clean.inputs[0]"
    assert "can match its own output pattern 'daily/date={date}'" in str(error)
    assert "wait on itself" in str(error)


def test_jobs_that_hint_each_other_are_a_cycle(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'command = ["python", "jobs/ingest.py"]',
        'command = ["python", "jobs/ingest.py"]\ninputs = ["daily/date={date}"]',
    )
    error = load_error(tmp_path, text + clean('["raw/date={date}"]').removeprefix(MINIMAL))
    assert error.key == "jobs.ingest.inputs[0]"
    assert "input hints form a cycle: job 'ingest' hints 'daily/date={date}', an output of " in (
        str(error)
    )
    assert "job 'clean' hints 'raw/date={date}', an output of job 'ingest'" in str(error)


def test_a_hint_listed_twice_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, clean('["raw/date={date}", "raw/date={date}"]'))
    assert error.key == "jobs.clean.inputs[1]"
    assert "listed twice" in str(error)


def test_a_hint_that_is_not_a_pattern_is_refused(tmp_path: Path) -> None:
    error = load_error(tmp_path, clean('["raw/date={date"]'))
    assert error.key == "jobs.clean.inputs[0]"
