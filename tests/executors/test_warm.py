"""Warm Python jobs: one interpreter reused across runs, with the job protocol unchanged.

Each run sees its own argv, environment and log; exit codes, result files, timeouts and
crashes mean what they mean for a fresh process; a dead worker is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from databuild.core.errors import InvalidInput
from databuild.core.events import FailureKind
from databuild.core.model import JobSpec
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunOutcome, RunSucceeded
from databuild.executors import LocalExecutor, RunRequest
from databuild.executors.port import StatusSource
from databuild.executors.warm import WarmPool

from .harness import Runs, is_gone, run_one, wait_until_gone, warm_worker_pids

JOB = """
import os, sys, json
from databuild import sdk
mode = sys.argv[1].removeprefix("--mode=")  # a flag of the job's command, not its env:
# runs of one job with different envs would be different workers (warm.pool_key)
print("run", os.environ["DATABUILD_RUN_ID"], "argv", sys.argv[2:], "pid", os.getpid())
print("to stderr", file=sys.stderr)
if mode == "missing":
    with open(os.environ["DATABUILD_RESULT_PATH"], "w") as f:
        json.dump({"missing": {sys.argv[-1]: ["in/x"]}}, f)
elif mode == "exit3":
    sys.exit(3)
elif mode == "raise":
    raise RuntimeError("boom")
elif mode == "hang":
    import time
    time.sleep(60)
elif mode == "crash":
    os._exit(7)
