"""Executors run jobs: the port (``port``), the job protocol as the executor sees it
(``protocol``), the local process pool (``local``) and a fake for tests (``fake``).

The runtime imports this package; it imports only ``databuild.core``.
"""

from databuild.executors.fake import FakeExecutor
from databuild.executors.local import LocalExecutor
from databuild.executors.port import Executor, Reporter, RunRequest
from databuild.executors.protocol import outcome_from, parse_result

__all__ = [
    "Executor",
    "FakeExecutor",
    "LocalExecutor",
    "Reporter",
    "RunRequest",
    "outcome_from",
    "parse_result",
]
