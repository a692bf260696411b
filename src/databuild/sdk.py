"""The Python SDK for writing DataBuild jobs: ``require`` inputs, build outputs, ``run``.

Every Python job process imports it, so it uses the standard library only and imports
little (no HTTP machinery until a job first asks about liveness). It speaks the job
protocol of docs/jobs.md: the partition refs come as arguments, the environment says
where the graph service is and where to write the result file, and ``run`` turns the
job's ``require`` calls and exceptions into that file and an exit code: per output, so
that in a batch one output's missing inputs or failure does not sink the others. It
imports nothing else of DataBuild and holds no orchestration logic.

    from databuild import sdk

    def build(ref: str) -> None:
        date = ref.split("=", 1)[1]
        sdk.require(f"raw/date={date}")   # not live: DataBuild builds it, then runs us again
        ...                               # write the output

    if __name__ == "__main__":
        sdk.run(build)
"""

from __future__ import annotations

import json
import os
import sys
import time

# typing, collections.abc and traceback cost ~7 ms to import, and every job process
# imports this module: annotations only (``TYPE_CHECKING`` is true to type checkers), and
# traceback where a job failed
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import NoReturn

__all__ = [
    "JobFailed",
    "MissingDependencies",
    "SdkError",
    "fail",
    "fail_for",
    "live",
    "partitions",
    "require",
    "require_for",
    "run",
    "run_batch",
]

ENV_RUN_ID = "DATABUILD_RUN_ID"
ENV_JOB_NAME = "DATABUILD_JOB_NAME"
ENV_RESULT_PATH = "DATABUILD_RESULT_PATH"
ENV_GRAPH_URL = "DATABUILD_GRAPH_URL"
ENV_LIVE_INPUTS = "DATABUILD_LIVE_INPUTS"

LIVE = "live"
EXIT_FAILED = 1
EXIT_SDK_ERROR = 2

_MAX_QUERY_CHARS = 4000
_MAX_REFS_PER_QUERY = 200
_HTTP_TIMEOUT_SECONDS = 30.0
_RETRY_DELAYS_SECONDS = (0.2, 1.0)  # a restarting service gets a moment to come back


class SdkError(Exception):
    """The job cannot talk to DataBuild: an environment variable is missing, the graph
    service cannot be reached, or the SDK is used the wrong way."""


class MissingDependencies(Exception):
    """Raised by ``require``: these input partitions are not live yet."""

    def __init__(self, refs: Iterable[str]) -> None:
        self.refs: tuple[str, ...] = tuple(refs)
        if not self.refs:
            raise ValueError("MissingDependencies needs at least one missing partition ref")
        super().__init__("missing input partitions: " + ", ".join(self.refs))