"""


def warm_request(
    runs: Runs, script: Path, mode: str, *refs: str, timeout: float = 30.0
) -> RunRequest:
    base = runs.request(
        "python", str(script), f"--mode={mode}", refs=refs or ("out/a",), timeout=timeout
    )
    return dataclasses.replace(base, job=dataclasses.replace(base.job, warm=True))


def run_all(runs: Runs, requests: list[RunRequest]) -> list[RunOutcome]:
    async def scenario() -> list[RunOutcome]:
        executor = LocalExecutor(2, kill_grace_seconds=0.5)
        runs.attach(executor)
        outcomes = []
        try:
            for request in requests:  # one after another: the same warm worker serves them
                await executor.start(request)
                outcomes.append(await runs.outcome(request.job_run_id))
        finally:
            await executor.close()
        return outcomes

    return asyncio.run(scenario())


def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def pid_of(runs: Runs, request: RunRequest) -> int:
    started = runs.started(request.job_run_id)
    assert started is not None
    return started.pid


def test_runs_reuse_one_interpreter_and_keep_their_own_argv_env_and_log(
    runs: Runs, tmp_path: Path
) -> None:
    job = script(tmp_path)
    first = warm_request(runs, job, "ok", "out/a", "out/b")
    second = warm_request(runs, job, "ok", "out/c")
    outcomes = run_all(runs, [first, second])
    assert all(isinstance(o, RunSucceeded) for o in outcomes)
    assert pid_of(runs, first) == pid_of(runs, second)  # the same warm worker
    log_one = first.log_path.read_text()
    log_two = second.log_path.read_text()
    assert f"run {first.job_run_id} argv ['out/a', 'out/b']" in log_one
    assert "to stderr" in log_one
    assert second.job_run_id not in log_one
    assert f"run {second.job_run_id} argv ['out/c']" in log_two
    assert first.job_run_id not in log_two
    assert "\x1e" not in log_one + log_two  # the end marker never reaches a log


def test_a_warm_worker_runs_its_jobs_in_the_batch_scheduling_class(
    runs: Runs, tmp_path: Path
) -> None:
    job = tmp_path / "policy.py"
    job.write_text("import os\nprint('policy', os.sched_getscheduler(0))\n")
    base = runs.request("python", str(job), refs=("out/a",))
    request = dataclasses.replace(base, job=dataclasses.replace(base.job, warm=True))
    (outcome,) = run_all(runs, [request])
    assert isinstance(outcome, RunSucceeded)
    assert f"policy {os.SCHED_BATCH}" in request.log_path.read_text()


def test_exit_codes_results_and_exceptions_mean_what_they_mean_for_any_job(
    runs: Runs, tmp_path: Path
) -> None:
    job = script(tmp_path)
    missing = warm_request(runs, job, "missing", "out/a")
    exit3 = warm_request(runs, job, "exit3")
    raised = warm_request(runs, job, "raise")
    after = warm_request(runs, job, "ok")
    outcomes = run_all(runs, [missing, exit3, raised, after])
    assert isinstance(outcomes[0], RunMissingDeps)
    assert outcomes[0].missing[0].missing_refs == ("in/x",)
    assert isinstance(outcomes[1], RunFailed) and outcomes[1].kind is FailureKind.EXIT_NONZERO
    assert outcomes[1].exit_code == 3
    assert isinstance(outcomes[2], RunFailed) and outcomes[2].exit_code == 1
    assert "RuntimeError: boom" in raised.log_path.read_text()
    assert isinstance(outcomes[3], RunSucceeded)
    assert len({pid_of(runs, r) for r in (missing, exit3, raised, after)}) == 1


def test_a_crash_or_a_timeout_kills_the_worker_and_the_next_run_gets_a_new_one(
    runs: Runs, tmp_path: Path
) -> None:
    job = script(tmp_path)
    crash = warm_request(runs, job, "crash")
    hang = warm_request(runs, job, "hang", timeout=0.5)
    after = warm_request(runs, job, "ok")
    outcomes = run_all(runs, [crash, hang, after])
    assert isinstance(outcomes[0], RunFailed) and outcomes[0].exit_code == 7
    assert isinstance(outcomes[1], RunFailed) and outcomes[1].kind is FailureKind.TIMEOUT
    assert isinstance(outcomes[2], RunSucceeded)
    pids = [pid_of(runs, r) for r in (crash, hang, after)]
    assert len(set(pids)) == 3
    assert wait_until_gone(pids[0]) and wait_until_gone(pids[1])


def test_closing_the_executor_stops_idle_workers(runs: Runs, tmp_path: Path) -> None:
    request = warm_request(runs, script(tmp_path), "ok")
    run_all(runs, [request])
    assert wait_until_gone(pid_of(runs, request))
    assert is_gone(pid_of(runs, request))


def test_prepare_starts_workers_before_the_first_run_which_then_uses_one(
    runs: Runs, tmp_path: Path
) -> None:
    base = warm_request(runs, script(tmp_path), "ok")
    request = dataclasses.replace(base, job=dataclasses.replace(base.job, concurrency=3))

    async def scenario() -> tuple[set[int], RunOutcome]:
        executor = LocalExecutor(2)
        runs.attach(executor)
        try:
            executor.prepare([request.job], request.root_dir)
            for _ in range(500):  # min(concurrency 3, max_parallel 2) = 2 workers
                if len(warm_worker_pids()) == 2:
                    break
                await asyncio.sleep(0.01)
            before = warm_worker_pids()
            await executor.start(request)
            return before, await runs.outcome(request.job_run_id)
        finally:
            await executor.close()

    before, outcome = asyncio.run(scenario())
    assert len(before) == 2
    assert isinstance(outcome, RunSucceeded)
    assert pid_of(runs, request) in before
    assert all(wait_until_gone(pid) for pid in before)


def _planned_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, jobs: list[JobSpec]
) -> list[str]:
    """The jobs ``prepare`` starts a worker for, in order (no process is started)."""
    started: list[str] = []

    async def record(self: WarmPool, job: JobSpec, root_dir: Path, env: dict[str, str]) -> None:
        started.append(job.name)
        raise OSError("not started in this test")

    monkeypatch.setattr(WarmPool, "_spawn", record)

    async def scenario() -> None:
        executor = LocalExecutor(2)
        try:
            executor.prepare(jobs, tmp_path)
            for _ in range(100):
                await asyncio.sleep(0)
        finally:
            await executor.close()

    asyncio.run(scenario())
    return started


def test_prepare_starts_one_worker_per_group_first_last_declared_first(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = warm_request(runs, script(tmp_path), "ok").job
    jobs = [  # each its own environment: no two start alike
        dataclasses.replace(base, name="source", concurrency=4, env=(("J", "1"),)),
        dataclasses.replace(base, name="cold", warm=False, env=(("J", "2"),)),
        dataclasses.replace(base, name="middle", concurrency=1, env=(("J", "3"),)),
        dataclasses.replace(base, name="wanted", concurrency=2, env=(("J", "4"),)),
    ]
    # a second round for the jobs with two slots (min(concurrency, max_parallel 2)); no
    # worker for the job that is not warm
    assert _planned_starts(monkeypatch, tmp_path, jobs) == [
        "wanted",
        "middle",
        "source",
        "wanted",
        "source",
    ]


def test_jobs_that_start_alike_share_workers(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = script(tmp_path)
    first = warm_request(runs, job, "ok", "out/a")
    other = dataclasses.replace(
        warm_request(runs, job, "ok", "out/b"),
        job=dataclasses.replace(first.job, name="other"),
    )
    apart = dataclasses.replace(
        warm_request(runs, job, "ok", "out/c"),
        job=dataclasses.replace(first.job, name="apart", env=(("X", "1"),)),
    )

    async def scenario() -> list[RunOutcome]:
        executor = LocalExecutor(2, kill_grace_seconds=0.5)
        runs.attach(executor)
        outcomes = []
        try:
            for request in (first, other, apart):
                await executor.start(request)
                outcomes.append(await runs.outcome(request.job_run_id))
        finally:
            await executor.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RunSucceeded) for o in outcomes)
    # another job started alike reuses the worker; one with another environment does not
    assert pid_of(runs, first) == pid_of(runs, other)
    assert pid_of(runs, apart) != pid_of(runs, first)
    assert f"run {other.job_run_id} argv ['out/b']" in other.log_path.read_text()
    assert other.job_run_id not in first.log_path.read_text()
    # prepared: "job" and "other" (alike, one slot each) are one group of two workers,
    # "apart" its own group of one; named after the group's last declared job
    assert _planned_starts(monkeypatch, tmp_path, [first.job, other.job, apart.job]) == [
        "apart",
        "other",
        "other",
    ]


EDITABLE = """
import sys
print("seen", globals().get("SEEN"), "name", __name__, "file", __file__ == sys.argv[0])
SEEN = True
print("version VERSION")
"""


def test_each_run_gets_a_new_main_and_an_edited_script_is_read_again(
    runs: Runs, tmp_path: Path
) -> None:
    """The worker compiles a script once while it is unchanged: a run never sees the last
    run's globals, and an edit (another size, a later modification time) is picked up."""
    job = tmp_path / "job.py"
    job.write_text(EDITABLE.replace("VERSION", "1"))
    requests = [warm_request(runs, job, "ok", f"out/{n}") for n in range(3)]

    async def scenario() -> None:
        executor = LocalExecutor(1, kill_grace_seconds=0.5)
        runs.attach(executor)
        try:
            for n, request in enumerate(requests):
                if n == 2:
                    job.write_text(EDITABLE.replace("VERSION", "two"))
                await executor.start(request)
                assert isinstance(await runs.outcome(request.job_run_id), RunSucceeded)
        finally:
            await executor.close()

    asyncio.run(scenario())
    assert len({pid_of(runs, r) for r in requests}) == 1  # one worker ran all three
    logs = [r.log_path.read_text() for r in requests]
    for log in logs:
        assert "seen None name __main__ file True" in log
    assert "version 1" in logs[0] and "version 1" in logs[1]
    assert "version two" in logs[2]


