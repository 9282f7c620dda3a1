"""How values are shown in configuration messages."""

from __future__ import annotations

import datetime
import math
from typing import Any

_LONGEST_SHOWN = 40

_KINDS: list[tuple[type, str]] = [
    (bool, "boolean"),  # before int: bool is a subclass of int
    (int, "integer"),
    (float, "number"),
    (str, "text"),
    (datetime.datetime, "timestamp"),  # before date: datetime is a subclass of date
    (datetime.date, "date"),
    (bytes, "binary"),
]


def printable(text: str) -> str:
    """`text` with the characters a terminal would not show as they are (line breaks,
    control characters, invisible spaces) written as escapes, e.g. \\n or \\u2028: one
    problem stays on one line, and what a key or value really holds can be seen."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def kind(value: Any) -> str:
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)


def show(value: Any, with_kind: bool = False) -> str:
    """A value as it would look in YAML, e.g. 'fast', 0, true, null; or what it is, for
    collections. `with_kind` adds the kind, for messages about a value of the wrong kind."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    text = _yamlish(value)
    return f"{text} ({kind(value)})" if with_kind else text


def _yamlish(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= _LONGEST_SHOWN else value[: _LONGEST_SHOWN - 3] + "..."
        return "'" + shown.replace("'", "''") + "'"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return repr(value)
