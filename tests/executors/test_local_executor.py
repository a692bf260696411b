"""LocalExecutor with real processes: outcomes, process groups, logs, limits, environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from databuild.core.errors import ExecutorError
from databuild.core.events import FailureKind, MissingDeps
from databuild.core.model import JobRunId
from databuild.core.outcomes import (
    RunFailed,
    RunFinishedReport,
    RunMissingDeps,
    RunOutcome,
    RunStartedReport,
    RunSucceeded,
)
from databuild.core.refs import PartitionRef
from databuild.executors import LocalExecutor

from .harness import Runs, is_gone, python, run_one, wait_until_gone

SLEEPER = ("sh", "-c", "sleep 1000")  # the refs become $0, $1...: ignored
WRITE_RESULT = "import os, sys; open(os.environ['DATABUILD_RESULT_PATH'], 'w').write(sys.argv[1])"


def failed(outcome: RunOutcome, kind: FailureKind) -> RunFailed:
    assert isinstance(outcome, RunFailed), outcome
    assert outcome.kind is kind, outcome
    return outcome


def read_pid(path: Path) -> int:
    for _ in range(500):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        subprocess.run(["sleep", "0.01"], check=True)
    raise AssertionError(f"{path} was never written")


# --- outcomes ----------------------------------------------------------------------------


def test_success_reports_started_then_finished(runs: Runs) -> None:
    request = runs.request("true")
    assert isinstance(run_one(runs, request), RunSucceeded)
    started, finished = runs.reports
    assert isinstance(started, RunStartedReport)
    assert started.job_run_id == request.job_run_id
    assert started.pid > 1
    assert isinstance(finished, RunFinishedReport)


def test_non_zero_exit_is_a_retryable_failure_with_the_log_tail(runs: Runs) -> None:
    request = runs.request("sh", "-c", "echo 'cannot parse line 7' >&2; exit 3")
    outcome = failed(run_one(runs, request), FailureKind.EXIT_NONZERO)
    assert outcome.exit_code == 3
    assert "exited with code 3" in outcome.message
    assert "cannot parse line 7" in outcome.message


def test_death_by_signal_is_named(runs: Runs) -> None:
    outcome = failed(
        run_one(runs, runs.request("sh", "-c", "kill -9 $$")), FailureKind.EXIT_NONZERO
    )
    assert outcome.exit_code == -9
    assert "SIGKILL" in outcome.message


def test_missing_deps_from_the_result_file(runs: Runs) -> None:
    result = {"missing": {"out/date=2024-01-01": ["in/date=2024-01-01"]}}
    request = runs.request(*python(WRITE_RESULT), json.dumps(result))
    # The result's own argument comes before the ref; the job reads argv[1].
    outcome = run_one(runs, request)
    assert outcome == RunMissingDeps(
        (MissingDeps(PartitionRef("out/date=2024-01-01"), (PartitionRef("in/date=2024-01-01"),)),),
        outcome.duration_seconds,
    )


def test_a_failure_the_job_classifies(runs: Runs) -> None:
    result = {"failed": {"message": "input has no header", "retryable": False}}
    code = WRITE_RESULT + "; sys.exit(1)"
    outcome = failed(
        run_one(runs, runs.request(*python(code), json.dumps(result))), FailureKind.PERMANENT
    )
    assert outcome.message == "input has no header"


def test_garbage_result_is_a_bad_result(runs: Runs) -> None:
    outcome = failed(
        run_one(runs, runs.request(*python(WRITE_RESULT), "<html>oops</html>")),
        FailureKind.BAD_RESULT,
    )
    assert "not valid JSON" in outcome.message


def test_an_oversized_result_is_a_bad_result_and_is_not_read_whole(runs: Runs) -> None:
    code = "import os; open(os.environ['DATABUILD_RESULT_PATH'], 'w').write(' ' * (8 << 20) + '{}')"
    request = runs.request(*python(code))
    outcome = failed(run_one(runs, request), FailureKind.BAD_RESULT)
    assert outcome.message.startswith(
        f"the result file {request.result_path} is {(8 << 20) + 2} bytes, "
        f"larger than the limit of {1 << 20} bytes"
    ), outcome.message


def test_a_symlinked_result_is_not_followed(runs: Runs, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"missing": {"out/date=2024-01-01": ["x/y"]}}')
    code = f"import os; os.symlink({str(secret)!r}, os.environ['DATABUILD_RESULT_PATH'])"
    outcome = failed(run_one(runs, runs.request(*python(code))), FailureKind.BAD_RESULT)
    assert "symbolic link" in outcome.message


def test_a_fifo_as_result_does_not_hang_the_executor(runs: Runs) -> None:
    code = "import os; os.mkfifo(os.environ['DATABUILD_RESULT_PATH'])"
    outcome = failed(run_one(runs, runs.request(*python(code))), FailureKind.BAD_RESULT)
    assert "not a regular file" in outcome.message


# --- spawn errors ------------------------------------------------------------------------


def test_a_command_that_does_not_exist_is_a_spawn_error(runs: Runs) -> None:
    request = runs.request("no-such-command-databuild")
    outcome = failed(run_one(runs, request), FailureKind.SPAWN_ERROR)
    assert "'no-such-command-databuild'" in outcome.message
    assert "not found" in outcome.message
    assert [type(r) for r in runs.reports] == [RunFinishedReport]
    assert "not found" in request.log_path.read_text()


def test_a_file_that_is_not_executable_is_a_spawn_error(runs: Runs) -> None:
    script = runs.root / "job.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    outcome = failed(run_one(runs, runs.request("./job.sh")), FailureKind.SPAWN_ERROR)
    assert "'./job.sh'" in outcome.message
    assert "permission denied" in outcome.message


def test_a_missing_graph_root_is_a_spawn_error(runs: Runs, tmp_path: Path) -> None:
    request = runs.request("true", root=tmp_path / "nowhere")
    outcome = failed(run_one(runs, request), FailureKind.SPAWN_ERROR)
    assert "nowhere" in outcome.message


def test_an_empty_command_is_a_spawn_error(runs: Runs) -> None:
    failed(run_one(runs, runs.request()), FailureKind.SPAWN_ERROR)


# --- timeouts and process groups ---------------------------------------------------------


def test_timeout_kills_the_whole_process_group(runs: Runs) -> None:
    script = "sleep 1000 & echo $! > grandchild.pid; sleep 1000"
    request = runs.request("sh", "-c", script, timeout=0.5)
    outcome = failed(run_one(runs, request, grace=0.5), FailureKind.TIMEOUT)
    assert "timeout of 0.5 s" in outcome.message
    assert wait_until_gone(read_pid(runs.root / "grandchild.pid"))
    assert "timed out" in request.log_path.read_text()


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(runs: Runs) -> None:
    script = "trap '' TERM; sleep 1000 & echo $! > grandchild.pid; wait"
    request = runs.request("sh", "-c", script, timeout=0.5)
    outcome = failed(run_one(runs, request, grace=0.2), FailureKind.TIMEOUT)
    assert outcome.exit_code == -9
    assert wait_until_gone(read_pid(runs.root / "grandchild.pid"))


def test_background_children_do_not_outlive_their_run(runs: Runs) -> None:
    # The background sleep keeps the output pipe open; the run must end anyway.
    request = runs.request("sh", "-c", "sleep 1000 & echo $! > bg.pid; echo done")
    assert isinstance(run_one(runs, request), RunSucceeded)
    assert wait_until_gone(read_pid(runs.root / "bg.pid"))
    assert "done" in request.log_path.read_text()


# --- logs --------------------------------------------------------------------------------


def test_the_log_keeps_head_and_tail_and_says_what_was_dropped(runs: Runs) -> None:
    code = "import sys\nfor i in range(20000): print(f'line {i:05d}')\nprint('x', file=sys.stderr)"
    request = runs.request(*python(code))
    assert isinstance(run_one(runs, request, log_limit=1000), RunSucceeded)
    log = request.log_path.read_bytes()
    everything = b"".join(f"line {i:05d}\n".encode() for i in range(20000)) + b"x\n"
    assert log.startswith(everything[:1000])
    assert log.endswith(everything[-1000:])
    dropped = len(everything) - 2000
    assert f"{dropped} bytes of output dropped".encode() in log
    assert len(log) < 2000 + 200


def test_a_short_log_is_kept_whole(runs: Runs) -> None:
    request = runs.request("sh", "-c", "echo out; echo err >&2")
    run_one(runs, request, log_limit=1000)
    assert request.log_path.read_text() == "out\nerr\n"


def test_the_log_can_be_read_while_the_job_runs(runs: Runs) -> None:
    go = runs.root / "go"
    script = f"echo 'working on it'; while [ ! -e {go} ]; do sleep 0.02; done; echo finished"
    request = runs.request("sh", "-c", script)

    async def scenario() -> tuple[str, RunOutcome]:
        executor = LocalExecutor(1)
        runs.attach(executor)
        await executor.start(request)
        while "working on it" not in (
            request.log_path.read_text() if request.log_path.exists() else ""
        ):
            await asyncio.sleep(0.02)
        seen_while_running = request.log_path.read_text()
        go.touch()
        outcome = await runs.outcome(request.job_run_id)
        await executor.close()
        return seen_while_running, outcome

    seen, outcome = asyncio.run(scenario())
    assert seen == "working on it\n"
    assert isinstance(outcome, RunSucceeded)
    assert request.log_path.read_text() == "working on it\nfinished\n"


# --- the global limit, kill and close ----------------------------------------------------


def test_the_global_limit_is_respected(runs: Runs) -> None:
    async def scenario() -> None:
        executor = LocalExecutor(2, kill_grace_seconds=0.2)
        runs.attach(executor)
        first, second, third = (runs.request(*SLEEPER) for _ in range(3))
        assert executor.free_slots() == 2
        await executor.start(first)
        await executor.start(second)
        assert executor.free_slots() == 0
        with pytest.raises(ExecutorError, match="no free slot"):
            await executor.start(third)
        await executor.kill(first.job_run_id, "make room")
        assert executor.free_slots() == 1
        await executor.start(third)
        await executor.close()

    asyncio.run(scenario())


def test_a_finished_run_frees_its_slot(runs: Runs) -> None:
    async def scenario() -> None:
        executor = LocalExecutor(1)
        runs.attach(executor)
        request = runs.request("true")
        await executor.start(request)
        await runs.outcome(request.job_run_id)
        assert executor.free_slots() == 1

    asyncio.run(scenario())


def test_kill_stops_the_group_and_reports_nothing_more(runs: Runs) -> None:
    request = runs.request("sh", "-c", "sleep 1000 & echo $! > child.pid; wait")

    async def scenario() -> None:
        executor = LocalExecutor(1, kill_grace_seconds=0.2)
        runs.attach(executor)
        await executor.start(request)
        child = await asyncio.to_thread(read_pid, runs.root / "child.pid")
        await executor.kill(request.job_run_id, "want canceled by alice")
        assert is_gone(child) or await asyncio.to_thread(wait_until_gone, child)
        assert executor.free_slots() == 1
        await executor.kill(request.job_run_id, "again")  # a no-op
        await executor.kill(JobRunId("r-unknown"), "never ran")  # a no-op

    asyncio.run(scenario())
    assert [type(r) for r in runs.reports] == [RunStartedReport]
    assert "killed: want canceled by alice" in request.log_path.read_text()


def test_close_kills_every_run(runs: Runs) -> None:
    requests = [runs.request(*SLEEPER) for _ in range(3)]

    async def scenario() -> list[int]:
        executor = LocalExecutor(3, kill_grace_seconds=0.2)
        runs.attach(executor)
        for request in requests:
            await executor.start(request)
        pids = [r.pid for r in runs.reports if isinstance(r, RunStartedReport)]
        await executor.close()
        assert executor.free_slots() == 0
        with pytest.raises(ExecutorError, match="closed"):
            await executor.start(runs.request("true"))
        return pids

    pids = asyncio.run(scenario())
    assert len(pids) == 3
    assert all(wait_until_gone(pid) for pid in pids)
    assert not any(isinstance(r, RunFinishedReport) for r in runs.reports)


def test_start_without_a_reporter_is_refused(runs: Runs) -> None:
    async def scenario() -> None:
        with pytest.raises(ExecutorError, match="set_reporter"):
            await LocalExecutor(1).start(runs.request("true"))

    asyncio.run(scenario())


def test_a_failing_reporter_does_not_lose_the_run(runs: Runs) -> None:
    seen: list[object] = []

    def reporter(report: object) -> None:
        seen.append(report)
        raise RuntimeError("reporter bug")

    async def scenario() -> None:
        executor = LocalExecutor(1)
        executor.set_reporter(reporter)
        await executor.start(runs.request("true"))
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        assert executor.free_slots() == 1

    asyncio.run(scenario())
    assert isinstance(seen[1], RunFinishedReport)


# --- what a job sees ---------------------------------------------------------------------


def test_environment_working_directory_and_path(runs: Runs) -> None:
    code = (
        "import json, os, shutil\n"
        "names = ['DATABUILD_RUN_ID', 'DATABUILD_JOB_NAME', 'DATABUILD_RESULT_PATH',\n"
        "         'DATABUILD_GRAPH_URL', 'DAILY_CURRENCY', 'PATH']\n"
        "seen = {n: os.environ.get(n) for n in names}\n"
        "seen['cwd'] = os.getcwd()\n"
        "json.dump(seen, open('seen.json', 'w'))\n"
    )
    request = runs.request(
        *python(code), env=(("DAILY_CURRENCY", "EUR"),), graph_url="http://127.0.0.1:8123"
    )
    assert isinstance(run_one(runs, request), RunSucceeded)
    seen = json.loads((runs.root / "seen.json").read_text())
    assert seen["DATABUILD_RUN_ID"] == request.job_run_id
    assert seen["DATABUILD_JOB_NAME"] == "job"
    assert seen["DATABUILD_RESULT_PATH"] == str(request.result_path)
    assert os.path.isabs(seen["DATABUILD_RESULT_PATH"])
    assert seen["DATABUILD_GRAPH_URL"] == "http://127.0.0.1:8123"
    assert seen["DAILY_CURRENCY"] == "EUR"
    assert seen["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert seen["cwd"] == str(runs.root)


def test_the_job_cannot_override_the_protocol_variables(runs: Runs) -> None:
    code = "import os; open('id', 'w').write(os.environ['DATABUILD_RUN_ID'])"
    request = runs.request(*python(code), env=(("DATABUILD_RUN_ID", "forged"),))
    run_one(runs, request)
    assert (runs.root / "id").read_text() == request.job_run_id


def test_refs_arrive_verbatim_without_a_shell(runs: Runs) -> None:
    refs = (
        "a/b=$(rm -rf x);echo",
        "c/d=`touch pwned` && echo *",
        'e/f=it\'s "quoted" | cat > pwned',
        "g/h=<b>html</b>&amp;",
    )
    code = "import json, sys; json.dump(sys.argv[1:], open('argv.json', 'w'))"
    assert isinstance(run_one(runs, runs.request(*python(code), refs=refs)), RunSucceeded)
    assert json.loads((runs.root / "argv.json").read_text()) == list(refs)
    assert not (runs.root / "pwned").exists()


def test_a_stale_result_from_an_earlier_attempt_is_not_read(runs: Runs) -> None:
    request = runs.request("true")
    request.run_dir.mkdir(parents=True)
    request.result_path.write_text('{"failed": {"message": "old"}}')
    assert isinstance(run_one(runs, request), RunSucceeded)


# --- orphans after a restart -------------------------------------------------------------


def spawn_orphan(root: Path, run_id: str, script: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABUILD_RUN_ID=run_id)
    return subprocess.Popen(["sh", "-c", script], cwd=root, env=env, start_new_session=True)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Clean up after a test, whatever it left running in the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_kill_orphan_kills_the_group_of_that_run(runs: Runs) -> None:
    orphan = spawn_orphan(runs.root, "r00000007", "sleep 1000 & echo $! > child.pid; wait")
    try:
        child = read_pid(runs.root / "child.pid")
        assert LocalExecutor(1).kill_orphan(JobRunId("r00000007"), orphan.pid)
        assert orphan.wait(timeout=30) == -9
        assert wait_until_gone(child)
    finally:
        kill_group(orphan)


def test_kill_orphan_finds_children_whose_leader_is_gone(runs: Runs) -> None:
    orphan = spawn_orphan(runs.root, "r00000008", "sleep 1000 & echo $! > child.pid")
    try:
        child = read_pid(runs.root / "child.pid")
        orphan.wait(timeout=30)
        assert LocalExecutor(1).kill_orphan(JobRunId("r00000008"), orphan.pid)
        assert wait_until_gone(child)
    finally:
        kill_group(orphan)


def test_kill_orphan_leaves_a_process_of_another_run_alone(runs: Runs) -> None:
    orphan = spawn_orphan(runs.root, "r00000009", "sleep 1000")
    try:
        assert not LocalExecutor(1).kill_orphan(JobRunId("r00000010"), orphan.pid)
        assert orphan.poll() is None
    finally:
        kill_group(orphan)


def test_kill_orphan_of_a_process_that_is_gone(runs: Runs) -> None:
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, check=True)
    pid = int(done.stdout)
    assert not LocalExecutor(1).kill_orphan(JobRunId("r00000011"), pid)
    assert not LocalExecutor(1).kill_orphan(JobRunId("r00000011"), 1)


# --- out of file descriptors -------------------------------------------------------------


@contextlib.contextmanager
def descriptors_left(free: int) -> Iterator[None]:
    """This process's file descriptors all taken but ``free``; the limit and fds restored
    afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 32, hard))
    taken: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(free):
            os.close(taken.pop())
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("free", "expected"),
    [
        (0, r"could not prepare the run directory \S+: Too many open files: "),
        (1, r"could not start job 'job': 'true': Too many open files: "),
    ],
)
def test_a_spawn_out_of_file_descriptors_is_a_retryable_failure(
    runs: Runs, free: int, expected: str
) -> None:
    request = runs.request("true")

    async def scenario() -> RunOutcome:
        executor = LocalExecutor(4)
        runs.attach(executor)
        try:
            with descriptors_left(free):
                await executor.start(request)
            return await runs.outcome(request.job_run_id)
        finally:
            await executor.close()

    outcome = failed(asyncio.run(scenario()), FailureKind.NO_RESOURCES)
    assert FailureKind.NO_RESOURCES.retryable
    assert re.fullmatch(
        expected + r"the service is out of file descriptors \(its ulimit -n is \d+\)",
        outcome.message,
    ), outcome.message
    # With descriptors free again, the same job starts.
    assert isinstance(run_one(runs, runs.request("true")), RunSucceeded)


