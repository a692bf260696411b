"""Disk faults on run logs and result files (issue 14.3): a run directory on a full disk.

The graph's ``.databuild/runs`` is a 64 KiB tmpfs of the test's own (``mount -t tmpfs``,
which needs root: CI runs as root and sets ``DATABUILD_TEST_REQUIRE_ROOT=1``, so there
these tests run or fail, never skip). The Build Event Log stays on the real disk: what
is acknowledged is never lost, and each fault is a clear line naming the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
DATABUILD = str(Path(sys.executable).parent / "databuild")

CONFIG = """
[graph]
name = "fulldisk"

[jobs.noisy]
outputs = ["noisy/{n}"]
command = ["python", "-c", "import sys\\nfrom databuild import sdk\\nsys.stdout.write('x' * 300000)\\nsys.stdout.flush()\\nsdk.run(lambda ref: None)"]
retries = 0

[jobs.picky]
outputs = ["picky/{n}"]
command = ["python", "-c", "from databuild import sdk\\ndef build(ref):\\n    sdk.fail('this output is bad')\\nsdk.run(build)"]
retries = 0
"""


@pytest.fixture
def full_disk_graph(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("DATABUILD_TEST_REQUIRE_ROOT") == "1":
            pytest.fail("these tests mount a tmpfs and must run as root in CI")
        pytest.skip("mounting a small tmpfs needs root (CI runs these)")
    runs = tmp_path / ".databuild" / "runs"
    runs.mkdir(parents=True)
    (tmp_path / "databuild.toml").write_text(CONFIG)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(runs)], check=True)
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def databuild(graph: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [DATABUILD, *args], cwd=graph, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_run_log_on_a_full_disk_is_one_clear_line_and_the_build_goes_on(
    full_disk_graph: Path,
) -> None:
    first = databuild(full_disk_graph, "build", "noisy/1")
    assert first.returncode == 0, first.stderr
    log_path = full_disk_graph / ".databuild" / "runs" / "r00000001" / "log.txt"
    assert f"cannot write job log {log_path}: [Errno 28] No space left on device" in (
        first.stdout + first.stderr
    )
    assert "Traceback" not in first.stdout + first.stderr
    # the disk is now full: the next run still runs and its partition is recorded live
    second = databuild(full_disk_graph, "build", "noisy/2")
    assert second.returncode == 0, second.stderr
    listed = databuild(full_disk_graph, "partitions")
    assert "noisy/1" in listed.stdout and "noisy/2" in listed.stdout
    assert listed.stdout.count("live") >= 2


def test_a_result_file_on_a_full_disk_fails_the_run_naming_the_file(
    full_disk_graph: Path,
) -> None:
    databuild(full_disk_graph, "build", "noisy/1")  # fills the disk
    built = databuild(full_disk_graph, "build", "picky/1")
    assert built.returncode == 1
    out = built.stdout + built.stderr
    assert "cannot write the result file" in out and "result.json" in out
    assert "No space left on device" in out
    assert "Traceback" not in out
    runs = databuild(full_disk_graph, "runs", "--job", "picky")
    assert "failed" in runs.stdout