class JobFailed(Exception):
    """Raised by ``fail``: the job knows it cannot build, and says whether retrying helps."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class _Collector:
    """What the current ``run``/``run_batch`` has learned, per output ref: the inputs it
    lacks, or why it failed (the first failure of an output stands)."""

    def __init__(self, refs: Sequence[str]) -> None:
        self.refs = list(refs)
        self.missing: dict[str, list[str]] = {}
        self.failed: dict[str, dict[str, object]] = {}

    def add(self, output: str, inputs: Iterable[str]) -> None:
        merged = self.missing.setdefault(output, [])
        merged.extend(ref for ref in inputs if ref not in merged)

    def fail(self, output: str, message: str, retryable: bool) -> None:
        print(f"databuild: {output} failed: {message}", file=sys.stderr)
        self.failed.setdefault(output, {"message": message, "retryable": retryable})


_collector: _Collector | None = None


def partitions() -> list[str]:
    """The partition refs this run was asked to build (its command-line arguments)."""
    return sys.argv[1:]


# Answers are remembered for the rest of the run (keyed by run id, since a warm worker
# runs many): a batch job that asks ``live`` for all its inputs and then ``require_for``
# per output makes one request, not one per output. A partition reported missing that
# became live meanwhile costs nothing: DataBuild retries at once.
_answers: dict[str, bool] = {}
_answers_run = ""


def live(refs: Iterable[str]) -> dict[str, bool]:
    """Ask the graph service which of ``refs`` are live: one request per couple of hundred
    refs not asked before in this run. Raises SdkError if the service cannot be reached or
    answers nonsense."""
    global _answers_run
    run_id = os.environ.get(ENV_RUN_ID, "")
    if run_id != _answers_run:
        _answers.clear()
        _answers_run = run_id
        # the inputs DataBuild already knows are live (the job's input hints): no question
        for ref in os.environ.get(ENV_LIVE_INPUTS, "").split("\n"):
            if ref:
                _answers[ref] = True
    wanted = list(dict.fromkeys(_flatten((refs,))))
    unknown = [ref for ref in wanted if ref not in _answers]
    statuses: dict[str, str] = {}
    for chunk in _chunks(unknown):
        statuses.update(_ask(chunk))
    _answers.update({ref: statuses.get(ref) == LIVE for ref in unknown})
    return {ref: _answers[ref] for ref in wanted}


def require(*refs: str | Iterable[str]) -> None:
    """Raise MissingDependencies naming every one of ``refs`` that is not live.

    Takes refs as arguments, iterables of refs, or both. ``run`` records them as missing
    for the output being built; DataBuild builds them and runs the job again.
    """
    wanted = _flatten(refs)
    if not wanted:
        return
    missing = [ref for ref, is_live in live(wanted).items() if not is_live]
    if missing:
        raise MissingDependencies(missing)


def require_for(output_ref: str, *inputs: str | Iterable[str]) -> bool:
    """For ``run_batch``: record which of ``inputs`` that ``output_ref`` lacks, and return
    True if all are live (build it) or False (skip it; it is reported as missing)."""
    if _collector is None:
        raise SdkError("require_for() works inside sdk.run_batch() or sdk.run() only")
    if output_ref not in _collector.refs:
        raise SdkError(
            f"require_for({output_ref!r}, ...): this run was not asked to build {output_ref!r}"
        )
    wanted = _flatten(inputs)
    missing = [ref for ref, is_live in live(wanted).items() if not is_live] if wanted else []
    if missing:
        _collector.add(output_ref, missing)
    return not missing


def fail(message: str, retryable: bool = False) -> NoReturn:
    """Stop building the current ref as failed with ``message``. Not retryable by default:
    use it for what another attempt cannot fix (bad input data); pass retryable=True
    otherwise. Inside ``run`` with several refs only this ref fails and ``run`` goes on
    with the next; with one ref, or escaping ``run_batch``'s function, the whole run fails."""
    raise JobFailed(message, retryable)


def fail_for(output_ref: str, message: str, retryable: bool = False) -> None:
    """For ``run_batch``: record that ``output_ref`` failed with ``message`` and go on (it
    returns); the other outputs are built, or lack inputs, on their own."""
    if _collector is None:
        raise SdkError("fail_for() works inside sdk.run_batch() or sdk.run() only")
    if output_ref not in _collector.refs:
        raise SdkError(
            f"fail_for({output_ref!r}, ...): this run was not asked to build {output_ref!r}"
        )
    _collector.fail(output_ref, message, retryable)


def run(build: Callable[[str], None], refs: Sequence[str] | None = None) -> NoReturn:
    """Call ``build(ref)`` for each requested ref (default: the command-line arguments),
    write the result file and exit: 0 when built or missing dependencies or per-output
    failures were reported, 1 on a failure of the whole run, 2 when the job cannot talk
    to DataBuild.

    With several refs, ``fail()`` or any other exception while building one ref is
    recorded against that ref, and ``run`` goes on with the next. With one ref it fails
    the whole run, as it always did. An ``SdkError`` always fails the whole run."""

    def each(todo: list[str]) -> None:
        assert _collector is not None
        for ref in todo:
            try:
                build(ref)
            except MissingDependencies as missing:
                _collector.add(ref, missing.refs)
            except SdkError:
                raise
            except Exception as exc:
                if len(todo) == 1:
                    raise  # the run is this one ref: a run-level failure, as before
                _collector.fail(ref, *_failure_of(exc))

    _run(each, refs)


