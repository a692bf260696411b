"""The one error tree of DataBuild.

Every error that DataBuild raises on purpose derives from ``DataBuildError``; driver
exceptions (sqlite3, psycopg, OSError from a job spawn) are translated into it by the
adapter that caught them, so callers handle one family.

    DataBuildError
    ├── InvalidInput              bad input from a user, a config file or a job
    │   ├── InvalidPartitionRef   a partition ref breaks a rule (says which)
    │   ├── InvalidPattern        an output/upstream pattern does not compile
    │   ├── ConfigError           databuild.toml is wrong (names file, key, problem)
    │   └── InvalidJobResult      a job's structured result is malformed
    ├── IllegalTransition         a lifecycle table forbids this change (nothing changed)
    ├── NotFound                  no want / run / partition with that id
    ├── StorageError              the Build Event Log could not be read or written
    │   ├── StorageUnavailable    a transient fault (connection lost, busy, disk full): retry
    │   ├── LogLocked             another service owns this Build Event Log
    │   └── LeadershipLost        a newer leader took a shared log over: stop writing
    ├── ExecutorError             a job could not be started or controlled
    └── ServiceError              talking to a DataBuild service failed

Job failures are classified as retryable or permanent with ``RetryableJobError`` and
``PermanentJobError`` semantics carried in events (see ``events.FailureKind``), not as
exceptions: a failed job is an outcome, not an error of DataBuild.
"""

from __future__ import annotations


class DataBuildError(Exception):
    """Base of every error DataBuild raises on purpose."""


class InvalidInput(DataBuildError):
    """Input from outside (user, config, job) is wrong; the message says what and where."""


class InvalidPartitionRef(InvalidInput):
    def __init__(self, ref: object, problem: str) -> None:
        shown = repr(ref) if not isinstance(ref, str) or len(ref) <= 80 else repr(ref[:77] + "...")
        super().__init__(f"invalid partition ref {shown}: {problem}")
        self.ref = ref
        self.problem = problem


class InvalidPattern(InvalidInput):
    pass


class ConfigError(InvalidInput):
    def __init__(self, path: str, key: str, problem: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class InvalidJobResult(InvalidInput):
    pass


class IllegalTransition(DataBuildError):
    pass


class NotFound(DataBuildError):
    pass


class StorageError(DataBuildError):
    pass


class StorageUnavailable(StorageError):
    """A fault that may clear by itself: the runtime retries (capped back-off) within a grace."""


class LogLocked(StorageError):
    pass


class LeadershipLost(StorageError):
    """This service was the writer of a shared log and another one has since taken it over
    (a newer writer generation is recorded): its appends are refused, it must stop writing."""


class ExecutorError(DataBuildError):
    pass


class ServiceError(DataBuildError):
    pass
