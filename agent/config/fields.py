"""What the models declare at a place in the data: the type expected there, the keys a
mapping may have, and both in words. Found by walking the model types alongside the
data, since the data picks the member of a tagged union (a source's `type`, a tag group's
`mode`)."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from agent.config.document import Path
from agent.config.model import Config
from drivers.config_types import Expected

_BOUNDS = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}


def child(node: Any, step: Any) -> Any:
    """The value one step below `node`, or None when there is none."""
    if isinstance(node, dict):
        return node.get(step)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return None


def type_at(path: Path, data: Any) -> tuple[Any, list[Any]]:
    """The declared type of the value at `path` with its field's metadata (constraints),
    or (None, []) where the models declare nothing."""
    declared: Any = Config
    metadata: list[Any] = []
    for step in path:
        model = bare(declared, data)
        if _is_model(model) and isinstance(step, str) and step in model.model_fields:
            field = model.model_fields[step]
            declared, metadata = field.annotation, list(field.metadata)
        elif get_origin(model) is list and isinstance(step, int):
            declared, metadata = get_args(model)[0], []
        else:
            return None, []
        data = child(data, step)
    return declared, metadata


def known_keys(path: Path, data: Any) -> list[str]:
    """The keys the mapping at `path` may have."""
    node = data
    for step in path:
        node = child(node, step)
    model = bare(type_at(path, data)[0], node)
    return list(model.model_fields) if _is_model(model) else []


def bare(declared: Any, data: Any = None) -> Any:
    """The type without Annotated and None; of a tagged union of models, the member that
    the data's tag (its `type`, or whichever key the union discriminates on) selects,
    or the first."""
    key = discriminator(declared)
    while get_origin(declared) is Annotated:
        declared = get_args(declared)[0]
    if get_origin(declared) in (Union, types.UnionType):
        members = [m for m in get_args(declared) if m is not type(None)]
        tag = data.get(key) if isinstance(data, dict) else None
        chosen = [m for m in members if tag in union_tags(m, key)]
        return bare((chosen or members)[0], data)
    return declared


def discriminator(declared: Any) -> str:
    """The key whose value picks the member of a tagged union: `type` for sources,
    or the one its Field(discriminator=...) names."""
    while get_origin(declared) is Annotated:
        declared, *metadata = get_args(declared)
        for item in metadata:
            if isinstance(getattr(item, "discriminator", None), str):
                return item.discriminator
    return "type"


def union_tags(declared: Any, key: str | None = None) -> list[str]:
    """The tag values (e.g. source `type`s) that a tagged union of models, or one model, accepts."""
    key = key or discriminator(declared)
    while get_origin(declared) is Annotated:
        declared = get_args(declared)[0]
    members = get_args(declared) if get_origin(declared) in (Union, types.UnionType) else (declared,)
    return [
        tag
        for member in members
        if _is_model(member) and key in member.model_fields
        for tag in get_args(member.model_fields[key].annotation)
    ]


def describe(declared: Any, metadata: list[Any]) -> str:
    """What a value of this type looks like, in words."""
    metadata = list(metadata)
    while get_origin(declared) is Annotated:
        declared, *extra = get_args(declared)
        metadata += extra
    words = next((m.text for m in metadata if isinstance(m, Expected)), None)
    if words:
        return words
    declared = bare(declared)  # an optional choice reads as its options
    if get_origin(declared) is Literal:
        return "one of " + ", ".join(str(option) for option in get_args(declared))
    if get_origin(declared) is list:
        return "a list of mappings" if _is_model(bare(get_args(declared)[0])) else "a list"
    if declared in (int, float):
        return ("an integer" if declared is int else "a number") + _bounds(metadata)
    simple = {str: "text", bool: "true or false"}
    if declared in simple:
        return simple[declared]
    return f"a mapping with keys {', '.join(declared.model_fields)}" if _is_model(declared) else "a value"


def _bounds(metadata: list[Any]) -> str:
    parts = [f"{sign} {getattr(m, name)}" for m in metadata for cls, (sign, name) in _BOUNDS.items() if type(m) is cls]
    return " " + " and ".join(parts) if parts else ""


def _is_model(declared: Any) -> bool:
    return isinstance(declared, type) and issubclass(declared, BaseModel)
