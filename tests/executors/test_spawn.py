"""Cold job processes watched by pidfd (executors.spawn): the protocol sees what asyncio's
transport would show it, no thread is started per run, and the executor's fallback to
``loop.subprocess_exec`` (where pidfds are missing) still runs jobs the same way."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from databuild.core.events import FailureKind
from databuild.core.outcomes import RunFailed, RunOutcome, RunSucceeded
from databuild.executors import LocalExecutor
from databuild.executors.spawn import PidfdProcess, pidfd_spawning, spawn

from .harness import NEVER_SECONDS, Runs, is_gone, python, wait_until_gone

pytestmark = pytest.mark.skipif(not pidfd_spawning(), reason="needs pidfd_open (Linux 5.3+)")


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.calls: list[str] = []
        self.output = bytearray()
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("made")

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        if not self.calls or self.calls[-1] != "data":
            self.calls.append("data")
        self.output += data

    def process_exited(self) -> None:
        self.calls.append("exited")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")
        self.lost.set_result(None)


def run_to_end(argv: list[str], tmp_path: Path) -> tuple[Recorder, PidfdProcess]:
    async def scenario() -> tuple[Recorder, PidfdProcess]:
        loop = asyncio.get_running_loop()
        recorder = Recorder(loop)
        process = spawn(loop, recorder, argv, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        await asyncio.wait_for(recorder.lost, NEVER_SECONDS)
        return recorder, process

    return asyncio.run(scenario())


def test_output_exit_code_and_the_order_of_calls(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    recorder, process = run_to_end([sys.executable, "-c", code], tmp_path)
    assert recorder.calls == ["made", "data", "exited", "lost"]
    assert sorted(recorder.output.decode().split()) == ["err", "out"]  # merged
    assert process.get_returncode() == 3
    assert is_gone(process.get_pid())  # reaped: no zombie left


def test_death_by_signal_is_a_negative_return_code(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    _, process = run_to_end([sys.executable, "-c", code], tmp_path)
    assert process.get_returncode() == -signal.SIGKILL


def test_the_exit_is_seen_while_a_background_child_holds_the_pipe(tmp_path: Path) -> None:
    code = "import subprocess; subprocess.Popen(['sleep', '30']); print('left', flush=True)"

    async def scenario() -> tuple[list[str], int | None]:
        loop = asyncio.get_running_loop()
        recorder = Recorder(loop)
        process = spawn(
            loop, recorder, [sys.executable, "-c", code], cwd=tmp_path, env={"PATH": "/usr/bin"}
        )
        deadline = time.monotonic() + NEVER_SECONDS
        while "exited" not in recorder.calls:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        seen = list(recorder.calls)
        process.close()  # what the executor does after killing the group: the pipe is let go
        return seen, process.get_returncode()

    calls, returncode = asyncio.run(scenario())
    assert calls == ["made", "data", "exited"]  # the pipe is still open: not lost yet
    assert returncode == 0


def test_close_kills_a_process_still_running_and_it_is_reaped(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, list[str], int | None]:
        loop = asyncio.get_running_loop()
        recorder = Recorder(loop)
        process = spawn(loop, recorder, ["sleep", "30"], cwd=tmp_path, env={"PATH": "/usr/bin"})
        process.close()
        deadline = time.monotonic() + NEVER_SECONDS
        while "exited" not in recorder.calls:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return process.get_pid(), recorder.calls, process.get_returncode()

    pid, calls, returncode = asyncio.run(scenario())
    assert returncode == -signal.SIGKILL
    assert calls[-1] == "lost"
    assert wait_until_gone(pid)


def test_a_command_that_cannot_start_raises_and_leaks_no_descriptor(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with pytest.raises(FileNotFoundError):
                spawn(loop, Recorder(loop), ["no-such-cmd-xyz"], cwd=tmp_path, env={"PATH": "/"})
        assert len(os.listdir("/proc/self/fd")) == before

    asyncio.run(scenario())


def cold_runs(runs: Runs, executor: LocalExecutor, count: int) -> tuple[list[RunOutcome], int]:
    """``count`` cold runs, two at a time; the most threads seen while they ran."""

    async def scenario() -> tuple[list[RunOutcome], int]:
        runs.attach(executor)
        most = 0
        try:
            requests = [
                runs.request(*python("import time; time.sleep(0.05)")) for _ in range(count)
            ]
            outcomes = []
            for pair in range(0, count, 2):
                for request in requests[pair : pair + 2]:
                    await executor.start(request)
                    most = max(most, threading.active_count())
                for request in requests[pair : pair + 2]:
                    outcomes.append(await runs.outcome(request.job_run_id))
                    most = max(most, threading.active_count())
            return outcomes, most
        finally:
            await executor.close()

    return asyncio.run(scenario())


def test_cold_runs_start_no_thread_per_run(runs: Runs) -> None:
    before = threading.active_count()
    outcomes, most = cold_runs(runs, LocalExecutor(2), 6)
    assert all(isinstance(o, RunSucceeded) for o in outcomes), outcomes
    assert most == before  # asyncio's ThreadedChildWatcher would add one per running child


def test_without_pidfds_the_executor_falls_back_to_asyncio_subprocesses(runs: Runs) -> None:
    executor = LocalExecutor(2, kill_grace_seconds=0.2)
    executor._pidfd = False  # as on a kernel without pidfd_open
    outcomes, most = cold_runs(runs, executor, 2)
    assert all(isinstance(o, RunSucceeded) for o in outcomes), outcomes
    assert most > threading.active_count()  # the fallback is the one with a thread per child

    async def timed_out() -> RunOutcome:
        fallback = LocalExecutor(2, kill_grace_seconds=0.2)
        fallback._pidfd = False
        runs.attach(fallback)
        request = runs.request(*python("import time; time.sleep(30)"), timeout=0.2)
        try:
            await fallback.start(request)
            return await runs.outcome(request.job_run_id)
        finally:
            await fallback.close()

    outcome = asyncio.run(timed_out())
    assert isinstance(outcome, RunFailed) and outcome.kind is FailureKind.TIMEOUT, outcome
