"""One real Ray cluster for every test in this package: a head node and a second node, one
CPU each (two worker slots), started once (package scope) and stopped at the end.

Ray advertises and binds the machine's address unless told otherwise, and tests must never
listen beyond loopback, so the cluster runs in a network namespace of its own that has only
the loopback interface (``unshare(CLONE_NEWNET)``, then ``ip link set lo up``; needs root,
as CI has). The test process enters it for the package's tests (so the driver and every
``databuild`` process a test starts reach the cluster on 127.0.0.1) and returns to its own
namespace afterwards. If anything of this fails, the tests fail with the reason: they never
skip. Only processes this fixture started are stopped (``Cluster.shutdown`` kills the node
processes it spawned by pid; their workers end with their raylet).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from executors.harness import Runs

CLONE_NEWNET = 0x40000000
# The second node has this custom resource and the head has not: tests place runs by it.
WORKER_RESOURCE = "databuild_test_worker"


@dataclass(frozen=True)
class RayCluster:
    address: str  # host:port of the head's GCS, on 127.0.0.1 inside the namespace
    temp_dir: str
    cluster: Any  # ray.cluster_utils.Cluster: tests may add and remove nodes


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Move this thread (and what it starts from now on) into a new network namespace with
    only loopback, and back on exit."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            pytest.fail(
                "cannot create a loopback-only network namespace for the Ray cluster "
                f"(unshare(CLONE_NEWNET): {os.strerror(error)}); these tests need root"
            )
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
    finally:
        os.close(original)


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[RayCluster]:
    temp_dir = tempfile.mkdtemp(prefix="dbray-", dir="/tmp")  # short: Ray's socket paths
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    with loopback_only_network():
        try:
            import ray
            from ray.cluster_utils import Cluster
        except ImportError as exc:
            pytest.fail(f"Ray is not installed ({exc}): scripts/setup installs .[ray]")
        cluster = None
        try:
            try:
                cluster = Cluster(
                    initialize_head=True,
                    head_node_args={
                        "num_cpus": 1,
                        "node_ip_address": "127.0.0.1",
                        "include_dashboard": False,
                        "temp_dir": temp_dir,
                    },
                )
                cluster.add_node(
                    num_cpus=1, node_ip_address="127.0.0.1", resources={WORKER_RESOURCE: 2}
                )
                cluster.wait_for_nodes(timeout=60)
                ray.init(address=cluster.address, namespace="databuild-tests", log_to_driver=False)
            except Exception as exc:
                pytest.fail(f"cannot start a local Ray cluster: {type(exc).__name__}: {exc}")
            yield RayCluster(cluster.address, temp_dir, cluster)
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()  # type: ignore[no-untyped-call]
            left = _left_behind(temp_dir)
            if saved is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = saved
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the Ray cluster outlived it (now killed): {left}"


def _left_behind(temp_dir: str) -> list[str]:
    """Processes started under this cluster (its RAY_TMPDIR is in their environment) that
    are still alive after it stopped; they are ours, so they are killed, by pid."""
    return kill_left_behind(f"RAY_TMPDIR={temp_dir}", exact=True)


def kill_left_behind(marker_text: str, *, exact: bool, wait_seconds: float = 10.0) -> list[str]:
    """Kill, by pid, the processes whose environment has the entry ``marker_text`` (or, not
    ``exact``, an entry starting with it), after giving them ``wait_seconds`` to end on
    their own; return what had to be killed."""
    marker = marker_text.encode()
    deadline = time.monotonic() + wait_seconds  # workers and guards end after their raylet
    while True:
        found: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    entries = f.read().split(b"\0")
                if not any(e == marker if exact else e.startswith(marker) for e in entries):
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"{pid}: {cmd[:80]}" for pid, cmd in found.items()]


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(tmp_path)
