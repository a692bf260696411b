"""Valid databuild.toml files load into the GraphConfig they describe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from databuild.config import CONFIG_FILENAME, DataDate, find_config, load_config
from databuild.core.errors import ConfigError
from databuild.core.refs import PartitionPattern

from .config_helpers import MINIMAL, load_text, write_config


def test_minimal_file_gets_every_default(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL)

    assert config.path == tmp_path / CONFIG_FILENAME
    assert config.root_dir == tmp_path
    assert config.name == "demo"
    job = config.graph.job("ingest")
    assert job.outputs == (PartitionPattern.compile("raw/date={date}"),)
    assert job.command == ("python", "jobs/ingest.py")
    assert (job.max_batch, job.concurrency, job.retries) == (1, 1, 2)
    assert job.timeout_seconds == 3600.0
    assert (job.retry_backoff_seconds, job.retry_backoff_max_seconds) == (1.0, 300.0)
    assert job.env == ()
    assert job.expected_seconds == 0.0
    assert config.state_dir == tmp_path / ".databuild"
    assert config.runs_dir == tmp_path / ".databuild" / "runs"
    assert config.storage_url == f"sqlite:///{tmp_path}/.databuild/bel.sqlite"
    assert config.storage_url.startswith("sqlite:////")
    assert config.executor.kind == "local"
    assert config.executor.max_parallel == (os.cpu_count() or 1)
    assert (config.service.host, config.service.port) == ("127.0.0.1", 0)
    assert config.service.token_env == "DATABUILD_TOKEN"
    assert config.upstreams == ()
    assert config.schedules == ()
    assert config.alerts.webhooks == ()
    assert config.graph.route("raw/date=2024-01-01").job == job


def test_job_keys_map_onto_the_job_spec(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """\
max_batch = 64
concurrency = 4
timeout = "1h30m"
retries = 0
retry_backoff = 2
retry_backoff_max = "10m"
env = { REGION = "eu", EMPTY = "" }
expected_duration = "90s"
""",
    )
    job = config.jobs[0]
    assert (job.max_batch, job.concurrency, job.retries) == (64, 4, 0)
    assert job.timeout_seconds == 5400.0
    assert (job.retry_backoff_seconds, job.retry_backoff_max_seconds) == (2.0, 600.0)
    assert job.env == (("REGION", "eu"), ("EMPTY", ""))
    assert job.expected_seconds == 90.0


def test_env_values_expand_references_from_the_given_environment(tmp_path: Path) -> None:
    text = MINIMAL + 'env = { A = "${HOME_DIR}/x", B = "${DAYS:-365}", C = "$$5 ${DAYS:-1}" }\n'

    config = load_text(tmp_path, text, environ={"HOME_DIR": "/home/me"})
    assert config.jobs[0].env == (("A", "/home/me/x"), ("B", "365"), ("C", "$5 1"))

    overridden = load_text(tmp_path, text, environ={"HOME_DIR": "/h", "DAYS": "30"})
    assert dict(overridden.jobs[0].env)["B"] == "30"


def test_load_config_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABUILD_TEST_REGION", "us")
    path = write_config(tmp_path, MINIMAL + 'env = { REGION = "${DATABUILD_TEST_REGION}" }\n')

    assert load_config(path).jobs[0].env == (("REGION", "us"),)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ('url = "sqlite:///db/bel.sqlite"', "sqlite:///{root}/db/bel.sqlite"),
        ('url = "sqlite:////var/lib/bel.sqlite"', "sqlite:////var/lib/bel.sqlite"),
        ('url = "postgresql://db.internal/bel"', "postgresql://db.internal/bel"),
        ('state_dir = "state"', "sqlite:///{root}/state/bel.sqlite"),
    ],
)
def test_storage_urls(tmp_path: Path, storage: str, expected: str) -> None:
    config = load_text(tmp_path, MINIMAL + f"[storage]\n{storage}\n")

    assert config.storage_url == expected.format(root=tmp_path)


def test_storage_url_can_come_from_the_environment(tmp_path: Path) -> None:
    url = "postgresql://user:secret@db.internal/bel"
    config = load_text(
        tmp_path, MINIMAL + '[storage]\nurl_env = "BEL_URL"\n', environ={"BEL_URL": url}
    )

    assert config.storage_url == url
    assert "secret" not in repr(config)


def test_state_dir_is_relative_to_the_graph_root(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + '[storage]\nstate_dir = "var/../state"\n')

    assert config.state_dir == tmp_path / "state"
    assert config.runs_dir == tmp_path / "state" / "runs"


def test_executor_service_and_alerts(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """
[executor]
kind = "local"
max_parallel = 3

[service]
host = "0.0.0.0"
port = 8080
token_env = "MY_TOKEN"

[alerts]
webhooks = ["http://alerts.internal/hook", "https://example.com/x"]
""",
    )
    assert (config.executor.kind, config.executor.max_parallel) == ("local", 3)
    assert (config.service.host, config.service.port, config.service.token_env) == (
        "0.0.0.0",
        8080,
        "MY_TOKEN",
    )
    assert config.alerts.webhooks == ("http://alerts.internal/hook", "https://example.com/x")


def test_upstreams_become_upstream_specs_that_route(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """
[upstreams.customers]
url = "http://customers.internal:8080"
partitions = ["customers/date={date}", "customers/all"]
""",
    )
    (upstream,) = config.upstreams
    assert upstream.name == "customers"
    assert upstream.url == "http://customers.internal:8080"
    assert [p.template for p in upstream.partitions] == ["customers/date={date}", "customers/all"]
    assert config.graph.route("customers/all").upstream == upstream


def test_schedules_become_schedule_specs(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        MINIMAL
        + """
[schedules.morning]
cron = "0 6 * * *"
timezone = "Europe/Berlin"
partition = "raw/date={date}"
data_date = "today"
sla = "9h"
ttl = "30d"

[schedules.plain]
cron = "*/5 * * * *"
partition = "raw/date={date}"
""",
    )
    morning = config.schedule("morning")
    assert morning.cron == "0 6 * * *"
    assert morning.timezone == "Europe/Berlin"
    assert morning.partition.template == "raw/date={date}"
    assert morning.data_date is DataDate.TODAY
    assert (morning.sla_seconds, morning.ttl_seconds) == (9 * 3600, 30 * 86400)
    plain = config.schedule("plain")
    assert (plain.timezone, plain.data_date) == ("UTC", DataDate.YESTERDAY)
    assert (plain.sla_seconds, plain.ttl_seconds) == (0, 0)


def test_find_config_walks_up_from_a_directory(tmp_path: Path) -> None:
    path = write_config(tmp_path, MINIMAL)
    nested = tmp_path / "jobs" / "deep"
    nested.mkdir(parents=True)

    assert find_config(nested) == path
    assert find_config(tmp_path) == path
    assert find_config(path) == path


def test_find_config_says_clearly_when_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        find_config(tmp_path)

    assert str(tmp_path) in str(caught.value)
    assert "no databuild.toml" in caught.value.problem
    assert "databuild init" in caught.value.problem


def test_find_config_rejects_a_missing_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        find_config(tmp_path / "nowhere")
