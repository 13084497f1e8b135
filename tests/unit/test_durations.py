"""Durations (`watcher.durations`): what people type, and anything else a hostile or careless
hand can put in argv — seconds or one short `UsageError` line, never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from watcher.durations import MAX_LENGTH, UNITS, parse_seconds, seconds_of
from watcher.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60", 60.0),
        ("2.5", 2.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        (" 7 ", 7.0),  # blanks around are no mistake, as float() always took them
        ("5s\n", 5.0),
        ("60s", 60.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("2m500ms", 120.5),
        ("1.5m", 90.0),
        (".25s", 0.25),
        ("5.s", 5.0),
        ("+1m", 60.0),
        ("1s1s", 2.0),  # as Go adds them up
    ],
)
def test_what_people_type(text: str, seconds: float) -> None:
    assert seconds_of(text) == seconds
    assert parse_seconds("the timeout", text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", " ", "s", "m5", "5x", "5 s", "1h 30m", "1d", "1us", "5S", "1H", "ms", "1..5s",
     "1_000", "\u0661\u0662", "\uff15s", "0x10", "--5s", "1e3s", "in 5s", "\x00"],
)  # fmt: skip
def test_what_is_neither(text: str) -> None:
    with pytest.raises(UsageError, match="not a number of seconds or a duration"):
        seconds_of(text)


def test_the_value_is_checked_as_settings_check_seconds_checks() -> None:
    for text in ("0", "0s", "-1m", "nan", "inf", "-inf"):
        with pytest.raises(UsageError, match="must be a positive number of seconds"):
            parse_seconds("the timeout", text)
    assert parse_seconds("the interval", "0ms", zero=True) == 0.0
    assert math.copysign(1.0, parse_seconds("the interval", "-0s", zero=True)) == 1.0
    with pytest.raises(UsageError, match=r"the interval must be 0 \(off\) or positive"):
        parse_seconds("the interval", "-1s", zero=True)


def test_a_long_value_is_refused_unread_and_quoted_short() -> None:
    with pytest.raises(UsageError) as raised:
        seconds_of("1" * (MAX_LENGTH + 1))
    assert f"({MAX_LENGTH + 1} characters)" in str(raised.value)


@given(st.text(max_size=200))
@example("9" * MAX_LENGTH)
@example("9" * (MAX_LENGTH - 1) + "h")
@example("1e308")
@example("1e309")
@example("\n" * 1000)
@example("0" + "\x1f" * 6 + "\U0001eebc" * 17)  # short, but ten characters an escape
def test_any_text_is_seconds_or_one_short_line(text: str) -> None:
    try:
        value = parse_seconds("the timeout", text)
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 200
    else:
        assert math.isfinite(value) and value > 0


components = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(sorted(UNITS))),
    min_size=1,
    max_size=4,
)


@given(components)
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert seconds_of(text) == pytest.approx(sum(n * UNITS[unit] for n, unit in parts))


@given(st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_a_plain_number_is_seconds_as_before(seconds: float) -> None:
    assert parse_seconds("the timeout", repr(seconds)) == seconds
