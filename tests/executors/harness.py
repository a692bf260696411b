"""What executor tests share: requests in a temporary graph root, the reports an executor
makes, and running one request to its end. Tests call ``asyncio.run`` themselves (the
project has no async test plugin)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from databuild.core.model import JobRunId, JobSpec
from databuild.core.outcomes import (
    ExecutorReport,
    RunFinishedReport,
    RunOutcome,
    RunStartedReport,
)
from databuild.core.refs import parse_ref
from databuild.executors import Executor, LocalExecutor, RunRequest
from databuild.executors.port import StatusSource

# Only a safety net so that a broken executor fails the test instead of hanging it.
NEVER_SECONDS = 60.0


@dataclass
class Runs:
    """Builds requests in one graph root and collects what an executor reports."""

    root: Path
    reports: list[ExecutorReport] = field(default_factory=list)
    _count: int = 0

    @property
    def runs_dir(self) -> Path:
        return self.root / ".databuild" / "runs"

    def request(
        self,
        *command: str,
        refs: tuple[str, ...] = ("out/date=2024-01-01",),
        timeout: float = NEVER_SECONDS,
        env: tuple[tuple[str, str], ...] = (),
        graph_url: str = "http://127.0.0.1:9",
        root: Path | None = None,
    ) -> RunRequest:
        self._count += 1
        job = JobSpec(name="job", outputs=(), command=command, timeout_seconds=timeout, env=env)
        return RunRequest(
            job_run_id=JobRunId(f"r{self._count:08d}"),
            job=job,
            partition_refs=tuple(parse_ref(r) for r in refs),
            graph_url=graph_url,
            root_dir=root or self.root,
            runs_dir=self.runs_dir,
        )

    def attach(self, executor: Executor) -> None:
        executor.set_reporter(self.reports.append)

    def started(self, job_run_id: JobRunId) -> RunStartedReport | None:
        for report in self.reports:
            if isinstance(report, RunStartedReport) and report.job_run_id == job_run_id:
                return report
        return None

    def finished(self, job_run_id: JobRunId) -> RunOutcome | None:
        for report in self.reports:
            if isinstance(report, RunFinishedReport) and report.job_run_id == job_run_id:
                return report.outcome
        return None

    async def outcome(self, job_run_id: JobRunId) -> RunOutcome:
        deadline = time.monotonic() + NEVER_SECONDS
        while (outcome := self.finished(job_run_id)) is None:
            assert time.monotonic() < deadline, f"run {job_run_id} never finished"
            await asyncio.sleep(0.01)
        return outcome


def run_one(
    runs: Runs,
    request: RunRequest,
    *,
    grace: float = 2.0,
    log_limit: int = 1 << 20,
    status_source: StatusSource | None = None,
) -> RunOutcome:
    """Start ``request`` on a fresh LocalExecutor (answering its warm job's questions from
    ``status_source``, if given) and return its outcome."""

    async def scenario() -> RunOutcome:
        executor = LocalExecutor(4, log_limit, kill_grace_seconds=grace)
        if status_source is not None:
            executor.answer_statuses_with(status_source)
        runs.attach(executor)
        try:
            await executor.start(request)
            return await runs.outcome(request.job_run_id)
        finally:
            await executor.close()

    return asyncio.run(scenario())


def python(code: str) -> tuple[str, ...]:
    """A command running ``code`` on the service's interpreter, found as `python` on PATH."""
    return ("python", "-c", code)


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody has reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in (b"Z", b"X")


def warm_worker_pids() -> set[int]:
    """Warm workers that are children of this test process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"databuild.warm_worker" in cmdline and parent == os.getpid():
            found.add(int(entry.name))
    return found


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + NEVER_SECONDS
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
