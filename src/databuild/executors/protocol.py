"""The job protocol, seen from the executor: turn how a job ended into a ``RunOutcome``.

Every executor (local process pool, distributed engine adapter) calls ``outcome_from``
once a job process has ended, with its exit status, whether it was killed for running past
its timeout, the bytes of its result file and the tail of its log. This module also names
the environment variables a job is given and the files a run keeps. It is pure: it reads
no file, starts no process and looks at no clock; the caller does all of that.

The rules, in order (docs/jobs.md says the same for job authors):

1. Killed for running past its timeout: ``FailureKind.TIMEOUT``, whatever it wrote.
2. A result file that is present and not blank decides, whatever the exit code:
   malformed -> ``BAD_RESULT`` (saying what is wrong and where); ``{"failed": {"message":
   ..., "retryable": ...}}`` (the whole run) -> ``PERMANENT`` or, with ``"retryable": true``,
   ``EXIT_NONZERO``; ``{"failed": {OUTPUT: {"message": ..., "retryable": ...}, ...}}`` (per
   output) -> ``RunPartial``, where outputs named in neither ``failed`` nor ``missing`` were
   built if the job exited 0 and failed retryably with the exit status if not;
   ``{"missing": ...}`` alone -> ``RunMissingDeps``, where outputs listed in ``"built"``
   were built and the others named nowhere are run again. Several JSON objects, one per line, are
   merged, so that a shell job can append one line per output with ``>>``: missing inputs
   are collected per output, the first failure of an output stands and wins over its
   missing inputs, and a whole-run failure wins over everything.
3. Exit 0 -> ``RunSucceeded``; any other exit or a signal -> ``EXIT_NONZERO`` with the exit
   code or signal and the last lines of the log.

``RunFailed.exit_code`` is the process's exit code, minus the signal number when a signal
ended it (as ``subprocess`` reports it), or -1 when there is neither (it never started).
"""

from __future__ import annotations

import json
import signal as signals
from collections.abc import Sequence
from dataclasses import dataclass

from databuild.core.errors import InvalidJobResult, InvalidPartitionRef
from databuild.core.events import FailureKind, MissingDeps
from databuild.core.outcomes import (
    OutputFailed,
    RunFailed,
    RunMissingDeps,
    RunOutcome,
    RunPartial,
    RunSucceeded,
)
from databuild.core.refs import PartitionRef, parse_ref

ENV_RUN_ID = "DATABUILD_RUN_ID"
ENV_JOB_NAME = "DATABUILD_JOB_NAME"
ENV_RESULT_PATH = "DATABUILD_RESULT_PATH"
ENV_GRAPH_URL = "DATABUILD_GRAPH_URL"
ENV_LIVE_INPUTS = "DATABUILD_LIVE_INPUTS"  # newline-separated refs, live at dispatch
MAX_LIVE_INPUTS_CHARS = 64 * 1024  # beyond it the variable is left out (the job asks)

LOG_FILE_NAME = "log.txt"
RESULT_FILE_NAME = "result.json"
MAX_RESULT_BYTES = 1 << 20
NO_EXIT_CODE = -1

_MAX_MESSAGE_CHARS = 2000
_MAX_SHOWN_CHARS = 60


