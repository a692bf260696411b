"""One run of an external's check command (``ExternalChecker.run_check``), real processes:
the protocol (refs on stdin, existing ones on stdout, ``$DATABUILD_EXTERNAL``) and every way
a check can fail, each a ``CheckFailed`` saying why (the runner logs it and retries)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import cast

import pytest

from databuild.core.model import ExternalSpec
from databuild.core.refs import PartitionPattern, PartitionRef
from databuild.runtime.controller import Controller
from databuild.runtime.externals import CheckFailed, ExternalChecker

REFS = [PartitionRef("vendor/date=2024-01-01"), PartitionRef("vendor/date=2024-01-02")]


def spec(code: str, timeout: float = 30.0) -> ExternalSpec:
    return ExternalSpec(
        "vendor",
        (PartitionPattern.compile("vendor/date={date}"),),
        (sys.executable, "-c", code),
        check_timeout_seconds=timeout,
    )


def run(tmp_path: Path, external: ExternalSpec) -> list[PartitionRef]:
    # run_check needs no controller: it only runs the command
    checker = ExternalChecker([external], cast(Controller, None), tmp_path)
    return asyncio.run(checker.run_check(external, REFS))


def test_the_check_answers_which_asked_refs_exist(tmp_path: Path) -> None:
    (tmp_path / "landed").write_text("vendor/date=2024-01-02\n")
    code = (
        "import os, sys\n"
        "assert os.environ['DATABUILD_EXTERNAL'] == 'vendor'\n"
        "asked = [l.strip() for l in sys.stdin]\n"
        "assert asked == ['vendor/date=2024-01-01', 'vendor/date=2024-01-02'], asked\n"
        "print(open('landed').read().strip())\n"
        "print('vendor/date=1999-01-01')  # not asked: ignored\n"
    )
    assert run(tmp_path, spec(code)) == [PartitionRef("vendor/date=2024-01-02")]


def test_a_check_that_finds_nothing_answers_nothing(tmp_path: Path) -> None:
    assert run(tmp_path, spec("import sys; sys.stdin.read()")) == []


@pytest.mark.parametrize(
    ("code", "timeout", "words"),
    [
        ("import sys; sys.exit('vendor API down')", 30.0, "exited with code 1: vendor API down"),
        ("import time; time.sleep(60)", 0.3, "no answer within check_timeout (0.3s)"),
        ("import sys; sys.stdout.write('x' * 3_000_000)", 30.0, "printed more than"),
    ],
    ids=["exit-code", "hangs", "babbles"],
)
def test_a_failing_check_says_why(tmp_path: Path, code: str, timeout: float, words: str) -> None:
    with pytest.raises(CheckFailed, match=words.replace("(", r"\(").replace(")", r"\)")):
        run(tmp_path, spec(code, timeout))


def test_a_check_program_that_does_not_exist_fails_clearly(tmp_path: Path) -> None:
    external = ExternalSpec(
        "vendor", (PartitionPattern.compile("vendor/date={date}"),), ("no-such-check-program",)
    )
    with pytest.raises(CheckFailed, match="cannot run"):
        run(tmp_path, external)
