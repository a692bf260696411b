"""parse_ref is the one gate every partition ref passes; PartitionPattern routes refs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databuild.core.errors import InvalidInput, InvalidPartitionRef, InvalidPattern
from databuild.core.refs import MAX_REF_LENGTH, PartitionPattern, parse_ref


@pytest.mark.parametrize(
    "raw",
    [
        "daily/date=2024-01-01",
        "weekly/week=2024-W01",
        "a",
        "raw/région=île-de-france/date=2024-01-01",
        "日本/日付=2024年1月1日",
        "emoji/🐍",
        "<b>x</b>",
        "<script>alert(1)</script>",
        "a b/c d",
        "x;rm -rf ~",
        "a..b/c.d",
        "a" * MAX_REF_LENGTH,
    ],
)
def test_accepts_normal_refs(raw: str) -> None:
    assert parse_ref(raw) == raw


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "must not be empty"),
        ("a" * (MAX_REF_LENGTH + 1), f"is {MAX_REF_LENGTH + 1} characters long; the limit is 512"),
        ("a\nb", "control character '\\n' at position 1"),
        ("a\tb", "control character"),
        ("\x1b[31mred", "control character '\\x1b' at position 0"),
        ("a\x7f", "control character"),
        ("a\u2028b", "control character"),
        ("a\x00b", "NUL character at position 1"),
        ("\ud800", "unpaired surrogate at position 0"),
        ("ok/\udfff", "unpaired surrogate at position 3"),
        ("a/../b", "must not contain a '..' path segment"),
        ("..", "'..' path segment"),
        ("a/./b", "must not contain a '.' path segment"),
        (".", "'.' path segment"),
        ("-rf", "must not start with '-'"),
        ("/etc/passwd", "must not start with '/'"),
        ("a/b/", "must not end with '/'"),
        ("a//b", "must not contain an empty segment ('//')"),
        (" a", "white space"),
        ("a ", "white space"),
        ("a\\b", "backslash"),
    ],
)
def test_rejects_bad_refs_saying_why(raw: str, says: str) -> None:
    with pytest.raises(InvalidPartitionRef) as caught:
        parse_ref(raw)
    message = str(caught.value)
    assert says in message
    assert message.startswith("invalid partition ref ")
    assert caught.value.ref == raw
    assert says in caught.value.problem


@pytest.mark.parametrize(
    ("raw", "type_name"), [(None, "NoneType"), (42, "int"), (b"daily", "bytes"), (["a"], "list")]
)
def test_rejects_non_strings(raw: object, type_name: str) -> None:
    with pytest.raises(InvalidPartitionRef, match=f"must be a string, not {type_name}"):
        parse_ref(raw)


def test_invalid_ref_is_invalid_input_and_message_is_bounded() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ref("x" * 10_000)
    assert len(str(caught.value)) < 200  # a huge ref is not echoed back whole


# ---- patterns ------------------------------------------------------------------------


def test_pattern_matches_one_segment_per_field() -> None:
    pattern = PartitionPattern.compile("daily/date={date}")
    assert pattern.match("daily/date=2024-01-01") == {"date": "2024-01-01"}
    assert pattern.match("daily/date=2024/01") is None
    assert pattern.match("xdaily/date=1") is None
    assert pattern.match("daily/date=1/extra") is None
    assert pattern.fields == ("date",)


def test_pattern_with_custom_regex_and_literal_metacharacters() -> None:
    pattern = PartitionPattern.compile("raw.v1/date={date:\\d\\d\\d\\d-\\d\\d-\\d\\d}/h={hour}")
    assert pattern.match("raw.v1/date=2024-01-01/h=03") == {"date": "2024-01-01", "hour": "03"}
    assert pattern.match("rawXv1/date=2024-01-01/h=03") is None  # '.' is literal
    assert pattern.match("raw.v1/date=20240101/h=03") is None
    assert pattern.fields == ("date", "hour")


def test_pattern_without_fields_matches_exactly() -> None:
    pattern = PartitionPattern.compile("static/table")
    assert pattern.match("static/table") == {}
    assert pattern.match("static/table2") is None


def test_pattern_format_builds_a_valid_ref() -> None:
    pattern = PartitionPattern.compile("daily/date={date}/region={region}")
    built = pattern.format(date="2024-01-01", region="eu")
    assert built == "daily/date=2024-01-01/region=eu"
    assert pattern.match(built) == {"date": "2024-01-01", "region": "eu"}


def test_pattern_format_refuses_an_invalid_ref() -> None:
    pattern = PartitionPattern.compile("daily/date={date}")
    with pytest.raises(InvalidPartitionRef, match=re.escape("'..' path segment")):
        pattern.format(date="x/../y")


def test_pattern_format_needs_every_field() -> None:
    with pytest.raises(KeyError):
        PartitionPattern.compile("a/{x}/{y}").format(x="1")


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("", "non-empty string"),
        ("a/{x}/{x}", "names field {x} twice"),
        ("a/{x:[}", "bad regex"),
        ("a/{x", "is not closed"),
        ("a/x}", "unmatched '}'"),
        ("a/{1x}", "must start a field"),
    ],
)
def test_bad_patterns_say_what_is_wrong(template: str, says: str) -> None:
    with pytest.raises(InvalidPattern) as caught:
        PartitionPattern.compile(template)
    assert says in str(caught.value)


@pytest.mark.parametrize("template", ["a/{1x}/{y}", "a}/{y}", "a/{x", "a/{x:}/b", "a/{x:\\d{4}/b"])
def test_stray_braces_anywhere_are_refused(template: str) -> None:
    with pytest.raises(InvalidPattern):
        PartitionPattern.compile(template)


def test_a_field_regex_may_hold_balanced_braces() -> None:
    pattern = PartitionPattern.compile("daily/date={date:\\d{4}-\\d{2}-\\d{2}}/{part}")
    assert pattern.match("daily/date=2024-01-02/x") == {"date": "2024-01-02", "part": "x"}
    assert pattern.match("daily/date=24-01-02/x") is None
    assert pattern.fields == ("date", "part")
    assert pattern.format(date="2024-01-02", part="y") == "daily/date=2024-01-02/y"


def test_non_string_pattern_is_refused() -> None:
    with pytest.raises(InvalidPattern):
        PartitionPattern.compile(None)  # type: ignore[arg-type]


# ---- properties ----------------------------------------------------------------------


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029"


@given(st.text(max_size=80))
def test_anything_accepted_round_trips_and_has_no_control_char(raw: str) -> None:
    try:
        parsed = parse_ref(raw)
    except InvalidPartitionRef as exc:
        assert exc.problem  # a rejection always says why
        return
    assert parsed == raw
    assert parse_ref(parsed) == parsed
    assert not any(_is_control(c) for c in parsed)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in parsed)
    assert ".." not in parsed.split("/") and "" not in parsed.split("/")
    assert not parsed.startswith(("-", "/")) and not parsed.endswith("/")


_SEGMENT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\"
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and s == s.strip() and not s.startswith("-"))


@given(st.lists(_SEGMENT, min_size=1, max_size=5))
def test_well_formed_refs_are_accepted(segments: list[str]) -> None:
    raw = "/".join(segments)
    assert parse_ref(raw) == raw


@given(st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True))
def test_pattern_format_and_match_agree(value: str) -> None:
    pattern = PartitionPattern.compile("daily/date={date}")
    built = pattern.format(date=value)
    assert pattern.match(built) == {"date": value}
