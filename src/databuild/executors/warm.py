"""Warm workers for Python jobs declared ``warm = true``: interpreters kept between runs.

The local executor asks ``WarmPool`` for a worker of a job, hands it one run, and gets the
run's exit code back; the worker (``databuild.warm_worker``) runs the job's script with the
run's argv and environment, so the job protocol is unchanged. A worker's merged output is
routed to the current run's bounded log up to the end marker that carries the exit code.
A worker that times out, is killed, or crashes is discarded with its process group, and
one that has served ``MAX_RUNS`` runs is retired, so a leak cannot grow without bound.

It decides nothing about runs; timeouts and outcomes stay with the executor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from databuild.core.errors import InvalidInput
from databuild.core.model import JobSpec
from databuild.executors.logs import BoundedLog
from databuild.executors.port import RunRequest, StatusSource

logger = logging.getLogger(__name__)

MAX_RUNS = 200
TOKEN_VARIABLE = "DATABUILD_WORKER_TOKEN"  # databuild.warm_worker reads it (stdlib-only module)


class WorkerProtocol(asyncio.SubprocessProtocol):
    """Routes the worker's output to the current run's log until the end marker
    (``<RS><token>:<exit code>``), and answers the run's questions on the way
    (``<RS><token>?<JSON list of refs>``: which are live) on the worker's input."""

    def __init__(
        self,
        token: str,
        loop: asyncio.AbstractEventLoop,
        source: Callable[[], StatusSource | None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._marker = b"\x1e" + token.encode()
        self._source = source
        self._buffer = bytearray()
        self._transport: asyncio.SubprocessTransport | None = None
        self.log: BoundedLog | None = None
        self.done: asyncio.Future[int | None] | None = None
        self.exited: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def begin(self, log: BoundedLog) -> asyncio.Future[int | None]:
        self.log = log
        self.done = self._loop.create_future()
        return self.done

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._buffer += data if isinstance(data, bytes) else data.encode()
        while True:
            at = self._buffer.find(self._marker)
            if at < 0:
                # keep what could be the start of a marker split across reads
                self._emit(len(self._buffer) - len(self._marker) + 1)
                return
            end = self._buffer.find(b"\n", at)
            self._emit(at)
            if end < 0:
                return
            kind = self._buffer[len(self._marker) : len(self._marker) + 1]
            text = bytes(self._buffer[len(self._marker) + 1 : end - at])
            del self._buffer[: end - at + 1]
            if kind == b"?":
                self._answer(text)
            elif self.done is not None and not self.done.done():
                self.done.set_result(int(text) if text.isdigit() else 1)

    def _answer(self, question: bytes) -> None:
        """One JSON line back: ``{"statuses": {ref: status}}``, ``{"error": why}`` for a bad
        question, or ``{"unavailable": true}`` when no source is set (the job then asks
        over HTTP)."""
        source = self._source()
        reply: dict[str, object]
        if source is None:
            reply = {"unavailable": True}
        else:
            try:
                refs = json.loads(question)
                if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                    raise InvalidInput("the question must be a JSON list of partition refs")
                reply = {"statuses": source(refs)}
            except (ValueError, InvalidInput) as exc:
                reply = {"error": str(exc)}
        if self._transport is None:
            return
        stdin = self._transport.get_pipe_transport(0)
        if isinstance(stdin, asyncio.WriteTransport) and not stdin.is_closing():
            stdin.write(json.dumps(reply).encode() + b"\n")

    def _emit(self, count: int) -> None:
        if count <= 0:
            return
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        if self.log is not None and self.done is not None and not self.done.done():
            self.log.write(chunk)

    def process_exited(self) -> None:
        self._emit(len(self._buffer))
        if self.done is not None and not self.done.done():
            self.done.set_result(None)  # died mid-run: the executor asks for its exit status
        if not self.exited.done():
            self.exited.set_result(None)


PoolKey = tuple[str, str, tuple[tuple[str, str], ...]]


def pool_key(job: JobSpec, root_dir: Path, env: dict[str, str]) -> PoolKey:
    """Which workers can serve a run: those started alike, with the same interpreter, graph
    directory and environment (``DATABUILD_*`` left out: they are the run's). A run replaces
    a worker's argv, environment and working directory, and the graph's own modules are
    forgotten after it, so a worker started alike is the same worker whichever job it
    serves: jobs that start alike share workers, and a cold build starts fewer
    interpreters."""
    start_env = tuple(sorted((k, v) for k, v in env.items() if not k.startswith("DATABUILD_")))
    return (job.command[0], str(root_dir), start_env)


@dataclass(eq=False)
class Worker:
    key: PoolKey
    transport: asyncio.SubprocessTransport
    protocol: WorkerProtocol
    pid: int
    runs: int = 0
    busy: bool = field(default=False)

    @property
    def alive(self) -> bool:
        return not self.protocol.exited.done()

    def send(self, request: RunRequest, env: dict[str, str]) -> None:
        command = request.job.command
        # ["python", "jobs/x.py", "--flag"] + refs -> sys.argv = ["jobs/x.py", "--flag", *refs]
        argv = [*command[1:], *request.partition_refs]
        line = json.dumps({"argv": argv, "env": env, "cwd": str(request.root_dir)})
        stdin = self.transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.write(line.encode() + b"\n")
        self.runs += 1

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        # Close the transport once the process has exited, not now: closing it while the
        # process runs polls it, which may reap it under asyncio's child watcher (which
        # then complains on stderr about an unknown child).
        self.protocol.exited.add_done_callback(lambda _: self.transport.close())


class WarmPool:
    """Idle workers by how they were started (``pool_key``); a worker serves one run at a
    time."""

    def __init__(self) -> None:
        self._idle: dict[PoolKey, list[Worker]] = {}
        self._starting: dict[PoolKey, int] = {}  # prespawned, not yet idle
        self.source: StatusSource | None = None  # answers the runs' questions (see port)

    async def acquire(self, request: RunRequest, env: dict[str, str]) -> Worker:
        """An idle worker started as this run's job would start one, or a new one (raises
        OSError if it cannot start)."""
        idle = self._idle.setdefault(pool_key(request.job, request.root_dir, env), [])
        while idle:
            worker = idle.pop()
            if worker.alive:
                worker.busy = True
                return worker
            worker.kill()
        worker = await self._spawn(request.job, request.root_dir, env)
        worker.busy = True
        return worker

    async def prespawn(
        self, plan: Sequence[tuple[JobSpec, dict[str, str]]], root_dir: Path
    ) -> None:
        """Start idle workers ahead of the first runs, in the order given (errors wait for
        a run, which will say what is wrong)."""
        keys = [pool_key(job, root_dir, env) for job, env in plan]
        pending = collections.Counter(keys)
        for key, count in pending.items():
            self._starting[key] = self._starting.get(key, 0) + count
        try:
            for (job, env), key in zip(plan, keys, strict=True):
                try:
                    worker = await self._spawn(job, root_dir, env)
                except OSError as exc:
                    logger.warning("cannot start a warm worker for job %s: %s", job.name, exc)
                    continue
                finally:
                    pending[key] -= 1
                    self._starting[key] -= 1
                self._idle.setdefault(worker.key, []).append(worker)
        finally:  # cancelled: what it did not start is not starting any more
            for key, count in pending.items():
                self._starting[key] -= count

    def held(self, key: PoolKey) -> int:
        """The workers started alike (``key``) that are idle or being prespawned."""
        return len(self._idle.get(key, ())) + self._starting.get(key, 0)

    async def _spawn(self, job: JobSpec, root_dir: Path, env: dict[str, str]) -> Worker:
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        worker_env = {k: v for k, v in env.items() if not k.startswith("DATABUILD_")}
        worker_env[TOKEN_VARIABLE] = token
        transport, protocol = await loop.subprocess_exec(
            lambda: WorkerProtocol(token, loop, lambda: self.source),
            job.command[0],
            "-m",
            "databuild.warm_worker",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=root_dir,
            env=worker_env,
            start_new_session=True,
        )
        return Worker(pool_key(job, root_dir, env), transport, protocol, transport.get_pid())

    def release(self, worker: Worker) -> None:
        """Back to the pool after a clean run; retired when dead or old."""
        worker.busy = False
        if not worker.alive or worker.runs >= MAX_RUNS:
            worker.kill()
            return
        self._idle.setdefault(worker.key, []).append(worker)

    async def close(self) -> None:
        """Kill the idle workers and wait (briefly) until each has exited, so that they are
        reaped while the event loop still runs (else asyncio complains on stderr about a
        child whose loop is closed)."""
        workers = [worker for idle in self._idle.values() for worker in idle]
        self._idle.clear()
        for worker in workers:
            worker.kill()
        if workers:
            await asyncio.wait([worker.protocol.exited for worker in workers], timeout=2.0)
