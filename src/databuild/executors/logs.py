"""A run's captured output: bounded, readable while the run goes on.

Used by the local executor for fresh processes and warm workers alike. Keeps the first
``limit`` bytes on disk as they come and the last ``limit`` bytes in memory, written with a
marker of what was dropped when the run ends; never more than about twice ``limit`` bytes
of a job's output in memory. A full disk ends the log, not the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_TAIL_LINES = 20
_RECENT_BYTES = 4096


class BoundedLog:
    """A run's output on disk: the first ``limit`` bytes as they come (so the log can be
    read while the run goes on), then, when the run ends, a line saying how many bytes
    were dropped and the last ``limit`` bytes."""

    def __init__(self, path: Path, limit: int) -> None:
        self._limit = limit
        self._head_left = limit
        self._tail = bytearray()
        self._recent = bytearray()
        self._dropped = 0
        self._file: IO[bytes] | None = open(path, "wb", buffering=0)  # noqa: SIM115

    def write(self, data: bytes) -> None:
        self._recent += data
        del self._recent[:-_RECENT_BYTES]
        if self._head_left > 0:
            head = data[: self._head_left]
            self._head_left -= len(head)
            self._to_file(head)
            data = data[len(head) :]
        if data:
            self._tail += data
            excess = len(self._tail) - self._limit
            if excess > 0:
                del self._tail[:excess]
                self._dropped += excess

    def note(self, text: str) -> None:
        """A line from DataBuild itself (killed, timed out), on a line of its own."""
        self.write(f"\n[databuild] {text}\n".encode())

    def tail_text(self) -> str:
        lines = bytes(self._recent).decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-_TAIL_LINES:])

    def close(self) -> None:
        if self._dropped:
            self._to_file(
                f"\n[databuild] ... {self._dropped} bytes of output dropped here: the log keeps "
                f"the first and the last {self._limit} bytes ...\n".encode()
            )
        self._to_file(bytes(self._tail))
        self._tail.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _to_file(self, data: bytes) -> None:
        if self._file is None or not data:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            # A full disk must not stop the run; its log just ends here.
            logger.warning("cannot write job log %s: %s", self._file.name, exc)
            self._file.close()
            self._file = None
