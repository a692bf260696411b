"""The job SDK: liveness queries, require, run/run_batch and the result files they write."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from databuild import sdk
from databuild.core.events import FailureKind, MissingDeps
from databuild.core.outcomes import OutputFailed
from databuild.core.refs import PartitionRef
from databuild.executors import protocol
from databuild.executors.protocol import (
    ReportedFailure,
    ReportedMissing,
    ReportedOutputs,
    parse_result,
)

from .conftest import LivenessStub

DAY_1 = "daily/date=2024-01-01"
DAY_2 = "daily/date=2024-01-02"
RAW_1 = "raw/date=2024-01-01"
RAW_2 = "raw/date=2024-01-02"


@pytest.fixture
def result_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run" / "result.json"
    path.parent.mkdir()
    monkeypatch.setenv("DATABUILD_RESULT_PATH", str(path))
    return path


@pytest.fixture
def graph(liveness: LivenessStub, monkeypatch: pytest.MonkeyPatch) -> LivenessStub:
    monkeypatch.setenv("DATABUILD_GRAPH_URL", liveness.url + "/")
    return liveness


def exit_code_of(run: Callable[[], object]) -> int | str | None:
    with pytest.raises(SystemExit) as exited:
        run()
    return exited.value.code


def result_of(path: Path, requested: list[str]) -> protocol.JobResult:
    """What the executor makes of the result file the SDK wrote."""
    data = path.read_bytes() if path.exists() else None
    return parse_result(data, [PartitionRef(r) for r in requested])


# --- liveness ----------------------------------------------------------------------------


def test_live_asks_once_for_many_refs(graph: LivenessStub) -> None:
    graph.statuses.update({RAW_1: "live", RAW_2: "building"})
    assert sdk.live([RAW_1, RAW_2, "raw/date=2024-01-03"]) == {
        RAW_1: True,
        RAW_2: False,
        "raw/date=2024-01-03": False,
    }
    assert graph.queries == [[RAW_1, RAW_2, "raw/date=2024-01-03"]]


def test_inputs_databuild_says_are_live_are_not_asked_about(
    graph: LivenessStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DATABUILD_LIVE_INPUTS (the hinted inputs live at dispatch, docs/jobs.md): a cold job
    whose inputs are all hinted asks nothing; the others are still asked, once."""
    monkeypatch.setenv("DATABUILD_RUN_ID", "r-live-inputs")
    monkeypatch.setenv("DATABUILD_LIVE_INPUTS", f"{RAW_1}\n{RAW_2}")
    assert sdk.live([RAW_1, RAW_2]) == {RAW_1: True, RAW_2: True}
    assert graph.queries == []
    assert sdk.live([RAW_1, "raw/date=2024-01-03"]) == {RAW_1: True, "raw/date=2024-01-03": False}
    assert graph.queries == [["raw/date=2024-01-03"]]


@pytest.mark.parametrize("status", ["absent", "building", "waiting", "backoff", "failed"])
def test_only_live_is_live(graph: LivenessStub, status: str) -> None:
    graph.statuses[RAW_1] = status
    assert sdk.live([RAW_1]) == {RAW_1: False}


def test_long_lists_are_chunked_into_short_urls(graph: LivenessStub) -> None:
    refs = [f"raw/source=some-rather-long-source-name/date={i:06d}" for i in range(1000)]
    graph.statuses.update({ref: "live" for ref in refs[::2]})
    answer = sdk.live(refs)
    assert answer == {ref: i % 2 == 0 for i, ref in enumerate(refs)}
    assert len(graph.queries) > 1
    assert [ref for query in graph.queries for ref in query] == refs
    assert all(len(line) <= 4100 for line in graph.request_lines)


def test_refs_with_url_and_shell_characters_arrive_verbatim(graph: LivenessStub) -> None:
    odd = ["a/b=x&ref=y", "c/d=%20+ #frag", "e/f=$(rm -rf x);echo", "g/h=<b>ü</b>"]
    graph.statuses[odd[0]] = "live"
    assert sdk.live(odd) == {odd[0]: True, odd[1]: False, odd[2]: False, odd[3]: False}
    assert graph.queries == [odd]


