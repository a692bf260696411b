"""Disk faults on run logs and result files (issue 14.3): a run directory on a full disk,
and on a failing one (EIO, from the FUSE file system of ``eio_fs.py``).

The graph's ``.databuild/runs`` is a 64 KiB tmpfs of the test's own (``mount -t tmpfs``,
which needs root: CI runs as root and sets ``DATABUILD_TEST_REQUIRE_ROOT=1``, so there
these tests run or fail, never skip). The Build Event Log stays on the real disk: what
is acknowledged is never lost, and each fault is a clear line naming the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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


BEL_CONFIG = """
[graph]
name = "fullbel"

[jobs.local]
outputs = ["local/{n}"]
command = ["true"]

[upstreams.up]
url = "http://127.0.0.1:9"
partitions = ["u/{n}"]
"""


def _serve(graph: Path, grace: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env["DATABUILD_STORAGE_GRACE"] = grace
    proc = subprocess.Popen(
        [DATABUILD, "serve", "--port", "0"],
        cwd=graph,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    discovery = graph / ".databuild" / "service.json"
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            url = str(json.loads(discovery.read_text())["url"])
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("serve did not come up")


def test_a_full_disk_under_the_bel_ends_the_process_after_the_grace_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        if os.environ.get("DATABUILD_TEST_REQUIRE_ROOT") == "1":
            pytest.fail("this test mounts a tmpfs and must run as root in CI")
        pytest.skip("mounting a small tmpfs needs root (CI runs it)")
    state = tmp_path / ".databuild"
    state.mkdir()
    (tmp_path / "databuild.toml").write_text(BEL_CONFIG)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(state)], check=True)
    try:
        proc, url = _serve(tmp_path, grace="3")
        acknowledged = 0
        refused = None
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(5_000):
                response = client.post(
                    "/api/v1/wants", json={"partition_refs": [f"u/{i}-{'x' * 300}"]}
                )
                if response.status_code != 200:
                    refused = response
                    break
                acknowledged += 1
        assert refused is not None and refused.status_code == 503, "the disk never filled"
        assert "disk is full" in refused.json()["error"]
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0  # a supervisor restarts it
        last = out.strip().splitlines()[-1]
        assert last.startswith("error: the service stopped:") and "storage grace" in last, out
        assert "Traceback" not in out

        # space again: a restart recovers as after kill -9, with every acknowledged want
        subprocess.run(["mount", "-o", "remount,size=8m", str(state)], check=True)
        proc, url = _serve(tmp_path, grace="3")
        try:
            health = httpx.get(f"{url}/healthz", timeout=10).json()
            assert health["status"] == "ok" and health["active_wants"] == acknowledged
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


# EIO: a disk that fails rather than fills. ``.databuild/runs`` is a pass-through FUSE file
# system of the test's own (eio_fs.py: root, /dev/fuse, libfuse2) that answers EIO to writes
# of the files named in its control file, as a dying disk does.
EIO_FS = Path(__file__).with_name("eio_fs.py")


@pytest.fixture
def failing_disk_graph(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The graph and the control file: write a file name into it to make writes of that
    file fail with EIO."""
    if os.geteuid() != 0 or not Path("/dev/fuse").exists():
        if os.environ.get("DATABUILD_TEST_REQUIRE_ROOT") == "1":
            pytest.fail("these tests mount a FUSE file system and must run as root in CI")
        pytest.skip("mounting a FUSE file system needs root and /dev/fuse (CI runs these)")
    graph, backing, control = tmp_path / "graph", tmp_path / "backing", tmp_path / "control"
    runs = graph / ".databuild" / "runs"
    runs.mkdir(parents=True)
    backing.mkdir()
    (graph / "databuild.toml").write_text(CONFIG)
    fs = subprocess.Popen(
        [sys.executable, str(EIO_FS), str(backing), str(runs), str(control)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(runs):
            if fs.poll() is not None or time.monotonic() > deadline:
                output = fs.stdout.read() if fs.stdout else ""
                pytest.fail(f"the EIO file system did not mount (libfuse2 installed?): {output}")
            time.sleep(0.05)
        yield graph, control
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)
        fs.kill()
        fs.wait(timeout=10)


def test_eio_on_a_run_log_is_one_clear_line_and_the_partition_is_built(
    failing_disk_graph: tuple[Path, Path],
) -> None:
    graph, control = failing_disk_graph
    control.write_text("write log.txt")  # created, then every write of it fails
    built = databuild(graph, "build", "noisy/1")
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    log_path = graph / ".databuild" / "runs" / "r00000001" / "log.txt"
    assert f"cannot write job log {log_path}: [Errno 5] Input/output error" in out
    assert "Traceback" not in out
    control.unlink()  # the disk recovers: the next run's log is written
    again = databuild(graph, "build", "noisy/2")
    assert again.returncode == 0, again.stderr
    listed = databuild(graph, "partitions")
    assert "noisy/1" in listed.stdout and "noisy/2" in listed.stdout


def test_eio_on_a_result_file_fails_the_run_naming_the_file(
    failing_disk_graph: tuple[Path, Path],
) -> None:
    graph, control = failing_disk_graph
    control.write_text("result.json")
    built = databuild(graph, "build", "picky/1")
    out = built.stdout + built.stderr
    assert built.returncode == 1, out
    assert "cannot write the result file" in out and "result.json" in out
    assert "Traceback" not in out
    # the whole line, in the run's log (the build's summary may elide the middle of it)
    log = (graph / ".databuild" / "runs" / "r00000001" / "log.txt").read_text()
    (line,) = [x for x in log.splitlines() if "cannot write the result file" in x]
    assert "result.json" in line and "Input/output error" in line, line
    runs = databuild(graph, "runs", "--job", "picky")
    assert "failed" in runs.stdout


def test_eio_creating_a_run_directory_fails_the_run_naming_it_and_a_new_build_succeeds(
    failing_disk_graph: tuple[Path, Path],
) -> None:
    graph, control = failing_disk_graph
    control.write_text("log.txt")  # the log file cannot even be created
    built = databuild(graph, "build", "noisy/1")
    out = built.stdout + built.stderr
    assert built.returncode == 1, out
    run_dir = graph / ".databuild" / "runs" / "r00000001"
    assert f"could not prepare the run directory {run_dir}: Input/output error" in " ".join(
        out.split()
    )
    assert "Traceback" not in out
    control.unlink()
    again = databuild(graph, "build", "noisy/1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "live" in databuild(graph, "partitions").stdout