def run_batch(build: Callable[[list[str]], None], refs: Sequence[str] | None = None) -> NoReturn:
    """Call ``build(refs)`` once with every requested ref; it reports per-output missing
    inputs with ``require_for``. A MissingDependencies that escapes ``build`` counts
    against every output not yet reported. Exits as ``run`` does."""

    def whole(todo: list[str]) -> None:
        assert _collector is not None
        try:
            build(list(todo))
        except MissingDependencies as missing:
            for ref in todo:
                if ref not in _collector.missing:
                    _collector.add(ref, missing.refs)

    _run(whole, refs)


def _run(body: Callable[[list[str]], None], refs: Sequence[str] | None) -> NoReturn:
    global _collector
    todo = list(sys.argv[1:] if refs is None else refs)
    if not todo:
        _exit_sdk_error(
            "no partition refs were given; DataBuild calls a job as "
            "`<command> REF [REF...]`, with the refs to build as arguments"
        )
    collector = _collector = _Collector(todo)
    try:
        body(todo)
    except JobFailed as failed:
        print(f"databuild: job failed: {failed.message}", file=sys.stderr)
        _report_failure(failed.message, failed.retryable)
    except SdkError as exc:
        _exit_sdk_error(str(exc))
    except Exception as exc:
        _report_failure(*_failure_of(exc))
    finally:
        _collector = None
    # An output that failed is reported as failed only, even if it also lacked inputs.
    missing = {k: v for k, v in collector.missing.items() if k not in collector.failed}
    if missing or collector.failed:
        for output, inputs in missing.items():
            print(f"databuild: {output} needs {', '.join(inputs)}", file=sys.stderr)
        path = os.environ.get(ENV_RESULT_PATH)
        if not path and not missing:
            sys.exit(EXIT_FAILED)  # run by hand: the messages on stderr are the report
        if not path:
            _exit_sdk_error(
                f"{ENV_RESULT_PATH} is not set, so the missing inputs cannot be reported. "
                "The job is meant to be run by DataBuild, which sets it"
            )
        result: dict[str, object] = {}
        if missing:
            result["missing"] = missing
        if collector.failed:
            result["failed"] = collector.failed
        # the outputs reported neither way were built: said so, so that DataBuild makes
        # them live instead of running them again with the ones that lack inputs
        built = [r for r in dict.fromkeys(todo) if r not in missing and r not in collector.failed]
        if built:
            result["built"] = built
        _write_result(path, result)
    # 0 also with per-output failures: the result file says which failed, and DataBuild
    # takes the outputs it names nowhere as built only when the job exits 0.
    sys.exit(0)


def _failure_of(exc: Exception) -> tuple[str, bool]:
    """The message and retryability of what ``build`` raised; prints a traceback to the
    log for anything but ``fail()``."""
    if isinstance(exc, JobFailed):
        return exc.message, exc.retryable
    import traceback

    traceback.print_exception(exc)
    return f"{type(exc).__name__}: {exc}{_where(exc)} (full traceback in the log)", True


def _report_failure(message: str, retryable: bool) -> NoReturn:
    path = os.environ.get(ENV_RESULT_PATH)
    # Run by hand, the message on stderr is the report; the exit code says it failed.
    if path:
        _write_result(path, {"failed": {"message": message, "retryable": retryable}})
    sys.exit(EXIT_FAILED)


