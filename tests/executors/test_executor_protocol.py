"""outcome_from / parse_result: how an ended job becomes a RunOutcome, garbage included."""

from __future__ import annotations

import json
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databuild.core.errors import InvalidJobResult
from databuild.core.events import FailureKind, MissingDeps
from databuild.core.outcomes import RunFailed, RunMissingDeps, RunOutcome, RunSucceeded
from databuild.core.refs import PartitionRef
from databuild.executors.protocol import (
    MAX_RESULT_BYTES,
    ReportedFailure,
    ReportedMissing,
    outcome_from,
    parse_result,
)

OUT_A = PartitionRef("daily/date=2024-01-01")
OUT_B = PartitionRef("daily/date=2024-01-02")
RAW_A = PartitionRef("raw/date=2024-01-01")
RAW_B = PartitionRef("raw/date=2024-01-02")
REQUESTED = (OUT_A, OUT_B)


def ended(
    exit_code: int | None = 0,
    result: bytes | str | None = None,
    *,
    signal_number: int | None = None,
    timed_out: bool = False,
    log_tail: str = "",
) -> RunOutcome:
    data = result.encode() if isinstance(result, str) else result
    return outcome_from(exit_code, signal_number, timed_out, data, REQUESTED, 1.5, log_tail)


def failure(outcome: RunOutcome) -> RunFailed:
    assert isinstance(outcome, RunFailed), outcome
    return outcome


def bad_result_message(result: bytes | str, exit_code: int = 0) -> str:
    outcome = failure(ended(exit_code, result))
    assert outcome.kind is FailureKind.BAD_RESULT
    return outcome.message


# --- success and plain exits -------------------------------------------------------------


@pytest.mark.parametrize("result", [None, b"", b"  \n", "{}", "{}\n{}\n"])
def test_exit_zero_without_a_result_is_success(result: bytes | str | None) -> None:
    assert ended(0, result) == RunSucceeded(1.5)


def test_non_zero_exit_names_the_code_and_the_log_tail() -> None:
    outcome = failure(ended(3, log_tail="reading input\nKeyError: 'amount'\n"))
    assert outcome.kind is FailureKind.EXIT_NONZERO
    assert outcome.exit_code == 3
    assert "exited with code 3" in outcome.message
    assert "KeyError: 'amount'" in outcome.message
    assert outcome.duration_seconds == 1.5


def test_non_zero_exit_with_an_empty_result_object_is_still_a_failure() -> None:
    assert failure(ended(1, "{}")).kind is FailureKind.EXIT_NONZERO


def test_an_empty_log_is_said_to_be_empty() -> None:
    assert "log is empty" in failure(ended(2)).message


def test_a_signal_is_named() -> None:
    outcome = failure(ended(None, signal_number=signal.SIGKILL))
    assert outcome.kind is FailureKind.EXIT_NONZERO
    assert outcome.exit_code == -signal.SIGKILL
    assert "signal 9 (SIGKILL)" in outcome.message


def test_an_unknown_signal_number_does_not_break_the_message() -> None:
    outcome = failure(ended(None, signal_number=200))
    assert "signal 200" in outcome.message


def test_no_exit_status_at_all_is_a_failure() -> None:
    outcome = failure(ended(None))
    assert outcome.kind is FailureKind.EXIT_NONZERO
    assert outcome.exit_code == -1


def test_a_very_long_log_tail_is_cut_from_the_front() -> None:
    outcome = failure(ended(1, log_tail="x" * 10_000 + "THE END"))
    assert outcome.message.endswith("THE END")
    assert len(outcome.message) < 2_500


# --- timeouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("result", [None, '{"missing": {"daily/date=2024-01-01": ["raw/x"]}}'])
def test_timeout_wins_over_anything_written(result: str | None) -> None:
    data = None if result is None else result.encode()
    outcome = outcome_from(
        None, signal.SIGTERM, True, data, REQUESTED, 9.0, "last words", timeout_seconds=0.5
    )
    assert isinstance(outcome, RunFailed)
    assert outcome.kind is FailureKind.TIMEOUT
    assert "timeout of 0.5 s" in outcome.message
    assert "SIGTERM" in outcome.message
    assert "last words" in outcome.message


# --- missing dependencies ----------------------------------------------------------------


def test_missing_deps_become_the_outcome() -> None:
    result = {"missing": {OUT_A: [RAW_A], OUT_B: [RAW_B, RAW_A]}}
    assert ended(0, json.dumps(result)) == RunMissingDeps(
        (MissingDeps(OUT_A, (RAW_A,)), MissingDeps(OUT_B, (RAW_B, RAW_A))), 1.5
    )