@dataclass(frozen=True, slots=True)
class ReportedMissing:
    """The job said these outputs lack these inputs, and that it built ``built``."""

    missing: tuple[MissingDeps, ...]
    built: tuple[PartitionRef, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedFailure:
    """The job classified its own failure."""

    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class ReportedOutputs:
    """The job reported per-output failures (at least one), perhaps missing inputs of
    other outputs; the outputs it names in neither it built."""

    failed: tuple[OutputFailed, ...]
    missing: tuple[MissingDeps, ...]
    built: tuple[PartitionRef, ...] = ()


JobResult = ReportedMissing | ReportedFailure | ReportedOutputs | None


def outcome_from(
    exit_code: int | None,
    signal: int | None,
    timed_out: bool,
    result_bytes: bytes | None,
    requested: Sequence[PartitionRef],
    duration: float,
    log_tail: str,
    *,
    timeout_seconds: float | None = None,
) -> RunOutcome:
    """Classify one ended run. ``result_bytes`` is None when there is no result file; the
    caller reads at most ``MAX_RESULT_BYTES + 1`` bytes of it so that too large shows."""
    code = exit_code if exit_code is not None else (-signal if signal else NO_EXIT_CODE)
    ended = _how_it_ended(exit_code, signal)
    if timed_out:
        limit = f" of {timeout_seconds:g} s" if timeout_seconds is not None else ""
        message = f"ran past its timeout{limit}, so its process group was killed; the job {ended}"
        return RunFailed(FailureKind.TIMEOUT, message + _tail(log_tail), code, duration)
    try:
        result = parse_result(result_bytes, requested)
    except InvalidJobResult as exc:
        return RunFailed(FailureKind.BAD_RESULT, f"{exc} (the job {ended})", code, duration)
    if isinstance(result, ReportedFailure):
        kind = FailureKind.EXIT_NONZERO if result.retryable else FailureKind.PERMANENT
        return RunFailed(kind, result.message, code, duration)
    if isinstance(result, ReportedMissing):
        return RunMissingDeps(result.missing, duration, result.built)
    if isinstance(result, ReportedOutputs):
        failed = result.failed
        if exit_code != 0:
            # Outputs it said nothing about were not necessarily built: the job crashed or
            # gave up on them, so they fail as a non-zero exit would (retryable). Those it
            # listed as built, it built.
            named = {f.partition_ref for f in failed} | {m.partition_ref for m in result.missing}
            named |= set(result.built)
            message = f"the job {ended} without reporting this output" + _tail(log_tail)
            failed += tuple(
                OutputFailed(ref, FailureKind.EXIT_NONZERO, message)
                for ref in dict.fromkeys(requested)
                if ref not in named
            )
        return RunPartial(failed, result.missing, code, duration)
    if exit_code == 0:
        return RunSucceeded(duration)
    return RunFailed(FailureKind.EXIT_NONZERO, f"the job {ended}" + _tail(log_tail), code, duration)


def parse_result(data: bytes | None, requested: Sequence[PartitionRef]) -> JobResult:
    """Parse a result file; raise InvalidJobResult saying exactly what is wrong and where.

    None or blank data is no result. The data is one JSON object, or several, one per line.
    """
    if data is None:
        return None
    if len(data) > MAX_RESULT_BYTES:
        raise InvalidJobResult(
            f"result file is larger than the limit of {MAX_RESULT_BYTES} bytes; "
            "report missing dependencies or a failure, not data"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJobResult(
            f"result file is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    if not text.strip():
        return None
    documents = _documents(text)
    missing: dict[PartitionRef, list[PartitionRef]] = {}
    failure: ReportedFailure | None = None
    failed: dict[PartitionRef, OutputFailed] = {}
    built: dict[PartitionRef, str] = {}  # -> where it was listed
    for where, document in documents:
        found_missing, found_failure, found_failed, found_built = _read_document(
            document, where, requested
        )
        for ref in found_built:
            built.setdefault(ref, where)
        for output, inputs in found_missing:
            merged = missing.setdefault(output, [])
            merged.extend(ref for ref in inputs if ref not in merged)
        if found_failure is not None and failure is None:
            failure = found_failure
        for output_failed in found_failed:
            failed.setdefault(output_failed.partition_ref, output_failed)
    if failure is not None:
        return failure
    for ref, where in built.items():
        also = "failed" if ref in failed else "missing inputs" if ref in missing else ""
        if also:
            raise InvalidJobResult(
                f"{where}: 'built' lists {_shown(ref)}, which the result also reports as "
                f"{also}; an output is built, lacks inputs, or failed"
            )
    if failed:
        return ReportedOutputs(
            tuple(failed.values()),
            tuple(
                MissingDeps(output, tuple(inputs))
                for output, inputs in missing.items()
                if output not in failed
            ),
            tuple(built),
        )
    if missing:
        return ReportedMissing(
            tuple(MissingDeps(output, tuple(inputs)) for output, inputs in missing.items()),
            tuple(built),
        )
    if built:
        left = [ref for ref in dict.fromkeys(requested) if ref not in built]
        if left:
            where = next(iter(built.values()))
            raise InvalidJobResult(
                f"{where}: 'built' alone leaves out {_listed(left)}; when every output was "
                "built write no result, otherwise report what the others lack ('missing') "
                "or why they failed ('failed')"
            )
    return None


def _documents(text: str) -> list[tuple[str, object]]:
    """The JSON documents in a result file, each with where it is (for messages)."""
    try:
        return [("result file", _loads(text))]
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise InvalidJobResult(
                f"result file is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    documents: list[tuple[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"result file line {number}"
        try:
            documents.append((where, _loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidJobResult(
                f"{where} is not valid JSON: {exc.msg} at column {exc.colno} "
                "(a result file holds one JSON object, or several, one per line)"
            ) from None
    return documents


def _loads(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise InvalidJobResult("result file is nested too deeply to be a job result") from None


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidJobResult(f"result file repeats the key {_shown(key)} in one object")
        seen[key] = value
    return seen


def _read_document(
    document: object, where: str, requested: Sequence[PartitionRef]
) -> tuple[
    list[tuple[PartitionRef, list[PartitionRef]]],
    ReportedFailure | None,
    list[OutputFailed],
    list[PartitionRef],
]:
    if not isinstance(document, dict):
        raise InvalidJobResult(f"{where} must be a JSON object, not {_json_type(document)}")
    unknown = sorted(set(document) - {"missing", "failed", "built"})
    if unknown:
        raise InvalidJobResult(
            f"{where} has the unknown key {_shown(unknown[0])}; "
            "a result has only 'missing', 'failed' and 'built'"
        )
    missing = _read_missing(document["missing"], where, requested) if "missing" in document else []
    built = _read_built(document["built"], where, requested) if "built" in document else []
    if "failed" not in document:
        return missing, None, [], built
    value = document["failed"]
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return missing, None, _read_failed_outputs(value, where, requested), built
    return missing, _read_failed(value, where, requested), [], built


def _read_missing(
    value: object, where: str, requested: Sequence[PartitionRef]
) -> list[tuple[PartitionRef, list[PartitionRef]]]:
    if not isinstance(value, dict):
        raise InvalidJobResult(
            f"{where}: 'missing' must be an object mapping each output ref to the list of "
            f"input refs it lacks, not {_json_type(value)}"
        )
    if not value:
        raise InvalidJobResult(
            f"{where}: 'missing' is empty; when every partition was built, write no result"
        )
    out: list[tuple[PartitionRef, list[PartitionRef]]] = []
    for raw_output, raw_inputs in value.items():
        try:
            output = parse_ref(raw_output)
        except InvalidPartitionRef as exc:
            raise InvalidJobResult(f"{where}: 'missing' has a bad output ref: {exc}") from None
        if output not in requested:
            raise InvalidJobResult(
                f"{where}: 'missing' names the output {_shown(output)}, which this run was "
                f"not asked to build (it was asked for {_listed(requested)})"
            )
        at = f"{where}: missing[{_shown(output)}]"
        if not isinstance(raw_inputs, list):
            raise InvalidJobResult(
                f"{at} must be a list of input refs, not {_json_type(raw_inputs)}"
            )
        if not raw_inputs:
            raise InvalidJobResult(
                f"{at} is empty; list the inputs it lacks, or leave {_shown(output)} out"
            )
        out.append((output, _refs(raw_inputs, at)))
    return out


def _refs(values: list[object], at: str) -> list[PartitionRef]:
    """The refs of a JSON list, each once, in order; ``at[i]: why`` for a bad one."""
    refs: list[PartitionRef] = []
    for index, raw in enumerate(values):
        try:
            ref = parse_ref(raw)
        except InvalidPartitionRef as exc:
            raise InvalidJobResult(f"{at}[{index}]: {exc}") from None
        if ref not in refs:
            refs.append(ref)
    return refs


def _read_built(value: object, where: str, requested: Sequence[PartitionRef]) -> list[PartitionRef]:
    """``"built": [OUTPUT REF, ...]``: outputs of this run that the job built."""
    if not isinstance(value, list):
        raise InvalidJobResult(
            f"{where}: 'built' must be a list of the output refs this run built, "
            f"not {_json_type(value)}"
        )
    refs = _refs(value, f"{where}: built")
    for ref in refs:
        if ref not in requested:
            raise InvalidJobResult(
                f"{where}: 'built' lists {_shown(ref)}, which this run was not asked to "
                f"build (it was asked for {_listed(requested)})"
            )
    return refs


def _read_failed(value: object, where: str, requested: Sequence[PartitionRef]) -> ReportedFailure:
    shape = 'like {"message": "...", "retryable": false}'
    if not isinstance(value, dict):
        raise InvalidJobResult(
            f"{where}: 'failed' must be an object {shape}, not {_json_type(value)}"
        )
    nested = [key for key, entry in value.items() if isinstance(entry, dict)]
    if nested:
        raise InvalidJobResult(
            f"{where}: 'failed' mixes the whole-run form {shape} with a per-output entry "
            f"for {_shown(nested[0])}; per output, every value is such an object"
        )
    unknown = sorted(set(value) - {"message", "retryable"})
    for key in unknown:
        if key in requested:  # meant per output, with a value that is not an object
            raise InvalidJobResult(
                f"{where}: failed[{_shown(key)}] must be an object {shape}, "
                f"not {_json_type(value[key])}"
            )
    if unknown:
        raise InvalidJobResult(
            f"{where}: 'failed' has the unknown key {_shown(unknown[0])}; {shape}, "
            'or per output like {"OUTPUT REF": {"message": "...", "retryable": false}}'
        )
    message, retryable = _message_and_retryable(value, f"{where}: failed")
    return ReportedFailure(message, retryable)


def _read_failed_outputs(
    value: dict[str, object], where: str, requested: Sequence[PartitionRef]
) -> list[OutputFailed]:
    out: list[OutputFailed] = []
    for raw_output, entry in value.items():
        try:
            output = parse_ref(raw_output)
        except InvalidPartitionRef as exc:
            raise InvalidJobResult(f"{where}: 'failed' has a bad output ref: {exc}") from None
        if output not in requested:
            raise InvalidJobResult(
                f"{where}: 'failed' names the output {_shown(output)}, which this run was "
                f"not asked to build (it was asked for {_listed(requested)})"
            )
        at = f"{where}: failed[{_shown(output)}]"
        assert isinstance(entry, dict)  # the caller checked: every value is an object
        unknown = sorted(set(entry) - {"message", "retryable"})
        if unknown:
            raise InvalidJobResult(
                f'{at} has the unknown key {_shown(unknown[0])}; like {{"message": "...", '
                '"retryable": false}'
            )
        message, retryable = _message_and_retryable(entry, at)
        kind = FailureKind.EXIT_NONZERO if retryable else FailureKind.PERMANENT
        out.append(OutputFailed(output, kind, message))
    return out


def _message_and_retryable(value: dict[str, object], at: str) -> tuple[str, bool]:
    message = value.get("message", "")
    if not isinstance(message, str):
        raise InvalidJobResult(f"{at}.message must be a string, not {_json_type(message)}")
    retryable = value.get("retryable", False)
    if not isinstance(retryable, bool):
        raise InvalidJobResult(f"{at}.retryable must be true or false, not {_json_type(retryable)}")
    message = message.strip() or "the job reported a failure without a message"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 3] + "..."
    return message, retryable


def _how_it_ended(exit_code: int | None, signal: int | None) -> str:
    if exit_code is not None:
        return f"exited with code {exit_code}"
    if signal:
        try:
            name = signals.Signals(signal).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {signal} ({name})"
    return "ended without an exit status"


def _tail(log_tail: str) -> str:
    tail = log_tail.strip("\n")
    if not tail.strip():
        return "; its log is empty"
    if len(tail) > _MAX_MESSAGE_CHARS:
        tail = "..." + tail[-(_MAX_MESSAGE_CHARS - 3) :]
    return f"; last lines of its log:\n{tail}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _shown(text: str) -> str:
    return repr(text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "...")


def _listed(refs: Sequence[PartitionRef]) -> str:
    shown = ", ".join(_shown(r) for r in refs[:5])
    return shown + (f" and {len(refs) - 5} more" if len(refs) > 5 else "")
