"""Overlapping output patterns are refused when the config loads (issue 16, row 4).

The decision procedure (``databuild.config.overlap``) is checked against brute force with
Hypothesis for ``{name}`` patterns, on examples for ``{name:REGEX}`` fields, through
``load_config`` (both owners and their keys named), and through the real ``databuild``
command on a bad ``databuild.toml``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databuild.config import load_config
from databuild.config.overlap import overlap
from databuild.core.refs import PartitionPattern

from .config_helpers import MINIMAL, load_error, load_text, write_config

REPO = Path(__file__).resolve().parents[2]


def p(template: str) -> PartitionPattern:
    return PartitionPattern.compile(template)


# ---- the decision procedure ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "witness"),
    [
        ("weekly/{anything}", "weekly/week={week}", "weekly/week=x"),
        ("{a}-{b}", "x-{c}", "x-x"),
        ("a{b}", "{c}b", "ab"),
        ("{a}x", "x{b}", "xx"),
        ("raw/{x}", "raw/date={date}", "raw/date=x"),
        ("summary/all", "summary/{what}", "summary/all"),
    ],
)
def test_plain_patterns_that_overlap_give_a_ref_both_match(a: str, b: str, witness: str) -> None:
    found = overlap(p(a), p(b))
    assert found == witness
    assert p(a).match(found) is not None and p(b).match(found) is not None
    assert overlap(p(b), p(a)) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("raw/date={date}", "daily/date={date}"),
        ("{a}/{b}", "{c}"),  # a field never spans a '/'
        ("weekly/week={week}", "weekly/month={month}"),
        ("summary/all", "summary/all/{x}"),
        ("a/{x}/b", "a/{y}/c"),
    ],
)
def test_plain_patterns_that_cannot_overlap(a: str, b: str) -> None:
    assert overlap(p(a), p(b)) is None
    assert overlap(p(b), p(a)) is None


@pytest.mark.parametrize(
    ("a", "b", "witness"),
    [
        ("summary/all", "{x:.*}", "summary/all"),  # literal vs regex: the literal is tried
        (r"report/{d:\d{4}}", "report/{y}", "report/0000"),
        ("{a:[a-z]+}/date={d}", "raw/date={date}", "raw/date=x"),
        (r"a/{x:\d+}", "a/{y:[0-9]{2}}", "a/00"),  # regex vs regex: sample-based
        (r"report/date={date:\d\d\d\d-\d\d-\d\d}", "report/date={d}", "report/date=0000-00-00"),
        ("t/{k:(?:east|west)}", "t/{k:w.*}", "t/west"),
    ],
)
def test_regex_fields_overlap_found_by_checking(a: str, b: str, witness: str) -> None:
    assert overlap(p(a), p(b)) == witness


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"a/{x:\d+}", "a/{y:[a-z]+}"),  # no sample of either matches the other
        (r"raw/{d:\d{4}}", "daily/{d}"),  # even widened, the literals differ
    ],
)
def test_regex_fields_that_do_not_overlap(a: str, b: str) -> None:
    assert overlap(p(a), p(b)) is None


# Small alphabets make collisions likely, so both answers get exercised.
_PIECES = st.lists(st.sampled_from(["a", "b", "/", "=", "{f}"]), min_size=1, max_size=6)
_REFS = st.text(alphabet="ab/=x", min_size=1, max_size=8)


def _template(pieces: list[str]) -> str:
    out, fields = [], 0
    for piece in pieces:
        if piece == "{f}":
            fields += 1
            piece = f"{{f{fields}}}"
        out.append(piece)
    return "".join(out)


@settings(max_examples=400, deadline=None)
@given(_PIECES, _PIECES, _REFS)
def test_plain_overlap_is_exact(a_pieces: list[str], b_pieces: list[str], ref: str) -> None:
    """A witness matches both; None means no ref matches both (here: no sampled ref)."""
    a, b = p(_template(a_pieces)), p(_template(b_pieces))
    found = overlap(a, b)
    if found is not None:
        assert a.match(found) is not None and b.match(found) is not None
    elif a.match(ref) is not None:
        assert b.match(ref) is None, (a.template, b.template, ref)


@settings(max_examples=200, deadline=None)
@given(_PIECES, _PIECES)
def test_a_refused_pair_is_refused_both_ways(a_pieces: list[str], b_pieces: list[str]) -> None:
    a, b = p(_template(a_pieces)), p(_template(b_pieces))
    assert (overlap(a, b) is None) == (overlap(b, a) is None)


# ---- through load_config ---------------------------------------------------------------------
WEEKLY = """\
[graph]
name = "trips"

