"""The external check runner: asks each external's ``check`` command which waiting refs exist.

Started and stopped by the graph host beside the controller, only when some
``[externals.NAME]`` has a ``check`` command. While some active want waits on refs of an
external (``core.externals.waiting_refs``), it runs the command on those refs (in batches of
``MAX_CHECK_BATCH``), and declares the ones it answers live through
``Controller.externals_live``, like any client: the waiting wants are woken in that step.
Then it checks again after ``check_interval``, doubled after each check that made nothing
live (or failed), capped at ``check_interval_max``; a check that finds something, or refs
that start waiting after none did, reset it. While nothing waits it runs nothing: it sleeps
until the log moves (``Controller.wait_for_events``), no polling of the outside world.

The protocol (``core.externals``): refs on stdin, one per line; the ones that exist on
stdout, one per line; exit 0. The command runs in the graph directory with
``$DATABUILD_EXTERNAL`` set to the external's name. It is bounded: killed after
``check_timeout``, and failed if it prints more than ``MAX_CHECK_OUTPUT_BYTES``. A failing,
hanging or babbling check is logged and retried later; it never stops the service.

What it must not do: decide anything about wants (the reconciler does), or keep state that
a restart needs (it asks again after a restart, which is harmless: live is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from databuild.core.errors import DataBuildError
from databuild.core.externals import (
    MAX_CHECK_BATCH,
    MAX_CHECK_OUTPUT_BYTES,
    check_delay,
    parse_check_output,
    waiting_refs,
)
from databuild.core.model import ExternalSpec
from databuild.core.refs import PartitionRef
from databuild.runtime.controller import Controller

log = logging.getLogger("databuild.externals")

IDLE_WAKE_SECONDS = 30.0
"""While nothing waits, look again at least this often (besides every commit)."""

_STDERR_SHOWN = 500


@dataclass
class ExternalCheckStats:
    """Counters of one external's check, for ``/metrics``."""

    checks: int = 0
    failures: int = 0
    found: int = 0
    waiting: int = 0  # refs waiting at the latest look
    last_error: str = ""


class CheckFailed(Exception):
    """A run of a check command failed (exit code, timeout, output too long, no program)."""


class ExternalChecker:
    def __init__(
        self, externals: Sequence[ExternalSpec], controller: Controller, root_dir: Path
    ) -> None:
        self.externals = tuple(x for x in externals if x.check)
        self.controller = controller
        self.root_dir = root_dir
        self.stats = {x.name: ExternalCheckStats() for x in self.externals}
        self._due: dict[str, float] = {}  # loop time of the next check, while refs wait
        self._fruitless: dict[str, int] = {x.name: 0 for x in self.externals}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="databuild-external-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seen = self.controller.last_committed
            for external in self.externals:
                try:
                    await self._maybe_check(external, loop.time())
                except DataBuildError as exc:  # the controller refused (stopped, storage down)
                    log.warning("external %s: found refs not recorded: %s", external.name, exc)
            pending = list(self._due.values())
            wait = max(
                0.05,
                min(
                    min(pending) - loop.time() if pending else IDLE_WAKE_SECONDS, IDLE_WAKE_SECONDS
                ),
            )
            if self.controller.failure is not None:
                await asyncio.sleep(wait)  # no more events will come to wake it
            else:
                await self.controller.wait_for_events(seen, wait)

    async def _maybe_check(self, external: ExternalSpec, now: float) -> None:
        name = external.name
        stats = self.stats[name]
        due = self._due.get(name)
        if due is not None and now < due:
            return
        refs = waiting_refs(self.controller.state, name)
        stats.waiting = len(refs)
        if not refs:
            self._due.pop(name, None)
            self._fruitless[name] = 0
            return
        found_any = False
        failed = False
        for start in range(0, len(refs), MAX_CHECK_BATCH):
            batch = refs[start : start + MAX_CHECK_BATCH]
            stats.checks += 1
            try:
                found = await self.run_check(external, batch)
            except CheckFailed as exc:
                stats.failures += 1
                stats.last_error = str(exc)
                log.warning("external %s: check failed (retried later): %s", name, exc)
                failed = True
                break
            if found:
                await self.controller.externals_live(found)
                stats.found += len(found)
                found_any = True
        stats.waiting = len(waiting_refs(self.controller.state, name))
        self._fruitless[name] = 0 if found_any and not failed else self._fruitless[name] + 1
        loop = asyncio.get_running_loop()
        self._due[name] = loop.time() + check_delay(external, max(0, self._fruitless[name] - 1))

    async def run_check(
        self, external: ExternalSpec, refs: Sequence[PartitionRef]
    ) -> list[PartitionRef]:
        """Run the check command once on ``refs``; the ones it says exist."""
        env = {**os.environ, "DATABUILD_EXTERNAL": external.name}
        try:
            proc = await asyncio.create_subprocess_exec(
                *external.check,
                cwd=self.root_dir,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise CheckFailed(f"cannot run {list(external.check)!r}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(
                _talk(proc, "".join(f"{r}\n" for r in refs).encode()),
                external.check_timeout_seconds,
            )
        except TimeoutError:
            raise CheckFailed(
                f"no answer within check_timeout ({external.check_timeout_seconds:g}s); killed"
            ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
        if out is None:
            raise CheckFailed(f"printed more than {MAX_CHECK_OUTPUT_BYTES} bytes; killed")
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-_STDERR_SHOWN:]
            raise CheckFailed(f"exited with code {proc.returncode}" + (f": {tail}" if tail else ""))
        answer = parse_check_output(refs, out.decode(errors="replace"))
        if answer.unknown:
            log.warning(
                "external %s: the check named %d ref(s) it was not asked about, ignored: %s",
                external.name,
                len(answer.unknown),
                ", ".join(answer.unknown[:3]),
            )
        return list(answer.found)


async def _talk(proc: asyncio.subprocess.Process, stdin: bytes) -> tuple[bytes | None, bytes]:
    """Feed stdin, read stdout up to the bound (None past it) and a bounded stderr."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()

    async def drain_err() -> bytes:
        assert proc.stderr is not None
        kept = b""
        while chunk := await proc.stderr.read(65536):
            kept = (kept + chunk)[-65536:]
        return kept

    feeding = asyncio.create_task(feed())
    errors = asyncio.create_task(drain_err())
    out = b""
    try:
        while chunk := await proc.stdout.read(65536):
            out += chunk
            if len(out) > MAX_CHECK_OUTPUT_BYTES:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
                return None, await errors
        await proc.wait()
        return out, await errors
    finally:
        feeding.cancel()
        errors.cancel()
