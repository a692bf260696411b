"""Invalid databuild.toml files fail at load with one line naming the file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from databuild.config import load_config
from databuild.core.errors import ConfigError

from .config_helpers import MINIMAL, load_error, write_config

JOB = MINIMAL  # ends inside [jobs.ingest], so appended lines are job keys
WITH_CLEAN = MINIMAL + '\n[jobs.clean]\noutputs = ["daily/date={date}"]\ncommand = ["clean"]\n'


def schedule(**keys: str) -> str:
    table = {"cron": '"0 6 * * *"', "partition": '"raw/date={date}"', **keys}
    return MINIMAL + "\n[schedules.nightly]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())


# (file text, the dotted key the error must name, words the problem must contain)
CASES: list[tuple[str, str, str, list[str]]] = [
    (
        "missing [graph]",
        MINIMAL.replace('[graph]\nname = "demo"\n', ""),
        "graph",
        ["required table [graph] is missing"],
    ),
    ("missing graph name", MINIMAL.replace('name = "demo"', ""), "graph.name", ["missing"]),
    (
        "graph name not simple",
        MINIMAL.replace('"demo"', '"my graph"'),
        "graph.name",
        ["'my graph' is not a simple name"],
    ),
    (
        "no jobs",
        '[graph]\nname = "demo"\n',
        "jobs",
        ["at least one [jobs.<name>] table is required"],
    ),
    (
        "empty jobs table",
        '[graph]\nname = "demo"\n[jobs]\n',
        "jobs",
        ["at least one [jobs.<name>] table is required"],
    ),
    (
        "bad job name",
        MINIMAL.replace("[jobs.ingest]", '[jobs."in gest"]'),
        'jobs."in gest"',
        ["not a simple name"],
    ),
    (
        "bad duration",
        JOB + 'timeout = "10 minutes"\n',
        "jobs.ingest.timeout",
        ["'10 minutes' is not a duration", '"90s"', '"1h30m"'],
    ),
    ("zero timeout", JOB + "timeout = 0\n", "jobs.ingest.timeout", ["greater than 0"]),
    ("duration as bool", JOB + "timeout = true\n", "jobs.ingest.timeout", ["not a duration"]),
    ("infinite duration", JOB + "timeout = inf\n", "jobs.ingest.timeout", ["finite"]),
    (
        "command as string",
        MINIMAL.replace('["python", "jobs/ingest.py"]', '"python jobs/ingest.py"'),
        "jobs.ingest.command",
        ["must be a list of strings", "never go through a shell"],
    ),
    (
        "empty command",
        MINIMAL.replace('["python", "jobs/ingest.py"]', "[]"),
        "jobs.ingest.command",
        ["must not be empty"],
    ),
    (
        "empty program",
        MINIMAL.replace('["python", "jobs/ingest.py"]', '["", "x"]'),
        "jobs.ingest.command",
        ["the program to run", "must not be empty"],
    ),
    (
        "command argument not a string",
        MINIMAL.replace('["python", "jobs/ingest.py"]', '["python", 3]'),
        "jobs.ingest.command[1]",
        ["must be a string, not the number 3"],
    ),
    (
        "missing command",
        MINIMAL.replace('command = ["python", "jobs/ingest.py"]\n', ""),
        "jobs.ingest.command",
        ["required key is missing"],
    ),
    ("negative retries", JOB + "retries = -1\n", "jobs.ingest.retries", ["at least 0, not -1"]),
    (
        "retries as string",
        JOB + 'retries = "2"\n',
        "jobs.ingest.retries",
        ["must be an integer, not the string '2'"],
    ),
    ("fractional max_batch", JOB + "max_batch = 1.5\n", "jobs.ingest.max_batch", ["integer"]),
    ("zero concurrency", JOB + "concurrency = 0\n", "jobs.ingest.concurrency", ["at least 1"]),
    (
        "backoff max below backoff",
        JOB + 'retry_backoff = "10m"\n',
        "jobs.ingest.retry_backoff_max",
        ["at least retry_backoff (600s)", "(the default)"],
    ),
    (
        "unknown job key",
        JOB + "timeout_seconds = 5\n",
        "jobs.ingest.timeout_seconds",
        ["unknown key 'timeout_seconds'", "did you mean 'timeout'", "command, concurrency, env"],
    ),
    (
        "unknown top-level table",
        MINIMAL + "\n[job.other]\nx = 1\n",
        "job",
        ["unknown key 'job'", "did you mean 'jobs'", "alerts, executor, externals, graph, jobs"],
    ),
    (
        "unknown storage key",
        MINIMAL + "\n[storage]\npath = 'x'\n",
        "storage.path",
        ["unknown key 'path'", "state_dir, url, url_env"],
    ),
    (
        "env value not a string",
        JOB + "env = { PORT = 8080 }\n",
        "jobs.ingest.env.PORT",
        ["must be a string, not the number 8080"],
    ),
    (
        "env name invalid",
        JOB + 'env = { "MY-VAR" = "x" }\n',
        "jobs.ingest.env.MY-VAR",
        ["not an environment variable name"],
    ),
    (
        "env reference unset",
        JOB + 'env = { X = "${DATABUILD_TEST_UNSET}" }\n',
        "jobs.ingest.env.X",
        ["${DATABUILD_TEST_UNSET}", "not set", "${DATABUILD_TEST_UNSET:-value}"],
    ),
    (
        "env reference malformed",
        JOB + 'env = { X = "${not valid}" }\n',
        "jobs.ingest.env.X",
        ["not a valid reference"],
    ),
    (
        "pattern field twice",
        MINIMAL.replace('"raw/date={date}"', '"raw/{a}/{a}"'),
        "jobs.ingest.outputs[0]",
        ["names field {a} twice"],
    ),
    (
        "pattern unmatched brace",
        MINIMAL.replace('"raw/date={date}"', '"raw/date={date"'),
        "jobs.ingest.outputs[0]",
        ["is not closed"],
    ),
    (
        "pattern bad regex",
        MINIMAL.replace('"raw/date={date}"', '"raw/{date:[0-9}"'),
        "jobs.ingest.outputs[0]",
        ["bad regex"],
    ),
    (
        "no outputs",
        MINIMAL.replace('["raw/date={date}"]', "[]"),
        "jobs.ingest.outputs",
        ["must not be empty"],
    ),
    (
        "duplicate output across jobs",
        WITH_CLEAN.replace('"daily/date={date}"', '"raw/date={date}"'),
        "jobs.clean.outputs[0]",
        ["'raw/date={date}' is also declared by job 'ingest'"],
    ),
    (
        "duplicate output within a job",
        MINIMAL.replace('["raw/date={date}"]', '["raw/date={date}", "raw/date={date}"]'),
        "jobs.ingest.outputs[1]",
        ["listed twice"],
    ),
    (
        "upstream claims a job output",
        MINIMAL + '\n[upstreams.up]\nurl = "http://up:8080"\npartitions = ["raw/date={date}"]\n',
        "upstreams.up.partitions[0]",
        ["also declared by job 'ingest'"],
    ),
    (
        "upstream url not http",
        MINIMAL + '\n[upstreams.up]\nurl = "ftp://up"\npartitions = ["up/all"]\n',
        "upstreams.up.url",
        ["'ftp://up' is not an http:// or https:// URL"],
    ),
    (
        "upstream without partitions",
        MINIMAL + '\n[upstreams.up]\nurl = "http://up"\n',
        "upstreams.up.partitions",
        ["required key is missing"],
    ),
    ("bad cron", schedule(cron='"61 * * * *"'), "schedules.nightly.cron", ["not a valid cron"]),
    (
        "bad timezone",
        schedule(timezone='"Mars/Olympus"'),
        "schedules.nightly.timezone",
        ["'Mars/Olympus' is not a known IANA time zone"],
    ),
    (
        "schedule pattern field it cannot fill",
        schedule(partition='"raw/region={region}"'),
        "schedules.nightly.partition",
        ["{region}", "{date}"],
    ),
    (
        "schedule partition nobody builds",
        schedule(partition='"other/date={date}"'),
        "schedules.nightly.partition",
        ["'other/date=2024-01-01'", "no job builds"],
    ),
    (
        "schedule data date",
        schedule(data_date='"tomorrow"'),
        "schedules.nightly.data_date",
        ["'tomorrow' is not a data date", '"yesterday" or "today"'],
    ),
    (
        "schedule sla in fractions of a second",
        schedule(sla='"1.5s"'),
        "schedules.nightly.sla",
        ["whole number of seconds"],
    ),
    (
        "schedule without cron",
        MINIMAL + '\n[schedules.x]\npartition = "raw/date={date}"\n',
        "schedules.x.cron",
        ["required key is missing"],
    ),
    (
        "unknown executor",
        MINIMAL + '\n[executor]\nkind = "kubernetes"\n',
        "executor.kind",
        ["unknown executor kind 'kubernetes'", "supported kinds are: local, ray"],
    ),
    (
        "address without ray",
        MINIMAL + '\n[executor]\naddress = "auto"\n',
        "executor.address",
        ["it needs kind = \"ray\", not 'local'"],
    ),
    (
        "a resource ray reserves",
        MINIMAL + "\n[jobs.ingest.resources]\ncustom = { CPU = 2 }\n",
        "jobs.ingest.resources.custom.CPU",
        ["'CPU' is not a custom resource", "set num_cpus"],
    ),
    (
        "negative cpus",
        MINIMAL + "\n[jobs.ingest.resources]\nnum_cpus = -1\n",
        "jobs.ingest.resources.num_cpus",
        ["must be at least 0.0, not -1"],
    ),
    (
        "zero max_parallel",
        MINIMAL + "\n[executor]\nmax_parallel = 0\n",
        "executor.max_parallel",
        ["at least 1"],
    ),
    (
        "port out of range",
        MINIMAL + "\n[service]\nport = 70000\n",
        "service.port",
        ["at most 65535"],
    ),
    (
        "token_env not a name",
        MINIMAL + '\n[service]\ntoken_env = "$TOKEN"\n',
        "service.token_env",
        ["not an environment variable name"],
    ),
    (
        "webhook not a url",
        MINIMAL + '\n[alerts]\nwebhooks = ["hooks.example.com"]\n',
        "alerts.webhooks[0]",
        ["not an http:// or https:// URL"],
    ),
    (
        "storage url and url_env",
        MINIMAL + '\n[storage]\nurl = "sqlite:///x"\nurl_env = "X"\n',
        "storage.url_env",
        ["either url or url_env, not both"],
    ),
    (
        "storage url_env unset",
        MINIMAL + '\n[storage]\nurl_env = "DATABUILD_TEST_UNSET"\n',
        "storage.url_env",
        ["DATABUILD_TEST_UNSET is not set"],
    ),
    (
        "storage url without a file",
        MINIMAL + '\n[storage]\nurl = "sqlite:///"\n',
        "storage.url",
        ["names no SQLite file"],
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_invalid_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, words: list[str]
) -> None:
    error = load_error(tmp_path, text)

    assert error.path == str(tmp_path / "databuild.toml")
    assert error.key == key
    assert str(error).startswith(f"{tmp_path / 'databuild.toml'}: {key}: ")
    for word in words:
        assert word in error.problem
    assert "\n" not in str(error)
    for jargon in ("pydantic", "Input should", "errors.pydantic.dev", "Value error"):
        assert jargon not in str(error)


def test_unsupported_storage_url_does_not_echo_a_password(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + '\n[storage]\nurl = "mysql://root:hunter2@db/bel"\n')

    assert error.key == "storage.url"
    assert "a mysql:// URL" in error.problem
    assert "postgresql://" in error.problem
    assert "hunter2" not in str(error)


def test_several_problems_are_listed_after_the_first(tmp_path: Path) -> None:
    error = load_error(tmp_path, JOB + "retries = -1\nmax_batch = 0\ntimeout = 'soon'\n")

    assert error.key == "jobs.ingest.max_batch"
    assert "also wrong: jobs.ingest.timeout, jobs.ingest.retries" in error.problem


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[graph]\nname = "demo"\nretries 3\n')

    assert error.key == ""
    assert error.problem.startswith("is not valid TOML: line 3, column 9: ")


def test_duplicate_toml_table_names_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + '\n[jobs.ingest]\ncommand = ["again"]\n')

    assert error.key == ""
    assert "is not valid TOML: line 8" in error.problem


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_bytes(b'[graph]\nname = "\xff"\n')

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_error_from(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_error_from(tmp_path / "databuild.toml")


def load_error_from(path: Path) -> None:
    load_config(path, environ={})
