"""Durations: "250ms", "1.5s", "2m", "1h", "1d" or a bare number of seconds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.config_types import DURATION_PATTERN, format_duration, parse_duration

SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(sorted(SECONDS)))
def test_whole_numbers_with_a_unit(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == number * SECONDS[unit]


@given(st.integers(min_value=1, max_value=10**9))
def test_milliseconds_are_exact_thousandths(number: int) -> None:
    assert parse_duration(f"{number}ms") == number / 1000


@given(positive)
def test_formatted_durations_parse_back_to_the_same_seconds(seconds: float) -> None:
    text = format_duration(seconds)
    if "e" not in text:  # repr uses exponent notation for very small or large floats
        assert parse_duration(text) == seconds


@given(positive)
def test_bare_numbers_are_seconds(seconds: float) -> None:
    assert parse_duration(seconds) == seconds


@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_text_matching_the_schema_pattern_parses_unless_zero(text: str) -> None:
    try:
        assert parse_duration(text) > 0
    except ValueError as err:
        assert str(err) == "a duration longer than zero"


@given(st.text(max_size=12))
def test_text_the_parser_accepts_matches_the_schema_pattern(text: str) -> None:
    try:
        parse_duration(text)
    except ValueError:
        return
    assert re.fullmatch(DURATION_PATTERN, text)


@pytest.mark.parametrize("value", ["fast", "1 s", "1sec", "-1s", "1.s", ".5s", "", "1e3", True, None, [1]])
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [0, 0.0, "0s", "0ms", float("inf"), float("nan")])
def test_zero_and_infinite_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)
