"""The peer: the calendar example's cold build written as Luigi tasks.

Raw(date) -> Daily(date) -> Weekly(week) -> Summary(), doing the same work as the DataBuild
example's jobs: it calls the example jobs' own pure functions (readings from a hash of the
date, cleaning, weekly and overall totals) and writes the same JSON files, fsync'd and
renamed into place, under ``--data`` (``raw/date=....json`` and so on).

Run alone (what the benchmark times, as a subprocess):
``.venv/bin/python -m bench.luigi_calendar --days 365 --workers 2 --data /tmp/x/data``.
``run_peer`` runs and measures it for ``bench.peer``. Needs ``luigi`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import luigi

from bench.common import EXAMPLE

sys.path.insert(0, str(EXAMPLE / "jobs"))
import clean as clean_job
import ingest as ingest_job
import summary as summary_job
import weekly as weekly_job

DATA_DIR = Path("data")  # set by main before luigi.build; forked workers inherit it


def _target(ref: str) -> luigi.LocalTarget:
    return luigi.LocalTarget(str(DATA_DIR / f"{ref}.json"))


def _read(target: luigi.LocalTarget) -> dict[str, Any]:
    content: dict[str, Any] = json.loads(Path(target.path).read_text(encoding="utf-8"))
    return content


class Raw(luigi.Task):
    day = luigi.DateParameter()

    def output(self) -> luigi.LocalTarget:
        return _target(f"raw/date={self.day.isoformat()}")

    def run(self) -> None:
        ingest_job.write_json(Path(self.output().path), ingest_job.synthetic_readings(self.day))


class Daily(luigi.Task):
    day = luigi.DateParameter()

    def requires(self) -> Raw:
        return Raw(self.day)

    def output(self) -> luigi.LocalTarget:
        return _target(f"daily/date={self.day.isoformat()}")

    def run(self) -> None:
        cleaned = clean_job.clean_readings(_read(self.input()))
        clean_job.write_json(Path(self.output().path), cleaned)


class Weekly(luigi.Task):
    week = luigi.Parameter()

    def requires(self) -> list[Daily]:
        return [Daily(day) for day in weekly_job.week_dates(self.week)]

    def output(self) -> luigi.LocalTarget:
        return _target(f"weekly/week={self.week}")

    def run(self) -> None:
        dailies = [_read(target) for target in self.input()]
        weekly_job.write_json(
            Path(self.output().path), weekly_job.weekly_totals(self.week, dailies)
        )


class Summary(luigi.Task):
    start = luigi.DateParameter()
    days = luigi.IntParameter()

    def requires(self) -> list[Weekly]:
        return [Weekly(week) for week in summary_job.weeks_in_range(self.start, self.days)]

    def output(self) -> luigi.LocalTarget:
        return _target("summary/all")

    def run(self) -> None:
        weeklies = [_read(target) for target in self.input()]
        totals = summary_job.summary_totals(self.start, self.days, weeklies)
        summary_job.write_json(Path(self.output().path), totals)


def main() -> int:
    global DATA_DIR
    parser = argparse.ArgumentParser(description="the calendar cold build in Luigi")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    DATA_DIR = args.data.resolve()
    start = date.fromisoformat(args.start)
    ok = luigi.build(
        [Summary(start=start, days=args.days)],
        local_scheduler=True,
        workers=args.workers,
        log_level="WARNING",
    )
    return 0 if ok else 1


def expected_partitions(days: int, start: date = date(2024, 1, 1)) -> int:
    """Partitions a full build writes: every day of every week touching the range, twice
    (raw and daily), plus the weeks and the summary."""
    weeks = summary_job.weeks_in_range(start, days)
    first = weekly_job.week_dates(weeks[0])[0]
    last = weekly_job.week_dates(weeks[-1])[-1]
    day_count = (last - first + timedelta(days=1)).days
    return 2 * day_count + len(weeks) + 1


if __name__ == "__main__":
    raise SystemExit(main())