ASKING = """
import sys
from databuild import sdk
try:
    print("live", sorted(sdk.live(sys.argv[1:]).items()))
except sdk.SdkError as exc:
    print("refused:", exc)
    sys.exit(4)
"""


def ask(
    runs: Runs, tmp_path: Path, source: StatusSource | None, *refs: str
) -> tuple[RunOutcome, str]:
    job = tmp_path / "ask.py"
    job.write_text(ASKING)
    base = runs.request("python", str(job), refs=refs)
    request = dataclasses.replace(base, job=dataclasses.replace(base.job, warm=True))
    outcome = run_one(runs, request, grace=0.5, status_source=source)
    return outcome, request.log_path.read_text()


def test_a_warm_job_asks_which_inputs_are_live_over_its_pipe_not_http(
    runs: Runs, tmp_path: Path
) -> None:
    """The request's graph URL points nowhere (port 9): only the pipe can answer."""
    asked: list[list[str]] = []

    def source(refs: Sequence[str]) -> dict[str, str]:
        asked.append(list(refs))
        return {"in/a": "live", "in/b": "building"}

    outcome, log = ask(runs, tmp_path, source, "in/a", "in/b", "in/c")
    assert isinstance(outcome, RunSucceeded), log
    assert "live [('in/a', True), ('in/b', False), ('in/c', False)]" in log
    assert asked == [["in/a", "in/b", "in/c"]]
    assert "\x1e" not in log  # neither the question nor the end marker reaches the log


def test_a_refused_question_is_the_jobs_sdk_error_and_no_source_means_http(
    runs: Runs, tmp_path: Path
) -> None:
    def refuse(refs: Sequence[str]) -> dict[str, str]:
        raise InvalidInput("ref[0]: 'Bad Ref' is not a partition ref")

    outcome, log = ask(runs, tmp_path, refuse, "Bad Ref")
    assert isinstance(outcome, RunFailed) and outcome.exit_code == 4, log
    assert "refused: asking the graph service which partitions are live failed" in log
    assert "is not a partition ref" in log

    outcome, log = ask(runs, tmp_path, None, "in/a")  # no source: over HTTP, to port 9
    assert isinstance(outcome, RunFailed) and outcome.exit_code == 4, log
    assert "cannot be reached" in log


LEAKY = """
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helper
print("leak", os.environ.get("LEAK"), "home", os.environ.get("HOME"), "helper", helper.VALUE)
os.environ["LEAK"] = "from the last run"
os.environ["HOME"] = "/changed/by/the/last/run"
"""


def test_a_run_never_sees_the_environment_or_graph_modules_a_previous_run_left(
    runs: Runs, tmp_path: Path
) -> None:
    """The worker changes only what differs in the environment between runs and looks only
    at the modules a run imported: what one run sets or imports is still gone for the next."""
    job = tmp_path / "leaky.py"
    job.write_text(LEAKY)
    helper = tmp_path / "helper.py"
    helper.write_text("VALUE = 'one'\n")
    requests = [warm_request(runs, job, "ok", f"out/{n}") for n in range(2)]

    async def scenario() -> None:
        executor = LocalExecutor(1, kill_grace_seconds=0.5)
        runs.attach(executor)
        try:
            for n, request in enumerate(requests):
                if n == 1:
                    helper.write_text("VALUE = 'the second'\n")
                await executor.start(request)
                assert isinstance(await runs.outcome(request.job_run_id), RunSucceeded)
        finally:
            await executor.close()

    asyncio.run(scenario())
    assert len({pid_of(runs, r) for r in requests}) == 1  # one worker ran both
    home = os.environ.get("HOME")
    first, second = (r.log_path.read_text() for r in requests)
    assert f"leak None home {home} helper one" in first
    assert f"leak None home {home} helper the second" in second