# --- staging (Executor.stage, while the step that decided the run is committed) ---------


def test_a_staged_run_has_its_directory_and_log_before_it_starts(runs: Runs) -> None:
    code = "import sys; print('hello from', sys.argv[1])"
    request = runs.request(*python(code))
    request.run_dir.mkdir(parents=True)
    request.result_path.write_text('{"failed": {"message": "old"}}')

    async def scenario() -> RunOutcome:
        executor = LocalExecutor(4)
        runs.attach(executor)
        try:
            executor.stage(request)
            assert request.log_path.exists() and not request.result_path.exists()
            assert not runs.reports  # staged is not started: nothing runs, nothing reported
            await executor.start(request)
            return await runs.outcome(request.job_run_id)
        finally:
            await executor.close()

    assert isinstance(asyncio.run(scenario()), RunSucceeded)
    assert "hello from out/date=2024-01-01" in request.log_path.read_text()


def test_a_staged_run_that_cannot_get_a_directory_fails_at_start_as_unstaged(
    runs: Runs,
) -> None:
    runs.runs_dir.parent.mkdir(parents=True)
    runs.runs_dir.write_text("a file where the runs directory should be")
    request = runs.request("true")

    async def scenario() -> RunOutcome:
        executor = LocalExecutor(4)
        runs.attach(executor)
        try:
            executor.stage(request)
            assert not runs.reports  # the problem is reported by start, after the commit
            await executor.start(request)
            return await runs.outcome(request.job_run_id)
        finally:
            await executor.close()

    outcome = failed(asyncio.run(scenario()), FailureKind.SPAWN_ERROR)
    assert outcome.message.startswith("could not prepare the run directory "), outcome.message


def test_a_staged_run_never_started_is_let_go_at_close(runs: Runs) -> None:
    request = runs.request("true")

    async def scenario() -> None:
        executor = LocalExecutor(4)
        runs.attach(executor)
        before = len(os.listdir("/proc/self/fd"))
        executor.stage(request)
        executor.stage(request)  # staged again (a retried commit): the first log is closed
        assert len(os.listdir("/proc/self/fd")) == before + 1
        await executor.close()
        assert len(os.listdir("/proc/self/fd")) == before
        assert not runs.reports

    asyncio.run(scenario())
