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


def weekly(inputs: str) -> str:
    return (
        MINIMAL
        + f'\n[jobs.weekly]\noutputs = ["weekly/week={{week}}"]\ncommand = ["w"]\ninputs = {inputs}\n'
    )


def test_a_hint_names_a_set_through_an_expansion(tmp_path: Path) -> None:
    config = load_text(tmp_path, weekly('["raw/date={week|iso_week_days}"]'))
    job = config.graph.job("weekly")
    # an ISO week may span two years
    assert hints.resolve(job, PartitionRef("weekly/week=2020-W53")) == tuple(
        f"raw/date={d}"
        for d in (
            "2020-12-28",
            "2020-12-29",
            "2020-12-30",
            "2020-12-31",
            "2021-01-01",
            "2021-01-02",
            "2021-01-03",
        )
    )
    # a value the expansion does not understand skips the hint for that partition
    assert hints.resolve(job, PartitionRef("weekly/week=latest")) == ()
    assert hints.resolve(job, PartitionRef("weekly/week=2021-W53")) == ()  # no such week


def test_month_and_trailing_day_expansions(tmp_path: Path) -> None:
    text = MINIMAL + (
        '\n[jobs.monthly]\noutputs = ["monthly/month={month}"]\ncommand = ["m"]\n'
        'inputs = ["raw/date={month|month_days}"]\n'
        '\n[jobs.rolling]\noutputs = ["rolling/date={date}"]\ncommand = ["r"]\n'
        'inputs = ["raw/date={date|trailing_days:3}"]\n'
    )
    config = load_text(tmp_path, text)
    february = hints.resolve(config.graph.job("monthly"), PartitionRef("monthly/month=2024-02"))
    assert len(february) == 29 and february[-1] == "raw/date=2024-02-29"
    assert hints.resolve(config.graph.job("rolling"), PartitionRef("rolling/date=2024-03-01")) == (
        "raw/date=2024-02-28",
        "raw/date=2024-02-29",
        "raw/date=2024-03-01",
    )


def test_an_unknown_or_malformed_expansion_is_refused_naming_the_known_ones(
    tmp_path: Path,
) -> None:
    error = load_error(tmp_path, weekly('["raw/date={week|fortnight}"]'))
    assert error.key == "jobs.weekly.inputs[0]"
    text = str(error)
    assert "{week|fortnight} names no expansion" in text
    assert "iso_week_days, month_days, trailing_days" in text
    error = load_error(tmp_path, weekly('["raw/date={week|trailing_days:0}"]'))
    assert "trailing_days takes a number of days from 1 to 1000" in str(error)
    error = load_error(tmp_path, weekly('["raw/date={week|iso_week_days:2}"]'))
    assert "iso_week_days takes no argument" in str(error)
