"""docs/config.md stays true: its complete example loads to the values it shows, and every
key the loader accepts is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from databuild.config import DataDate
from databuild.config.file_schema import GraphFile
from databuild.config.problems import table_at
from databuild.core.model import RunResources

from .config_helpers import load_text

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def complete_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## A complete example", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert found is not None, "docs/config.md has no ```toml block under 'A complete example'"
    return found.group(1)


def test_complete_example_loads_to_what_it_says(tmp_path: Path) -> None:
    url = "postgresql://databuild@db.internal/sales"
    config = load_text(tmp_path, complete_example(), environ={"DATABUILD_DB_URL": url})

    assert config.name == "sales"
    ingest = config.graph.job("ingest")
    assert [p.template for p in ingest.outputs] == ["raw/date={date}", "raw_refunds/date={date}"]
    assert ingest.command == ("python", "jobs/ingest.py", "--source", "s3://sales-bucket")
    assert (ingest.max_batch, ingest.concurrency, ingest.retries) == (32, 4, 5)
    assert ingest.timeout_seconds == 600.0
    assert (ingest.retry_backoff_seconds, ingest.retry_backoff_max_seconds) == (2.0, 600.0)
    assert ingest.env == (("SALES_REGION", "eu"), ("SALES_API_KEY", "none"), ("PRICE", "$5"))
    assert ingest.expected_seconds == 90.0
    assert ingest.version == "2024.06"
    report = config.graph.job("report")
    assert report.command == ("bin/report",)
    assert config.graph.route("report/date=2024-01-01").job == report
    assert config.graph.route("report/date=yesterday").job is None
    assert config.storage_url == url
    assert config.state_dir == tmp_path / "state"
    assert (config.executor.kind, config.executor.max_parallel) == ("ray", 8)
    assert config.executor.address == "ray://ray-head.internal:10001"
    assert ingest.resources == RunResources(2.0, 4 << 30, (("ssd", 1.0),))
    assert (config.service.host, config.service.port) == ("0.0.0.0", 8080)
    assert config.service.token_env == "SALES_DATABUILD_TOKEN"
    (customers,) = config.upstreams
    assert customers.name == "customers"
    assert customers.url == "http://customers.internal:8080"
    assert [p.template for p in customers.partitions] == ["customers/date={date}"]
    (vendor,) = config.externals
    assert vendor.name == "vendor_files"
    assert [p.template for p in vendor.partitions] == ["vendor/date={date}"]
    assert vendor.check == ("python", "checks/vendor_files.py")
    assert (vendor.check_interval_seconds, vendor.check_interval_max_seconds) == (300.0, 7200.0)
    assert vendor.check_timeout_seconds == 30.0
    morning = config.schedule("morning_report")
    assert (morning.cron, morning.timezone) == ("0 6 * * *", "Europe/Berlin")
    assert morning.partition.template == "report/date={date}"
    assert morning.data_date is DataDate.YESTERDAY
    assert (morning.sla_seconds, morning.ttl_seconds) == (33 * 3600, 30 * 86400)
    assert config.alerts.webhooks == ("https://hooks.example.com/databuild",)


def test_every_key_is_documented_and_used_in_the_example() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    example = complete_example()
    for loc, model in all_tables(()):
        for key in model.model_fields:
            if child_table((*loc, key)) is not None:
                continue  # a table, documented by its own section
            assert f"| `{key}`" in docs, f"docs/config.md does not document {key!r}"
            assert re.search(rf"^{key} = ", example, re.MULTILINE), f"example lacks {key!r}"


def child_table(loc: tuple[str, ...]) -> tuple[tuple[str, ...], type[BaseModel]] | None:
    """The table at ``loc``, or at ``loc.<name>`` for tables of named tables."""
    for candidate in (loc, (*loc, "<name>")):
        table = table_at(GraphFile, candidate)
        if table is not None:
            return candidate, table
    return None


def all_tables(loc: tuple[str, ...]) -> list[tuple[tuple[str, ...], type[BaseModel]]]:
    model = table_at(GraphFile, loc)
    assert model is not None
    found = [(loc, model)]
    for key in model.model_fields:
        child = child_table((*loc, key))
        if child is not None:
            found += all_tables(child[0])
    return found
