"""A run's result file, read safely once the job process has ended, by
``job_process.ended_outcome`` (for the local executor on this machine and the Ray task on a
worker node alike).

At most ``MAX_RESULT_BYTES + 1`` bytes are read; a symlink is not followed and a FIFO is not
waited on. It does not interpret the bytes (``protocol.outcome_from`` does).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from databuild.core.events import FailureKind
from databuild.core.outcomes import RunFailed
from databuild.executors.protocol import MAX_RESULT_BYTES


class ResultTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def result_or_failure(path: Path, code: int, duration: float) -> bytes | RunFailed | None:
    """The result file's bytes (None if there is none), or the run's failure when it cannot
    be read or is too large: a message naming the file, and the limit if that is why."""
    try:
        return read_result(path)
    except ResultTooLarge as exc:
        message = (
            f"the result file {path} is {exc.size} bytes, larger than the limit of "
            f"{MAX_RESULT_BYTES} bytes; report missing dependencies or a failure, not data"
        )
    except OSError as exc:
        message = f"could not read the result file {path}: {exc.strerror or exc}"
    return RunFailed(FailureKind.BAD_RESULT, message, code, duration)


def read_result(path: Path) -> bytes | None:
    """At most MAX_RESULT_BYTES + 1 bytes of the result file; None if there is none;
    ``ResultTooLarge`` if it is larger than that, without reading it. A job could leave
    a symlink or a FIFO there: neither is followed nor waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link; write a regular file") from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        if status.st_size > MAX_RESULT_BYTES:
            raise ResultTooLarge(status.st_size)
        chunks: list[bytes] = []
        left = MAX_RESULT_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