def _write_result(path: str, result: dict[str, object]) -> None:
    """Atomically (temporary file + rename), so DataBuild never reads half a result."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(temporary, path)
    except OSError as exc:
        _exit_sdk_error(f"cannot write the result file {path} ({ENV_RESULT_PATH}): {exc}")


def _exit_sdk_error(message: str) -> NoReturn:
    print(f"databuild: {message}", file=sys.stderr)
    sys.exit(EXIT_SDK_ERROR)


def _where(exc: BaseException) -> str:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"


def _flatten(refs: Iterable[str | Iterable[str]]) -> list[str]:
    out: list[str] = []
    for item in refs:
        if isinstance(item, str):
            out.append(item)
            continue
        for ref in item:
            if not isinstance(ref, str):
                raise SdkError(f"partition refs are strings, not {type(ref).__name__}: {ref!r}")
            out.append(ref)
    return out


def _chunks(refs: list[str]) -> Iterable[list[str]]:
    """Split so that each query's URL stays short enough for any server."""
    chunk: list[str] = []
    size = 0
    for ref in refs:
        cost = len(ref) * 3 + 5  # worst case of percent-encoding, plus "&ref="
        if chunk and (size + cost > _MAX_QUERY_CHARS or len(chunk) >= _MAX_REFS_PER_QUERY):
            yield chunk
            chunk, size = [], 0
        chunk.append(ref)
        size += cost
    if chunk:
        yield chunk


def _graph_url() -> str:
    url = os.environ.get(ENV_GRAPH_URL, "").rstrip("/")
    if not url:
        raise SdkError(
            f"{ENV_GRAPH_URL} is not set, so the job cannot ask which partitions are live. "
            "The job is meant to be run by DataBuild, which sets it; to run it by hand, "
            f"set {ENV_GRAPH_URL} to the graph service's URL (e.g. http://127.0.0.1:8123)"
        )
    if not url.startswith(("http://", "https://")):
        raise SdkError(f"{ENV_GRAPH_URL} must be an http:// or https:// URL, not {url!r}")
    return url


# Set by databuild.warm_worker in a warm worker: asks the service over the worker's pipe
# (None back: no answer there, ask over HTTP). Raises ValueError for a question the service
# refuses, EOFError if the service went away.
_ask_service: Callable[[list[str]], dict[str, str] | None] | None = None


def _ask(refs: list[str]) -> dict[str, str]:
    asker = _ask_service
    if asker is not None:
        try:
            answer = asker(refs)
        except (OSError, EOFError, ValueError) as exc:
            raise SdkError(
                f"asking the graph service which partitions are live failed: {exc}"
            ) from None
        if answer is not None:
            return answer
    return _query_statuses(refs)


def _query_statuses(refs: list[str]) -> dict[str, str]:
    # Imported here, not at the top: the HTTP machinery costs ~12 ms, and every job process
    # imports this module, including those that never ask. http.client, not urllib.request,
    # which would add ~10 ms of imports for nothing this one GET needs.
    import http.client
    from urllib.parse import urlencode, urlsplit

    base = _graph_url()
    where = urlsplit(base)
    query = urlencode([("ref", r) for r in refs])
    path = f"{where.path}/api/v1/partitions?{query}"
    url = f"{base}/api/v1/partitions?{query}"
    connection_class = (
        http.client.HTTPSConnection if where.scheme == "https" else http.client.HTTPConnection
    )
    last_problem = ""
    for delay in (0.0, *_RETRY_DELAYS_SECONDS):
        time.sleep(delay)
        connection = connection_class(
            where.hostname or "", where.port, timeout=_HTTP_TIMEOUT_SECONDS
        )
        try:
            connection.request("GET", path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            status, body = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            last_problem = f"it cannot be reached: {exc}"
            continue
        finally:
            connection.close()
        if status < 400:
            return _statuses_from(body, url)
        last_problem = f"it answered HTTP {status}: {body[:500].decode(errors='replace')}"
        if status < 500:
            break
    raise SdkError(
        f"asking the graph service at {base} which partitions are live failed: {last_problem}"
    )


def _statuses_from(body: bytes, url: str) -> dict[str, str]:
    try:
        document = json.loads(body)
        entries = document["partitions"]
        return {str(e["partition_ref"]): str(e["status"]) for e in entries}
    except (ValueError, KeyError, TypeError) as exc:
        raise SdkError(
            f"the graph service answered {url} with something that is not a partition list "
            f"({type(exc).__name__}: {exc}): {body[:200]!r}"
        ) from None
