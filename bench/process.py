"""Run a command as a real subprocess and measure it: wall time and peak memory.

Used by the cold-build, no-op and peer benchmarks. Peak memory is the process's own
``VmHWM`` (high-water resident set) read from /proc while it runs, so the job processes it
spawns are not counted; ``wait4``'s ``ru_maxrss`` (the largest of the process and every
descendant it reaped) is kept beside it.

Before each measured command the machine's dirty pages are written out (``os.sync``):
both builds fsync hundreds of files, and on a VM the writeback of an earlier scenario's
data (a 1M-event log, the previous build) lands on those fsyncs and doubles a build's
time at random; synced, each command starts from the same state of the disk.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    wall_seconds: float
    started_at: float  # time.time() just before the spawn
    ended_at: float  # time.time() once it was reaped
    peak_rss_mb: float | None  # the process itself (VmHWM), None where /proc is absent
    maxrss_with_children_mb: float
    returncode: int
    stdout: str
    stderr: str


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> Measured:
    os.sync()
    started_at = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            value = _vm_hwm_kb(proc.pid)
            if value is not None:
                peak[0] = max(peak[0], value)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    ended_at = time.time()
    done.set()
    sampler.join()
    for reader in readers:
        reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall_seconds=wall,
        started_at=started_at,
        ended_at=ended_at,
        peak_rss_mb=round(peak[0] / 1024, 1) if peak[0] else None,
        maxrss_with_children_mb=round(usage.ru_maxrss / 1024, 1),
        returncode=proc.returncode,
        stdout="".join(out),
        stderr="".join(err),
    )
