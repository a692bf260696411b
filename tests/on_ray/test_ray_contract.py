"""The executor port's contract suite (tests/executors/test_executor_contract.py), the very
same tests, run against RayExecutor on the real local cluster of this package."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from executors.test_executor_contract import *  # noqa: F403  (the suite, collected here)

from databuild.executors import Executor
from databuild.executors.ray_executor import RayExecutor

from .conftest import RayCluster


@pytest.fixture  # type: ignore[no-redef]  # replaces the suite's parametrized one
def make(ray_cluster: RayCluster) -> Callable[[int], Executor]:
    # The test process is connected to the cluster already: the executor uses that.
    return lambda slots: RayExecutor(
        slots, ray_cluster.address, kill_grace_seconds=0.2, start_wait_seconds=2.0
    )