def test_duplicate_refs_are_asked_once(graph: LivenessStub) -> None:
    assert sdk.live([RAW_1, RAW_1]) == {RAW_1: False}
    assert graph.queries == [[RAW_1]]


def test_without_a_graph_url_the_job_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sdk.SdkError, match=r"DATABUILD_GRAPH_URL is not set.*run by DataBuild"):
        sdk.require(RAW_1)


def test_a_graph_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUILD_GRAPH_URL", "file:///etc/passwd")
    with pytest.raises(sdk.SdkError, match="must be an http"):
        sdk.live([RAW_1])


def test_an_http_error_is_reported_with_its_status(graph: LivenessStub) -> None:
    graph.answer_with = (404, b'{"detail": "no such route"}')
    with pytest.raises(sdk.SdkError, match=r"HTTP 404.*no such route"):
        sdk.live([RAW_1])
    assert len(graph.queries) == 1  # a client error is not retried


def test_a_nonsense_answer_is_reported(graph: LivenessStub) -> None:
    graph.answer_with = (200, b"<html>a proxy login page</html>")
    with pytest.raises(sdk.SdkError, match="not a partition list"):
        sdk.live([RAW_1])


def test_an_unreachable_service_is_retried_then_reported(
    graph: LivenessStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABUILD_GRAPH_URL", "http://127.0.0.1:9")
    with pytest.raises(sdk.SdkError, match="cannot be reached"):
        sdk.live([RAW_1])


# --- require -----------------------------------------------------------------------------


def test_require_passes_when_everything_is_live(graph: LivenessStub) -> None:
    graph.statuses.update({RAW_1: "live", RAW_2: "live"})
    sdk.require(RAW_1, RAW_2)


def test_require_names_exactly_the_refs_that_are_not_live(graph: LivenessStub) -> None:
    graph.statuses[RAW_1] = "live"
    with pytest.raises(sdk.MissingDependencies) as raised:
        sdk.require(RAW_1, [RAW_2, "rates/date=2024-01-02"])
    assert raised.value.refs == (RAW_2, "rates/date=2024-01-02")
    assert graph.queries == [[RAW_1, RAW_2, "rates/date=2024-01-02"]]


def test_require_accepts_any_iterable(graph: LivenessStub) -> None:
    with pytest.raises(sdk.MissingDependencies) as raised:
        sdk.require(f"raw/date=2024-01-0{d}" for d in (1, 2))
    assert raised.value.refs == (RAW_1, RAW_2)


def test_require_of_nothing_asks_nothing(graph: LivenessStub) -> None:
    sdk.require()
    sdk.require([])
    assert graph.queries == []


def test_require_refuses_non_strings(graph: LivenessStub) -> None:
    with pytest.raises(sdk.SdkError, match="not int"):
        sdk.require([RAW_1, 7])  # type: ignore[list-item]


def test_missing_dependencies_needs_a_ref() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sdk.MissingDependencies([])


# --- run ---------------------------------------------------------------------------------


def test_run_builds_every_ref_and_writes_no_result(graph: LivenessStub, result_path: Path) -> None:
    graph.statuses.update({RAW_1: "live", RAW_2: "live"})
    built: list[str] = []

    def build(ref: str) -> None:
        sdk.require(ref.replace("daily", "raw"))
        built.append(ref)

    assert exit_code_of(lambda: sdk.run(build, [DAY_1, DAY_2])) == 0
    assert built == [DAY_1, DAY_2]
    assert not result_path.exists()


def test_run_reports_missing_inputs_per_output_and_builds_the_rest(
    graph: LivenessStub, result_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph.statuses[RAW_2] = "live"
    built: list[str] = []

    def build(ref: str) -> None:
        sdk.require(ref.replace("daily", "raw"))
        built.append(ref)

    assert exit_code_of(lambda: sdk.run(build, [DAY_1, DAY_2])) == 0
    assert built == [DAY_2]
    assert result_of(result_path, [DAY_1, DAY_2]) == ReportedMissing(
        (MissingDeps(PartitionRef(DAY_1), (PartitionRef(RAW_1),)),), (PartitionRef(DAY_2),)
    )
    assert f"{DAY_1} needs {RAW_1}" in capsys.readouterr().err
    assert list(result_path.parent.iterdir()) == [result_path]  # no temporary file left


def test_run_takes_the_refs_from_the_command_line(
    graph: LivenessStub, result_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["jobs/daily.py", DAY_1, DAY_2])
    assert sdk.partitions() == [DAY_1, DAY_2]
    seen: list[str] = []
    assert exit_code_of(lambda: sdk.run(seen.append)) == 0
    assert seen == [DAY_1, DAY_2]


def test_fail_writes_a_permanent_failure(result_path: Path) -> None:
    def build(ref: str) -> None:
        sdk.fail(f"{ref}: the raw file has no header row")

    assert exit_code_of(lambda: sdk.run(build, [DAY_1])) == sdk.EXIT_FAILED
    assert result_of(result_path, [DAY_1]) == ReportedFailure(
        f"{DAY_1}: the raw file has no header row", False
    )


def test_fail_can_be_retryable(result_path: Path) -> None:
    def build(ref: str) -> None:
        sdk.fail("warehouse busy", retryable=True)

    assert exit_code_of(lambda: sdk.run(build, [DAY_1])) == sdk.EXIT_FAILED
    assert result_of(result_path, [DAY_1]) == ReportedFailure("warehouse busy", True)


def test_a_failure_of_one_ref_leaves_the_missing_inputs_of_another(
    graph: LivenessStub, result_path: Path
) -> None:
    # issue 16 row 2: it used to fail the whole run with this one ref's message
    def build(ref: str) -> None:
        if ref == DAY_1:
            sdk.require(RAW_1)
        sdk.fail("broken")

    assert exit_code_of(lambda: sdk.run(build, [DAY_1, DAY_2])) == 0
    assert result_of(result_path, [DAY_1, DAY_2]) == ReportedOutputs(
        failed=(OutputFailed(PartitionRef(DAY_2), FailureKind.PERMANENT, "broken"),),
        missing=(MissingDeps(PartitionRef(DAY_1), (PartitionRef(RAW_1),)),),
    )


def test_an_unexpected_exception_is_a_retryable_failure_saying_where(
    result_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(ref: str) -> None:
        int("not a number")

    assert exit_code_of(lambda: sdk.run(build, [DAY_1])) == sdk.EXIT_FAILED
    result = result_of(result_path, [DAY_1])
    assert isinstance(result, ReportedFailure)
    assert result.retryable
    assert result.message.startswith("ValueError: invalid literal for int()")
    assert "test_sdk.py:" in result.message
    assert "in build" in result.message
    assert "Traceback" in capsys.readouterr().err


def test_an_sdk_problem_exits_2_with_the_message(
    result_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(ref: str) -> None:
        sdk.require(RAW_1)  # DATABUILD_GRAPH_URL is not set

    assert exit_code_of(lambda: sdk.run(build, [DAY_1])) == sdk.EXIT_SDK_ERROR
    assert "DATABUILD_GRAPH_URL is not set" in capsys.readouterr().err
    assert not result_path.exists()


def test_run_without_refs_says_how_jobs_are_called(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code_of(lambda: sdk.run(lambda ref: None, [])) == sdk.EXIT_SDK_ERROR
    assert "no partition refs were given" in capsys.readouterr().err


def test_missing_inputs_without_a_result_path_are_an_sdk_error(
    graph: LivenessStub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code_of(lambda: sdk.run(lambda ref: sdk.require(RAW_1), [DAY_1])) == 2
    assert "DATABUILD_RESULT_PATH is not set" in capsys.readouterr().err


def test_a_job_that_requires_nothing_runs_by_hand_without_any_variable() -> None:
    assert exit_code_of(lambda: sdk.run(lambda ref: None, [DAY_1])) == 0


def test_a_failure_by_hand_still_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code_of(lambda: sdk.run(lambda ref: sdk.fail("nope"), [DAY_1])) == 1
    assert "nope" in capsys.readouterr().err


# --- run_batch and require_for -----------------------------------------------------------


def test_run_batch_reports_per_output_inputs(graph: LivenessStub, result_path: Path) -> None:
    graph.statuses[RAW_1] = "live"
    built: list[list[str]] = []

    def build(refs: list[str]) -> None:
        ready = [ref for ref in refs if sdk.require_for(ref, ref.replace("daily", "raw"))]
        built.append(ready)

    assert exit_code_of(lambda: sdk.run_batch(build, [DAY_1, DAY_2])) == 0
    assert built == [[DAY_1]]
    assert result_of(result_path, [DAY_1, DAY_2]) == ReportedMissing(
        (MissingDeps(PartitionRef(DAY_2), (PartitionRef(RAW_2),)),), (PartitionRef(DAY_1),)
    )


def test_answers_are_remembered_for_the_run_so_a_batch_asks_once(
    graph: LivenessStub, result_path: Path
) -> None:
    graph.statuses[RAW_1] = "live"

    def build(refs: list[str]) -> None:
        sdk.live(ref.replace("daily", "raw") for ref in refs)  # one question for the batch
        for ref in refs:
            sdk.require_for(ref, ref.replace("daily", "raw"))  # answered from memory

    assert exit_code_of(lambda: sdk.run_batch(build, [DAY_1, DAY_2])) == 0
    assert graph.queries == [[RAW_1, RAW_2]]
    assert result_of(result_path, [DAY_1, DAY_2]) == ReportedMissing(
        (MissingDeps(PartitionRef(DAY_2), (PartitionRef(RAW_2),)),), (PartitionRef(DAY_1),)
    )


def test_run_batch_charges_an_escaping_require_to_unreported_outputs(
    graph: LivenessStub, result_path: Path
) -> None:
    def build(refs: list[str]) -> None:
        sdk.require_for(DAY_1, RAW_1)
        sdk.require("rates/all")

    assert exit_code_of(lambda: sdk.run_batch(build, [DAY_1, DAY_2])) == 0
    assert result_of(result_path, [DAY_1, DAY_2]) == ReportedMissing(
        (
            MissingDeps(PartitionRef(DAY_1), (PartitionRef(RAW_1),)),
            MissingDeps(PartitionRef(DAY_2), (PartitionRef("rates/all"),)),
        )
    )


def test_require_for_an_output_not_asked_for_is_an_sdk_error(
    graph: LivenessStub, result_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def build(refs: list[str]) -> None:
        sdk.require_for("weekly/week=2024-W01", RAW_1)

    assert exit_code_of(lambda: sdk.run_batch(build, [DAY_1])) == sdk.EXIT_SDK_ERROR
    assert "was not asked to build 'weekly/week=2024-W01'" in capsys.readouterr().err


def test_require_for_outside_run_is_an_sdk_error() -> None:
    with pytest.raises(sdk.SdkError, match=r"inside sdk\.run_batch"):
        sdk.require_for(DAY_1, RAW_1)


def test_require_for_with_no_inputs_is_true(graph: LivenessStub, result_path: Path) -> None:
    answers: list[bool] = []
    assert (
        exit_code_of(
            lambda: sdk.run_batch(lambda refs: answers.append(sdk.require_for(DAY_1)), [DAY_1])
        )
        == 0
    )
    assert answers == [True]
    assert graph.queries == []


# --- the SDK stands alone ----------------------------------------------------------------


def test_the_variable_names_match_the_executors() -> None:
    assert sdk.ENV_RUN_ID == protocol.ENV_RUN_ID
    assert sdk.ENV_JOB_NAME == protocol.ENV_JOB_NAME
    assert sdk.ENV_RESULT_PATH == protocol.ENV_RESULT_PATH
    assert sdk.ENV_GRAPH_URL == protocol.ENV_GRAPH_URL


def test_importing_the_sdk_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys; import databuild.sdk\n"
        "heavy = ('databuild.core', 'databuild.executors', 'httpx', 'pydantic', 'google',\n"
        "         'urllib.request', 'http.client')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
