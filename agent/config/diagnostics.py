"""Pydantic validation errors -> Problems at the node that caused them, in our own words.

Each message says what was expected and what was found. The expected side comes from the
error's type and context, or from the model field it concerns (see `fields`); pydantic's
own English is never shown.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from agent.config.document import Document, Path, format_path
from agent.config.fields import bare, child, describe, discriminator, known_keys, type_at, union_tags
from agent.config.wording import printable, show
from agent.errors import Problem
from drivers.config_types import EXPECTED, FINDINGS

# Error types meaning "a value of the wrong kind", with what was expected instead.
_WRONG_KIND = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_LENGTHS = {
    "string_too_short": "at least",
    "string_too_long": "at most",
    "too_short": "at least",
    "too_long": "at most",
}


def validation_problems(error: ValidationError, doc: Document) -> list[Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        path = _data_path(detail["loc"], doc.data)
        if detail["type"] == FINDINGS:
            found = [(path + tuple(at), message, False) for at, message in detail["ctx"]["findings"]]
        else:
            found = [_explain(detail, path, doc.data)]
        for at, message, at_key in found:
            if not doc.concerns_unloaded(at):
                # A missing key is reported at the mapping that lacks it.
                where = doc.locate(at[:-1] if _is_missing(detail) else at, key=at_key)
                problems.append(
                    Problem(where.file, where.line, where.column, printable(format_path(at)), printable(message))
                )
    return problems


def _is_missing(detail: Any) -> bool:
    return detail["type"] in ("missing", "union_tag_not_found")


def _data_path(loc: tuple[Any, ...], data: Any) -> Path:
    """The error's location as a path in the data: pydantic also names the member of a
    tagged union it tried (sources.0.simulator.interval), which the file does not."""
    path: list[Any] = []
    node = data
    for step in loc:
        if (
            isinstance(node, dict)
            and step not in node
            and step == node.get(discriminator(type_at(tuple(path), data)[0]))
        ):
            continue
        path.append(step)
        node = child(node, step)
    return tuple(path)


def _explain(detail: Any, path: Path, data: Any) -> tuple[Path, str, bool]:
    """(path to report, message, whether to point at the key rather than the value)."""
    kind, ctx, found = detail["type"], detail.get("ctx", {}), detail["input"]
    if kind == "missing":
        return path, f"required key missing (expected {describe(*type_at(path, data))})", False
    if kind == "extra_forbidden":
        return path, _unknown_key(path, data), True
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        declared = type_at(path, data)[0]
        at, tags = path + (discriminator(declared),), ", ".join(union_tags(declared))
        if kind == "union_tag_not_found":
            return at, f"required key missing (expected one of {tags})", False
        return at, f"expected one of {tags}, found {show(ctx['tag'])}", False
    return path, _wrong_value(kind, ctx, found, path, data), False


def _wrong_value(kind: str, ctx: dict[str, Any], found: Any, path: Path, data: Any) -> str:
    if kind in _WRONG_KIND:
        return f"expected {_WRONG_KIND[kind]}, found {show(found, with_kind=True)}"
    if kind == EXPECTED:
        right_kind = isinstance(found, (str, int, float)) and not isinstance(found, bool)
        return f"expected {ctx['expected']}, found {show(found, with_kind=not right_kind)}"
    if kind == "finite_number":
        return f"expected a finite number, found {show(found)}"
    if kind in _COMPARISONS:
        noun = "an integer" if bare(type_at(path, data)[0]) is int else "a number"
        return f"expected {noun} {_COMPARISONS[kind]} {next(iter(ctx.values()))}, found {show(found)}"
    if kind == "literal_error":
        options = describe(*type_at(path, data))
        return f"expected {options}, found {show(found, with_kind=not isinstance(found, str))}"
    if kind in _LENGTHS:
        limit = ctx.get("min_length", ctx.get("max_length", 0))
        if kind.startswith("string"):
            return f"expected text of {_LENGTHS[kind]} {_count(limit, 'character')}, found {show(found)}"
        actual = _count(len(found), "item") if found else show(found)
        return f"expected {_LENGTHS[kind]} {_count(limit, 'item')}, found {actual}"
    # A safety net for error types the models cannot produce today.
    return f"expected a valid value, found {show(found, with_kind=True)} ({kind.replace('_', ' ')})"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _unknown_key(path: Path, data: Any) -> str:
    known = known_keys(path[:-1], data)
    close = difflib.get_close_matches(str(path[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean '{close[0]}'?"
    return f"unknown key (expected one of: {', '.join(known)})" if known else "unknown key"