@pytest.mark.parametrize("exit_code", [1, 2, 127])
def test_missing_deps_count_whatever_the_exit_code(exit_code: int) -> None:
    result = json.dumps({"missing": {OUT_A: [RAW_A]}})
    assert isinstance(ended(exit_code, result), RunMissingDeps)


def test_missing_deps_count_even_when_a_signal_ended_the_job() -> None:
    result = json.dumps({"missing": {OUT_A: [RAW_A]}}).encode()
    outcome = outcome_from(None, 9, False, result, REQUESTED, 1.0, "")
    assert isinstance(outcome, RunMissingDeps)


def test_json_lines_are_merged_per_output_without_duplicates() -> None:
    lines = [
        {"missing": {OUT_A: [RAW_A]}},
        {"missing": {OUT_B: [RAW_B]}},
        {"missing": {OUT_A: [RAW_A, RAW_B]}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    assert parse_result(text.encode(), REQUESTED) == ReportedMissing(
        (MissingDeps(OUT_A, (RAW_A, RAW_B)), MissingDeps(OUT_B, (RAW_B,)))
    )


def test_the_shell_one_liner_output_parses() -> None:
    # What docs/jobs.md's printf appends, twice (a loop over two outputs).
    text = (
        '{"missing": {"daily/date=2024-01-01": ["raw/date=2024-01-01"]}}\n'
        '{"missing": {"daily/date=2024-01-02": ["raw/date=2024-01-02"]}}\n'
    )
    result = parse_result(text.encode(), REQUESTED)
    assert result == ReportedMissing((MissingDeps(OUT_A, (RAW_A,)), MissingDeps(OUT_B, (RAW_B,))))


def test_a_pretty_printed_single_document_is_fine() -> None:
    text = json.dumps({"missing": {OUT_A: [RAW_A]}}, indent=4)
    expected = ReportedMissing((MissingDeps(OUT_A, (RAW_A,)),))
    assert parse_result(text.encode(), REQUESTED) == expected


def test_inputs_with_shell_and_html_characters_are_just_refs() -> None:
    odd = "raw/q=$(rm -rf x);echo <b>&amp;</b>"
    result = json.dumps({"missing": {OUT_A: [odd]}})
    assert parse_result(result.encode(), REQUESTED) == ReportedMissing(
        (MissingDeps(OUT_A, (PartitionRef(odd),)),)
    )


# --- failures the job classifies ---------------------------------------------------------


def test_failed_not_retryable_is_permanent() -> None:
    outcome = failure(ended(1, '{"failed": {"message": "bad header", "retryable": false}}'))
    assert outcome.kind is FailureKind.PERMANENT
    assert outcome.message == "bad header"
    assert outcome.exit_code == 1


def test_failed_retryable_is_retried_like_a_non_zero_exit() -> None:
    outcome = failure(ended(0, '{"failed": {"message": "db busy", "retryable": true}}'))
    assert outcome.kind is FailureKind.EXIT_NONZERO
    assert outcome.message == "db busy"


def test_failed_defaults_to_permanent_and_gets_a_message() -> None:
    outcome = failure(ended(0, '{"failed": {}}'))
    assert outcome.kind is FailureKind.PERMANENT
    assert "without a message" in outcome.message


def test_a_huge_failure_message_is_shortened() -> None:
    outcome = failure(ended(1, json.dumps({"failed": {"message": "m" * 100_000}})))
    assert len(outcome.message) <= 2000


def test_failed_wins_over_missing() -> None:
    text = '{"missing": {"daily/date=2024-01-01": ["raw/a"]}}\n{"failed": {"message": "no"}}\n'
    assert parse_result(text.encode(), REQUESTED) == ReportedFailure("no", False)
    both = '{"missing": {"daily/date=2024-01-01": ["raw/a"]}, "failed": {"message": "no"}}'
    assert parse_result(both.encode(), REQUESTED) == ReportedFailure("no", False)


# --- malformed results -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("not json", "not valid JSON: Expecting value at line 1 column 1"),
        ('{"missing": ', "not valid JSON"),
        ("[]", "must be a JSON object, not a list"),
        ('"missing"', "must be a JSON object, not a string"),
        ("null", "must be a JSON object, not null"),
        ("42", "must be a JSON object, not a number"),
        ('{"mising": {}}', "unknown key 'mising'"),
        ('{"missing": []}', "'missing' must be an object mapping each output ref"),
        ('{"missing": {}}', "'missing' is empty"),
        ('{"missing": {"daily/date=2024-01-01": []}}', "missing['daily/date=2024-01-01'] is empty"),
        (
            '{"missing": {"daily/date=2024-01-01": "raw/a"}}',
            "missing['daily/date=2024-01-01'] must be a list of input refs, not a string",
        ),
        (
            '{"missing": {"daily/date=2024-01-01": ["raw/a", ""]}}',
            "missing['daily/date=2024-01-01'][1]: invalid partition ref '': must not be empty",
        ),
        (
            '{"missing": {"daily/date=2024-01-01": [7]}}',
            "missing['daily/date=2024-01-01'][0]: invalid partition ref 7: must be a string",
        ),
        (
            '{"missing": {"daily/date=2024-01-01": ["../etc/passwd"]}}',
            "must not contain a '..' path segment",
        ),
        (
            '{"missing": {"daily/date=2024-01-01": ["raw/\\u0000"]}}',
            "contains a NUL character",
        ),
        ('{"missing": {"/abs": ["raw/a"]}}', "bad output ref: invalid partition ref '/abs'"),
        (
            '{"missing": {"weekly/week=1": ["raw/a"]}}',
            "names the output 'weekly/week=1', which this run was not asked to build "
            "(it was asked for 'daily/date=2024-01-01', 'daily/date=2024-01-02')",
        ),
        ('{"failed": "boom"}', "'failed' must be an object like"),
        ('{"failed": {"msg": "x"}}', "'failed' has the unknown key 'msg'"),
        ('{"failed": {"message": 3}}', "failed.message must be a string, not a number"),
        (
            '{"failed": {"message": "x", "retryable": "yes"}}',
            "failed.retryable must be true or false, not a string",
        ),
        ('{"missing": {"a": ["b"]}, "missing": {}}', "repeats the key 'missing'"),
        ('{"missing": {}}\ngarbage\n', "result file line 2 is not valid JSON"),
        ('{}\n{"missing": []}\n', "result file line 2: 'missing' must be an object"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_results_say_what_is_wrong_and_where(result: str, expected: str) -> None:
    assert expected in bad_result_message(result)


def test_a_bad_result_is_bad_whatever_the_exit_code() -> None:
    message = bad_result_message("garbage", exit_code=4)
    assert "not valid JSON" in message
    assert "exited with code 4" in message


def test_bytes_that_are_not_utf8_are_a_bad_result() -> None:
    assert "not UTF-8: byte 0xff at offset 2" in bad_result_message(b'{"\xff": 1}')


def test_a_result_over_the_limit_is_a_bad_result() -> None:
    padding = " " * MAX_RESULT_BYTES
    message = bad_result_message(padding + json.dumps({"missing": {OUT_A: [RAW_A]}}))
    assert f"larger than the limit of {MAX_RESULT_BYTES} bytes" in message


def test_a_result_just_under_the_limit_is_read() -> None:
    body = json.dumps({"missing": {OUT_A: [RAW_A]}})
    padded = body + " " * (MAX_RESULT_BYTES - len(body))
    assert isinstance(ended(0, padded), RunMissingDeps)


def test_a_long_output_ref_is_shortened_in_messages() -> None:
    long_ref = "x/" + "y" * 400
    message = bad_result_message(json.dumps({"missing": {long_ref: ["raw/a"]}}))
    assert long_ref not in message
    assert "..." in message


def test_parse_result_raises_invalid_job_result() -> None:
    with pytest.raises(InvalidJobResult):
        parse_result(b"{", REQUESTED)


# --- garbage never escapes as an exception -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.binary(max_size=2000), st.integers(-300, 300) | st.none())
def test_any_bytes_give_an_outcome(data: bytes, exit_code: int | None) -> None:
    outcome = outcome_from(exit_code, None, False, data, REQUESTED, 0.1, "")
    assert isinstance(outcome, RunSucceeded | RunFailed | RunMissingDeps)


@given(json_values)
def test_any_json_gives_an_outcome(value: object) -> None:
    data = json.dumps(value).encode()
    outcome = outcome_from(0, None, False, data, REQUESTED, 0.1, "")
    assert isinstance(outcome, RunSucceeded | RunFailed | RunMissingDeps)


@given(
    st.dictionaries(
        st.sampled_from(["missing", "failed", "other"]),
        st.dictionaries(st.sampled_from([*REQUESTED, "message", "retryable"]), json_values),
    )
)
def test_near_miss_shapes_give_an_outcome(value: dict[str, object]) -> None:
    outcome = outcome_from(0, None, False, json.dumps(value).encode(), REQUESTED, 0.1, "")
    if isinstance(outcome, RunMissingDeps):
        assert all(m.partition_ref in REQUESTED and m.missing_refs for m in outcome.missing)
