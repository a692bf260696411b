"""Per-output failures in the result file (issue 16 row 2): the two forms of ``failed``, how
lines merge, what an exit code means for the outputs a job names nowhere, and bad entries."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databuild.core.events import FailureKind, MissingDeps
from databuild.core.outcomes import (
    OutputFailed,
    RunFailed,
    RunMissingDeps,
    RunPartial,
    RunSucceeded,
)
from databuild.core.refs import PartitionRef
from databuild.executors.protocol import ReportedOutputs, outcome_from, parse_result

EAST = PartitionRef("trips/region=east")
WEST = PartitionRef("trips/region=west")
NORTH = PartitionRef("trips/region=north")
RAW_NORTH = PartitionRef("raw/region=north")
REQUESTED = (EAST, WEST, NORTH)


def ended(exit_code: int | None, result: str, log_tail: str = "") -> object:
    return outcome_from(exit_code, None, False, result.encode(), REQUESTED, 2.0, log_tail)


def line(**document: object) -> str:
    return json.dumps(document) + "\n"


def test_a_per_output_failure_fails_that_output_only() -> None:
    result = line(failed={NORTH: {"message": "no file for north", "retryable": False}})
    assert ended(0, result) == RunPartial(
        failed=(OutputFailed(NORTH, FailureKind.PERMANENT, "no file for north"),),
        missing=(),
        exit_code=0,
        duration_seconds=2.0,
    )


def test_retryable_defaults_to_false_and_true_is_retried_like_a_non_zero_exit() -> None:
    result = line(failed={EAST: {"message": "busy", "retryable": True}, WEST: {}})
    outcome = ended(0, result)
    assert isinstance(outcome, RunPartial)
    assert outcome.failed == (
        OutputFailed(EAST, FailureKind.EXIT_NONZERO, "busy"),
        OutputFailed(WEST, FailureKind.PERMANENT, "the job reported a failure without a message"),
    )


def test_lines_merge_per_output_the_first_failure_stands_and_wins_over_missing() -> None:
    result = (
        line(missing={WEST: [RAW_NORTH], NORTH: [RAW_NORTH]})
        + line(failed={NORTH: {"message": "first"}})
        + line(failed={NORTH: {"message": "second"}})
    )
    assert parse_result(result.encode(), REQUESTED) == ReportedOutputs(
        failed=(OutputFailed(NORTH, FailureKind.PERMANENT, "first"),),
        missing=(MissingDeps(WEST, (RAW_NORTH,)),),
    )


def test_a_whole_run_failure_wins_over_per_output_entries() -> None:
    result = line(failed={NORTH: {"message": "north"}}) + line(failed={"message": "all"})
    outcome = ended(1, result)
    assert isinstance(outcome, RunFailed)
    assert (outcome.kind, outcome.message) == (FailureKind.PERMANENT, "all")


def test_an_old_result_file_without_per_output_failures_means_what_it_meant() -> None:
    assert ended(0, line(missing={NORTH: [RAW_NORTH]})) == RunMissingDeps(
        (MissingDeps(NORTH, (RAW_NORTH,)),), 2.0
    )
    old = ended(3, line(failed={"message": "bad input", "retryable": True}))
    assert isinstance(old, RunFailed)
    assert (old.kind, old.message, old.exit_code) == (FailureKind.EXIT_NONZERO, "bad input", 3)
    empty = ended(1, line(failed={}))
    assert isinstance(empty, RunFailed) and empty.kind is FailureKind.PERMANENT


def test_after_a_non_zero_exit_the_outputs_named_nowhere_fail_retryably() -> None:
    result = line(failed={NORTH: {"message": "no file"}}) + line(missing={WEST: [RAW_NORTH]})
    outcome = ended(1, result, log_tail="Traceback ...\nKeyError: 'x'\n")
    assert isinstance(outcome, RunPartial)
    north, east = outcome.failed
    assert north == OutputFailed(NORTH, FailureKind.PERMANENT, "no file")
    assert east.partition_ref == EAST and east.kind is FailureKind.EXIT_NONZERO
    assert east.message.startswith("the job exited with code 1 without reporting this output")
    assert "KeyError: 'x'" in east.message
    assert outcome.missing == (MissingDeps(WEST, (RAW_NORTH,)),)
    assert outcome.exit_code == 1


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        (
            {"trips/region=south": {"message": "x"}},
            "result file: 'failed' names the output 'trips/region=south', which this run was "
            "not asked to build (it was asked for 'trips/region=east', 'trips/region=west', "
            "'trips/region=north')",
        ),
        (
            {" bad": {"message": "x"}},
            "result file: 'failed' has a bad output ref: invalid partition ref ' bad': "
            "must not start or end with white space",
        ),
        (
            {NORTH: {"message": 3}},
            "result file: failed['trips/region=north'].message must be a string, not a number",
        ),
        (
            {NORTH: {"message": "x", "retryable": "yes"}},
            "result file: failed['trips/region=north'].retryable must be true or false, "
            "not a string",
        ),
        (
            {NORTH: {"message": "x", "retry": True}},
            "result file: failed['trips/region=north'] has the unknown key 'retry'",
        ),
        (
            {"message": "x", NORTH: {"message": "y"}},
            "result file: 'failed' mixes the whole-run form",
        ),
    ],
)
def test_a_bad_per_output_entry_is_a_bad_result_naming_the_file_and_the_field(
    failed: dict[str, object], expected: str
) -> None:
    outcome = ended(0, json.dumps({"failed": failed}))
    assert isinstance(outcome, RunFailed)
    assert outcome.kind is FailureKind.BAD_RESULT
    assert outcome.message.startswith(expected), outcome.message


def test_a_bad_entry_on_a_later_line_names_the_line() -> None:
    result = line(failed={EAST: {"message": "x"}}) + line(failed={NORTH: []})
    outcome = ended(0, result)
    assert isinstance(outcome, RunFailed)
    assert outcome.message.startswith(
        "result file line 2: failed['trips/region=north'] must be an object like "
        '{"message": "...", "retryable": false}, not a list'
    ), outcome.message


# --- the merge, as a property ----------------------------------------------------------

FATES = st.sampled_from(["built", "missing", "failed", "failed_retryable"])


@given(
    fates=st.lists(FATES, min_size=3, max_size=3),
    order=st.permutations(range(3)),
    exit_code=st.sampled_from([0, 1]),
)
def test_any_mix_of_outputs_gives_each_output_exactly_one_fate(
    fates: list[str], order: list[int], exit_code: int
) -> None:
    """One line per reported output, in any order: each requested output ends up in
    exactly one of failed / missing / built, and the one its line says."""
    lines = []
    for index in order:
        ref, fate = REQUESTED[index], fates[index]
        if fate == "missing":
            lines.append(line(missing={ref: [f"raw/{ref}"]}))
        elif fate.startswith("failed"):
            lines.append(
                line(failed={ref: {"message": f"{ref} broke", "retryable": fate != "failed"}})
            )
    outcome = ended(exit_code, "".join(lines))
    if not any(fate.startswith("failed") for fate in fates):  # the protocol as it was
        if "missing" in fates:
            assert isinstance(outcome, RunMissingDeps)
        else:
            assert isinstance(outcome, RunFailed if exit_code else RunSucceeded)
        return
    assert isinstance(outcome, RunPartial)
    failed = {f.partition_ref: f for f in getattr(outcome, "failed", ())}
    missing = {m.partition_ref for m in getattr(outcome, "missing", ())}
    assert not failed.keys() & missing
    for ref, fate in zip(REQUESTED, fates, strict=True):
        if fate == "missing":
            assert ref in missing
        elif fate == "failed":
            assert failed[ref].kind is FailureKind.PERMANENT
            assert failed[ref].message == f"{ref} broke"
        elif fate == "failed_retryable":
            assert failed[ref].kind is FailureKind.EXIT_NONZERO
        elif exit_code == 0:
            assert ref not in failed and ref not in missing  # built
        else:
            assert failed[ref].kind is FailureKind.EXIT_NONZERO  # exited 1, said nothing
            assert "without reporting this output" in failed[ref].message


# --- "built": the outputs a run built, beside those that lack inputs --------------------

DAYS = tuple(PartitionRef(f"daily/date=2024-01-0{d}") for d in (1, 2, 3))


def documented_built_example() -> str:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "jobs.md").read_text(encoding="utf-8")
    block = doc.split('```json title="built result.json"\n', 1)[1].split("```", 1)[0]
    return block


def test_the_documented_built_beside_missing_makes_two_live_and_the_third_waits() -> None:
    outcome = outcome_from(0, None, False, documented_built_example().encode(), DAYS, 1.0, "")
    assert outcome == RunMissingDeps(
        (MissingDeps(DAYS[2], (PartitionRef("raw/date=2024-01-03"),)),), 1.0, DAYS[:2]
    )
    # whatever the exit code: the job said it built them
    crashed = outcome_from(3, None, False, documented_built_example().encode(), DAYS, 1.0, "")
    assert isinstance(crashed, RunMissingDeps) and crashed.built == DAYS[:2]


def test_built_lines_merge_and_count_as_named_after_a_non_zero_exit() -> None:
    result = line(built=[EAST]) + line(failed={NORTH: {"message": "no file"}})
    outcome = ended(1, result)
    assert isinstance(outcome, RunPartial)
    # east said built: not failed; west named nowhere after exit 1: failed retryably
    assert {f.partition_ref for f in outcome.failed} == {NORTH, WEST}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            line(built="trips/region=east", missing={NORTH: [RAW_NORTH]}),
            "result file: 'built' must be a list of the output refs this run built, not a string",
        ),
        (
            line(built=["trips/region=south"], missing={NORTH: [RAW_NORTH]}),
            "result file: 'built' lists 'trips/region=south', which this run was not asked "
            "to build",
        ),
        (
            line(built=[EAST, ""], missing={NORTH: [RAW_NORTH]}),
            "result file: built[1]: invalid partition ref '': must not be empty",
        ),
        (
            line(missing={NORTH: [RAW_NORTH]}) + line(built=[EAST, NORTH]),
            "result file line 2: 'built' lists 'trips/region=north', which the result also "
            "reports as missing inputs",
        ),
        (
            line(built=[EAST], failed={EAST: {"message": "x"}}),
            "result file: 'built' lists 'trips/region=east', which the result also reports as "
            "failed",
        ),
        (
            line(built=[EAST, WEST]),
            "result file: 'built' alone leaves out 'trips/region=north'; when every output was "
            "built write no result",
        ),
    ],
)
def test_a_bad_built_list_is_a_bad_result_saying_what_is_wrong(result: str, expected: str) -> None:
    outcome = ended(0, result)
    assert isinstance(outcome, RunFailed)
    assert outcome.kind is FailureKind.BAD_RESULT
    assert outcome.message.startswith(expected), outcome.message


def test_built_naming_every_output_alone_is_a_success() -> None:
    assert ended(0, line(built=[EAST, WEST, NORTH])) == RunSucceeded(2.0)
