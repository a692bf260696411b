"""A pass-through FUSE file system that answers EIO on demand: a disk that fails.

Run as its own process (``python eio_fs.py BACKING MOUNT CONTROL``): every file operation
under MOUNT goes to BACKING, except that while the file CONTROL exists, writes, fsyncs,
creates and truncates of paths whose name contains the text in CONTROL (every path when
CONTROL is empty) fail with EIO, as a dying disk's do; ``write NAME`` in CONTROL fails only
the writes and fsyncs (the file can still be created: a disk failing mid-run). Reads keep working, so that what
was written before can be checked. Used by tests/e2e/test_disk_faults.py; needs root,
/dev/fuse and libfuse2 (``.ci/run`` installs it).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

from fuse import FUSE, FuseOSError, Operations


class FailingDisk(Operations):  # type: ignore[misc]
    def __init__(self, backing: str, control: str) -> None:
        self.backing = backing
        self.control = Path(control)

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _fail(self, path: str, *, writing: bool = False) -> None:
        try:
            needle = self.control.read_text().strip()
        except FileNotFoundError:
            return
        if needle.startswith("write "):
            if not writing:
                return
            needle = needle.removeprefix("write ").strip()
        if not needle or needle in path:
            raise FuseOSError(errno.EIO)

    # metadata
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size")
        return {key: getattr(st, key) for key in (*keys, "st_uid")}

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, times: Any = None) -> None:
        os.utime(self._real(path), times)

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        return {key: getattr(st, key) for key in (*keys, "f_flag", "f_frsize", "f_namemax")}

    # directories and names
    def mkdir(self, path: str, mode: int) -> None:
        self._fail(path)
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._real(path))

    def rename(self, old: str, new: str) -> None:
        self._fail(new)
        os.rename(self._real(old), self._real(new))

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def symlink(self, target: str, source: str) -> None:
        os.symlink(source, self._real(target))

    def link(self, target: str, source: str) -> None:
        os.link(self._real(source), self._real(target))

    # files
    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._fail(path)
        return os.open(self._real(path), flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        self._fail(path)
        return os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._fail(path, writing=True)
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        self._fail(path)
        with open(self._real(path), "r+b") as f:
            f.truncate(length)

    def flush(self, path: str, fh: int) -> None:
        pass

    def fsync(self, path: str, fdatasync: int, fh: int) -> None:
        self._fail(path, writing=True)
        os.fsync(fh)

    def release(self, path: str, fh: int) -> None:
        os.close(fh)


def main() -> None:
    backing, mount, control = sys.argv[1:4]
    FUSE(
        FailingDisk(backing, control),
        mount,
        foreground=True,
        allow_other=True,
        attr_timeout=0,
        entry_timeout=0,
    )


if __name__ == "__main__":
    main()
