"""Job processes watched on the event loop by their pidfd, with no thread per child.

Why not ``loop.subprocess_exec``: on Python 3.11 asyncio watches each child with a thread of
its own (``ThreadedChildWatcher``), and the spawn waits until that new thread has started.
On a machine whose CPUs are busy with the jobs themselves that wait is a scheduling delay
(~3 ms a run on a 2-CPU machine, measured, while the spawn's own work is ~0.4 ms), paid on
the event loop for every cold run. Here the process is started with ``subprocess.Popen``
(vfork and exec, like asyncio's), its merged output is read with ``loop.add_reader``, and
its exit is seen when its pidfd (``os.pidfd_open``, Linux 5.3+) becomes readable; it is
then reaped with ``waitpid`` on the loop. The protocol gets the same calls, in the same
order, as from asyncio's transport: ``pipe_data_received``, ``process_exited``, and
``connection_lost`` once the output pipe is closed and the process has exited.

``pidfd_spawning()`` says whether this works here; ``LocalExecutor`` falls back to
``loop.subprocess_exec`` where it does not (another OS, an older kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_READ_BYTES = 1 << 16
_usable: bool | None = None


def pidfd_spawning() -> bool:
    """Whether processes can be watched by pidfd here (asked of the kernel once)."""
    global _usable
    if _usable is None:
        _usable = False
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(os.getpid())
            except OSError:
                pass
            else:
                os.close(fd)
                _usable = True
    return _usable


class PidfdProcess(asyncio.SubprocessTransport):
    """The part of a subprocess transport the local executor uses, for one job process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.SubprocessProtocol,
        popen: subprocess.Popen[bytes],
        output: int,
        pidfd: int,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._popen = popen
        self._pid = popen.pid
        self._output: int | None = output
        self._pidfd: int | None = pidfd
        self._returncode: int | None = None
        self._closed = False
        self._lost = False
        loop.add_reader(output, self._read)
        loop.add_reader(pidfd, self._reap)

    # ---- what the executor calls ----------------------------------------------------
    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def get_pipe_transport(self, fd: int) -> Any:
        return None  # no pipe transports: the output is read by this object itself

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop reading the output; a process still running is killed (as asyncio's
        transport does) and is still reaped when it exits."""
        if self._closed:
            return
        self._closed = True
        if self._returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        self._stop_reading()

    def send_signal(self, signum: int) -> None:
        if self._returncode is None:
            os.kill(self._pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # ---- the loop's callbacks -------------------------------------------------------
    def _read(self) -> None:
        assert self._output is not None
        try:
            data = os.read(self._output, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # the pipe broke: as good as closed
        if data:
            self._protocol.pipe_data_received(1, data)
            return
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._output is None:
            return
        self._loop.remove_reader(self._output)
        os.close(self._output)
        self._output = None
        self._maybe_lost()

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            pid, status = self._pid, 255 << 8
        if pid == 0:
            return  # readable before the exit is waitable: the next wake-up reaps it
        assert self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self._returncode  # so that Popen never waits for it
        self._protocol.process_exited()
        self._maybe_lost()

    def _maybe_lost(self) -> None:
        if self._lost or self._output is not None or self._returncode is None:
            return
        self._lost = True
        self._protocol.connection_lost(None)


def spawn(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.SubprocessProtocol,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
) -> PidfdProcess:
    """Start ``argv`` in a session of its own, stdin from /dev/null, stdout and stderr
    merged into one pipe read on ``loop``. Raises OSError as ``subprocess.Popen`` does (a
    command not found, not executable, out of processes or file descriptors)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)  # only ours: the job's stdout stays blocking
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    os.close(write_end)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    process = PidfdProcess(loop, protocol, popen, read_end, pidfd)
    protocol.connection_made(process)
    return process