[jobs.weekly_all]
outputs = ["weekly/{anything}"]
command = ["python", "jobs/all.py"]

[jobs.weekly]
outputs = ["weekly/week={week}"]
command = ["python", "jobs/weekly.py"]
"""


def test_overlapping_jobs_are_refused_naming_both_owners(tmp_path: Path) -> None:
    error = load_error(tmp_path, WEEKLY)
    assert error.key == "jobs.weekly.outputs[0]"
    text = str(error)
    assert text.startswith(f"{tmp_path / 'databuild.toml'}: jobs.weekly.outputs[0]: ")
    assert "'weekly/week={week}' overlaps 'weekly/{anything}'" in text
    assert "job 'weekly_all' (jobs.weekly_all.outputs[0])" in text
    assert "both match 'weekly/week=x'" in text


def test_job_overlapping_an_upstream_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + (
        '\n[upstreams.lake]\nurl = "http://lake.internal:8080"\npartitions = ["raw/{anything}"]\n'
    )
    error = load_error(tmp_path, text)
    assert error.key == "upstreams.lake.partitions[0]"
    assert "overlaps 'raw/date={date}' of job 'ingest' (jobs.ingest.outputs[0])" in str(error)


def test_literal_inside_a_regex_owner_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + '\n[jobs.all]\noutputs = ["{x:.*}"]\ncommand = ["all"]\n'
    error = load_error(tmp_path, text)
    assert "both match 'raw/date=x'" in str(error)


def test_same_pattern_twice_names_the_first_owner_and_key(tmp_path: Path) -> None:
    text = MINIMAL + '\n[jobs.again]\noutputs = ["raw/date={date}"]\ncommand = ["again"]\n'
    error = load_error(tmp_path, text)
    assert error.key == "jobs.again.outputs[0]"
    assert "is also declared by job 'ingest' (jobs.ingest.outputs[0])" in str(error)


def test_one_jobs_own_overlapping_patterns_load(tmp_path: Path) -> None:
    text = MINIMAL.replace('["raw/date={date}"]', '["raw/date={date}", "raw/{anything}"]')
    config = load_text(tmp_path, text)
    assert config.graph.route("raw/date=2024-01-01").job is not None


def test_disjoint_regex_owners_load_and_a_shared_ref_still_errors_at_want_time(
    tmp_path: Path,
) -> None:
    # 'raw/date=a500' matches both, but no sample of either pattern's regex matches the
    # other, so loading cannot find it (documented); the ref keeps the route's clear error.
    text = MINIMAL.replace('"raw/date={date}"', '"raw/day={date}"') + (
        "\n[jobs.codes]\noutputs = ['raw/date={d:a\\d{3}}']\ncommand = [\"codes\"]\n"
        "\n[jobs.fives]\noutputs = ['raw/date={d:\\w*5\\w*}']\ncommand = [\"fives\"]\n"
    )
    config = load_text(tmp_path, text)
    route = config.graph.route("raw/date=a500")
    assert route.job is None
    assert "is ambiguous: job 'codes' and job 'fives' all match it" in route.problem


def test_the_repository_examples_still_load() -> None:
    for path in sorted((REPO / "examples").glob("*/databuild.toml")):
        assert load_config(path, environ={}).jobs


# ---- through the real command ----------------------------------------------------------------
def test_databuild_graph_refuses_the_overlapping_file(tmp_path: Path, databuild_bin: Path) -> None:
    write_config(tmp_path, WEEKLY)
    done = subprocess.run(
        [str(databuild_bin), "graph"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    joined = " ".join(line.strip() for line in lines)
    assert joined.startswith("error: ")
    assert "jobs.weekly.outputs[0]: pattern 'weekly/week={week}' overlaps" in joined
    assert "job 'weekly_all'" in joined


def test_the_docs_show_the_error_as_it_is(tmp_path: Path) -> None:
    docs = (REPO / "docs" / "config.md").read_text()
    error = str(load_error(tmp_path, WEEKLY))
    shown = error.replace(str(tmp_path), "/srv/trips")
    assert f"    {shown}\n" in docs
