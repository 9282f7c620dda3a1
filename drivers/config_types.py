"""Value types shared by the configuration models of the agent and of every driver.

Validators here raise two kinds of error that the agent's diagnostics turn into plain
sentences, so drivers get precise messages without importing the agent:

- `EXPECTED`: one value is wrong; rendered as "expected <what>, found <value>".
- `FINDINGS`: a rule across fields is broken (e.g. max below min); each finding names
  the field to blame, relative to the model that raised it, and its full message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, PlainValidator, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

EXPECTED = "edgeseal_expected"
FINDINGS = "edgeseal_findings"

SubPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Expected:
    """What a value must look like, in words: used in messages when it is wrong or missing."""

    text: str


def expected(what: str) -> PydanticCustomError:
    return PydanticCustomError(EXPECTED, "expected {expected}", {"expected": what})


def findings(found: list[tuple[SubPath, str]]) -> PydanticCustomError:
    """One error carrying every broken rule of a model, each at its own field."""
    summary = "; ".join(message for _, message in found)
    return PydanticCustomError(FINDINGS, "{summary}", {"summary": summary, "findings": found})


@dataclass(frozen=True)
class Matching(Expected):
    """`Annotated[str, Matching(text, regex)]`: text that `regex` matches as a whole;
    `text` says the same in words, for messages."""

    regex: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        compiled = re.compile(self.regex)

        def check(value: str) -> str:
            if not compiled.fullmatch(value):
                raise expected(self.text)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "pattern": f"^{self.regex}$"}


# Names every source model shares: a source's name, and the tag names written into readings.
SourceName = Annotated[str, Matching("1-64 characters of letters, digits and . _ -", r"[A-Za-z0-9._-]{1,64}")]
TagName = Annotated[str, Matching("1-128 characters without spaces", r"\S{1,128}")]


# Durations: "250ms", "1.5s", "2m", "1h", "1d" or a bare number of seconds.
DURATION_TEXT = "a duration like 500ms, 2s or 5m"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?")
DURATION_PATTERN = f"^{_DURATION.pattern}$"
_SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Seconds as a float. Raises ValueError saying what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(DURATION_TEXT)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if not match:
            raise ValueError(DURATION_TEXT)
        number, unit = float(match[1]), match[2]
        # Divide for milliseconds: 250 / 1000 is exactly the float 0.25, 250 * 0.001 is not.
        seconds = number / 1000 if unit == "ms" else number * _SECONDS_PER_UNIT[unit or "s"]
    else:
        seconds = float(value) if abs(value) < 2**1024 else math.inf  # float() of a larger int raises
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as configuration text that parses back to the same float, e.g. '2s', '0.25s'."""
    return f"{int(seconds)}s" if seconds.is_integer() else f"{seconds!r}s"


def _validate_duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as err:
        raise expected(str(err)) from None


Duration = Annotated[
    float,
    PlainValidator(_validate_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
    Expected(DURATION_TEXT),
]


# Sizes: "500MB", "2GiB", "64kB" or a bare number of bytes; decimal (kB, MB, GB) and
# binary (KiB, MiB, GiB) units, as disks and operators use both.
BYTES_TEXT = "a size like 500MB, 2GiB or a number of bytes, at least 1MB"
_BYTES = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?")
_BYTES_PER_UNIT = {"B": 1, "kB": 10**3, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20}
_BYTES_PER_UNIT |= {"GB": 10**9, "GiB": 2**30, "TB": 10**12, "TiB": 2**40}
MIN_BYTES = 10**6


def _validate_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise expected(BYTES_TEXT)
    if isinstance(value, int):
        size = value
    else:
        match = _BYTES.fullmatch(value)
        if not match:
            raise expected(BYTES_TEXT)
        number = float(match[1]) * _BYTES_PER_UNIT[match[2] or "B"]
        if not math.isfinite(number):  # more digits than any float holds
            raise expected(BYTES_TEXT)
        size = int(number)
    if size < MIN_BYTES:
        raise expected(BYTES_TEXT)
    return size


ByteSize = Annotated[
    int,
    PlainValidator(_validate_bytes),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": MIN_BYTES}, {"type": "string", "pattern": f"^{_BYTES.pattern}$"}]}
    ),
    Expected(BYTES_TEXT),
]


def backoff_findings(delay: float, delay_max: float) -> list[tuple[SubPath, str]]:
    """The rule of every reconnect backoff: reconnect_delay_max is at least reconnect_delay."""
    if delay_max >= delay:
        return []
    found = f"expected a duration >= reconnect_delay ({format_duration(delay)}), found {format_duration(delay_max)}"
    return [(("reconnect_delay_max",), found)]


@runtime_checkable
class DefinesTags(Protocol):
    """A source model that lists its tag names itself (e.g. because it generates some).
    Each name comes with the field, relative to the source, to blame for a duplicate.
    Sources without this method are read from their `tags` list's `name`s."""

    def tag_names(self) -> Iterable[tuple[SubPath, str]]: ...


@runtime_checkable
class AgentWide(Protocol):
    """A source model with settings that are one per agent, not one per source (e.g. the
    OPC UA client's application URI: the gateway has one client certificate). Each comes
    as (setting, field relative to the source to blame when sources disagree, value)."""

    def agent_wide(self) -> Iterable[tuple[str, SubPath, object]]: ...
