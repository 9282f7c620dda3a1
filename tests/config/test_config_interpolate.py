from __future__ import annotations

import pytest

from agent.config.interpolate import InterpolationError, interpolate, is_one_reference

ENV = {"HOST": "plc1", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("${HOST}", "plc1"),
        ("tcp://${HOST}:502", "tcp://plc1:502"),
        ("${PORT:-502}", "502"),
        ("${HOST:-other}", "plc1"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("${PORT:-}", ""),
        ("$${HOST}", "${HOST}"),
        ("cost: $5", "cost: $5"),
        ("no references", "no references"),
    ],
)
def test_substitution(text: str, result: str) -> None:
    assert interpolate(text, ENV) == result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${PORT}", "environment variable PORT is not set"),
        ("${1X}", "expected ${NAME} or ${NAME:-default}, found '${1X}'"),
        ("${}", "expected ${NAME} or ${NAME:-default}, found '${}'"),
        ("${HOST", "expected ${NAME} or ${NAME:-default}, found '${' without a closing '}'"),
    ],
)
def test_errors_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        interpolate(text, ENV)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "whole"),
    [("${N}", True), ("${N:-5}", True), ("x${N}", False), ("${A}${B}", False), ("$${N}", False)],
)
def test_one_reference(text: str, whole: bool) -> None:
    assert is_one_reference(text) is whole
