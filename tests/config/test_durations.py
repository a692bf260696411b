"""parse_duration accepts seconds and unit strings, and says which formats it accepts."""

from __future__ import annotations

import pytest

from databuild.config import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("9h", 32400.0),
        ("30d", 2592000.0),
        ("2w", 1209600.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        (" 5M ", 300.0),
    ],
)
def test_accepted_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10 minutes", "is not a duration"),
        ("", "is not a duration"),
        ("1h1h", "names the unit 'h' twice"),
        ("-5s", "is not a duration"),
        (-5, "must not be negative"),
        (float("nan"), "not a finite duration"),
        (True, "is not a duration"),
        ([1], "not a list"),
    ],
)
def test_rejected_durations_say_which_formats_work(value: object, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)

    assert words in str(caught.value)
    if "negative" not in words:
        assert '"1h30m"' in str(caught.value)
