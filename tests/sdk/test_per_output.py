"""sdk.run / run_batch report each output on its own: one ref's failure fails that ref only
(issue 16 row 2), read back through the executor's parser."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from databuild import sdk
from databuild.core.events import FailureKind, MissingDeps
from databuild.core.outcomes import OutputFailed
from databuild.core.refs import PartitionRef
from databuild.executors.protocol import ReportedFailure, ReportedOutputs, parse_result

from .conftest import LivenessStub

EAST = "trips/region=east"
WEST = "trips/region=west"
NORTH = "trips/region=north"
REFS = [EAST, WEST, NORTH]


@pytest.fixture
def result_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "result.json"
    path.parent.mkdir()
    monkeypatch.setenv("DATABUILD_RESULT_PATH", str(path))
    return path


def exit_code_of(run: Callable[[], object]) -> int | str | None:
    with pytest.raises(SystemExit) as exited:
        run()
    return exited.value.code


def parsed(path: Path) -> object:
    return parse_result(path.read_bytes(), [PartitionRef(r) for r in REFS])


def test_fail_of_one_ref_fails_that_ref_and_run_goes_on(result_path: Path) -> None:
    built: list[str] = []

    def build(ref: str) -> None:
        if ref == WEST:
            sdk.fail("no file for west")
        built.append(ref)

    assert exit_code_of(lambda: sdk.run(build, REFS)) == 0
    assert built == [EAST, NORTH]
    assert parsed(result_path) == ReportedOutputs(
        failed=(OutputFailed(PartitionRef(WEST), FailureKind.PERMANENT, "no file for west"),),
        missing=(),
        built=(PartitionRef(EAST), PartitionRef(NORTH)),
    )
    assert json.loads(result_path.read_text()) == {
        "failed": {WEST: {"message": "no file for west", "retryable": False}},
        "built": [EAST, NORTH],
    }


def test_an_exception_in_one_ref_is_that_refs_retryable_failure(
    result_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(ref: str) -> None:
        if ref == EAST:
            int("not a number")
        if ref == NORTH:
            sdk.fail("bad header", retryable=True)

    assert exit_code_of(lambda: sdk.run(build, REFS)) == 0
    result = parsed(result_path)
    assert isinstance(result, ReportedOutputs)
    east, north = result.failed
    assert east.partition_ref == EAST and east.kind is FailureKind.EXIT_NONZERO
    assert east.message.startswith("ValueError: invalid literal for int()")
    assert "test_per_output.py:" in east.message and "in build" in east.message
    assert north == OutputFailed(PartitionRef(NORTH), FailureKind.EXIT_NONZERO, "bad header")
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert f"databuild: {NORTH} failed: bad header" in err


def test_one_ref_failing_is_still_a_whole_run_failure(result_path: Path) -> None:
    def build(ref: str) -> None:
        sdk.fail("broken")

    assert exit_code_of(lambda: sdk.run(build, [EAST])) == sdk.EXIT_FAILED
    assert parse_result(result_path.read_bytes(), [PartitionRef(EAST)]) == ReportedFailure(
        "broken", False
    )


def test_a_failed_ref_that_also_lacked_inputs_is_reported_failed_only(
    liveness: LivenessStub, monkeypatch: pytest.MonkeyPatch, result_path: Path
) -> None:
    monkeypatch.setenv("DATABUILD_GRAPH_URL", liveness.url)

    def build_all(refs: list[str]) -> None:
        for ref in refs:
            if not sdk.require_for(ref, f"raw/{ref}"):
                if ref == WEST:
                    sdk.fail_for(ref, "and it is broken")
                continue
        sdk.fail_for(NORTH, "north twice")
        sdk.fail_for(NORTH, "the first failure stands, not this one")

    assert exit_code_of(lambda: sdk.run_batch(build_all, REFS)) == 0
    assert parsed(result_path) == ReportedOutputs(
        failed=(
            OutputFailed(PartitionRef(WEST), FailureKind.PERMANENT, "and it is broken"),
            OutputFailed(PartitionRef(NORTH), FailureKind.PERMANENT, "north twice"),
        ),
        missing=(MissingDeps(PartitionRef(EAST), (PartitionRef(f"raw/{EAST}"),)),),
    )


def test_an_sdk_problem_in_one_ref_still_fails_the_whole_run(result_path: Path) -> None:
    def build(ref: str) -> None:
        if ref == WEST:
            sdk.require("raw/x")  # DATABUILD_GRAPH_URL is not set: cannot talk to DataBuild

    assert exit_code_of(lambda: sdk.run(build, REFS)) == sdk.EXIT_SDK_ERROR
    assert not result_path.exists()


def test_run_by_hand_a_per_ref_failure_exits_1_saying_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def build(ref: str) -> None:
        if ref == NORTH:
            sdk.fail("no file for north")

    assert exit_code_of(lambda: sdk.run(build, REFS)) == sdk.EXIT_FAILED
    assert f"databuild: {NORTH} failed: no file for north" in capsys.readouterr().err


def test_fail_for_outside_a_run_or_for_another_ref_is_an_sdk_error(result_path: Path) -> None:
    with pytest.raises(sdk.SdkError, match=r"inside sdk\.run_batch"):
        sdk.fail_for(EAST, "x")

    def build_all(refs: list[str]) -> None:
        sdk.fail_for("trips/region=south", "x")

    assert exit_code_of(lambda: sdk.run_batch(build_all, REFS)) == sdk.EXIT_SDK_ERROR
