"""A generic tamperer for edgeseal's CBOR formats (tests/promises/test_tamper_fields.py).

`decode_tree` turns a bundle or a message into one tree, descending into every byte
string that holds CBOR: seals and checkpoints (COSE_Sign1: the tag, its protected header
and payload), reading leaves. Byte strings that do not decode to a CBOR array, map or tag
(hashes, salts, signatures, DER certificates) stay opaque bytes. `mutations` then lists
every way to change one field of it, each field being a map entry or an array element at
any depth:

- modified: another value of the same type, and values of other types (an integer as a
  float, text or bool; bytes as text; a byte string holding CBOR with its structure
  unwrapped; a tag with another number or none); a map with an extra field; a map key
  renamed;
- deleted: a map entry or an array element removed;
- truncated: byte strings (raw or holding CBOR), text and arrays shortened;
- replayed: the same field taken from a sibling: the element before it (or after the
  first) in every array of like elements on its path, so a seal's root comes from the
  previous batch's seal, a reading from the reading before, a record from another record;
  `replayed_from` takes each field from another message of the same kind;
- reordered: array elements swapped with their neighbour, and the first moved last;
- duplicated: an array element repeated.

Map keys cannot be reordered or repeated here: a changed layer is encoded again with the
project's deterministic encoder (agent.trust.cbor), which sorts them; other encodings of
one value are tests/promises/test_malleability.py's subject. Every layer up to the root is
re-encoded, so a mutation is what someone who knows the formats would produce.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2

from agent.trust import cbor

Change = Callable[[Any], Any]


class Into(enum.Enum):
    """A path step that is no map key or array index."""

    CBOR = "<cbor>"  # the CBOR inside a byte string
    TAG = "<tag>"  # a tag's content


Step = Any  # a map key (int, text, bytes), an array index, or an Into
FieldPath = tuple[Step, ...]


@dataclass(frozen=True)
class Embedded:
    """A byte string whose content is a CBOR structure, decoded into `value`."""

    value: Any


@dataclass(frozen=True)
class Mutation:
    kind: str  # modified, deleted, truncated, replayed, reordered, duplicated
    path: FieldPath  # the field changed (for reordered: the array)
    what: str
    at: FieldPath  # where `change` applies: the field, or the map or array holding it
    change: Change

    def apply(self, tree: Any) -> bytes:
        return encode_tree(_replaced(tree, self.at, self.change))

    def __str__(self) -> str:
        return f"{self.kind} {show(self.path)}: {self.what}"


def decode_tree(data: bytes) -> Any:
    return _expand(cbor.decode(data))


def encode_tree(tree: Any) -> bytes:
    return cbor.encode(plain(tree))


def plain(node: Any) -> Any:
    """The CBOR value of a tree: embedded structures encoded to their bytes."""
    if isinstance(node, Embedded):
        return cbor.encode(plain(node.value))
    if isinstance(node, list):
        return [plain(x) for x in node]
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, cbor2.CBORTag):
        return cbor2.CBORTag(node.tag, plain(node.value))
    return node


def get(tree: Any, path: FieldPath) -> Any:
    """The node at `path`; LookupError, TypeError or AttributeError if there is none."""
    node = tree
    for step in path:
        node = node.value if isinstance(step, Into) else node[step]
    return node


def show(path: FieldPath) -> str:
    parts = [
        step.value if isinstance(step, Into) else f"[{step}]" if isinstance(step, int) else f".{step}" for step in path
    ]
    return "".join(parts).lstrip(".") or "(root)"


def nodes(tree: Any, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Any]]:
    """Every node, the root first, depth first."""
    yield path, tree
    if isinstance(tree, (Embedded, cbor2.CBORTag)):
        yield from nodes(tree.value, (*path, Into.CBOR if isinstance(tree, Embedded) else Into.TAG))
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from nodes(item, (*path, i))
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from nodes(value, (*path, key))


def mutations(tree: Any) -> Iterator[Mutation]:
    for path, node in nodes(tree):
        yield from _modified(path, node)
        yield from _truncated(path, node)
        yield from _reordered(path, node)
        if path and not isinstance(path[-1], Into):  # a field of a map or an array
            parent = get(tree, path[:-1])
            yield Mutation("deleted", path, "removed", path[:-1], _without(path[-1]))
            yield from _replayed(tree, path, node)
            if isinstance(parent, list):
                yield Mutation("duplicated", path, "repeated", path[:-1], _repeated(path[-1]))
            else:
                yield from _renamed(path, parent)


def replayed_from(tree: Any, source: Any, label: str) -> Iterator[Mutation]:
    """Each field of `tree` taken from the same place in `source`, another message of the
    same kind (the previous batch's, say)."""
    for path, node in nodes(tree):
        if not path or isinstance(path[-1], Into):
            continue
        try:
            value = get(source, path)
        except (LookupError, TypeError, AttributeError):
            continue  # the other message has no such field
        if value != node:
            yield Mutation("replayed", path, f"from {label}", path, _const(value))


# -- the kinds ----------------------------------------------------------------------------


def _modified(path: FieldPath, node: Any) -> Iterator[Mutation]:
    for value in _same_type(node) + _other_types(node):
        yield Mutation("modified", path, f"-> {_brief(value)}", path, _const(value))


def _same_type(node: Any) -> list[Any]:
    if isinstance(node, bool):
        return [not node]
    if isinstance(node, int):
        return [node + 1, node - 1]
    if isinstance(node, float):
        return [node + 1.0]
    if isinstance(node, str):
        return [node[:-1] + chr(ord(node[-1]) ^ 1) if node else "x"]
    if isinstance(node, (bytes, Embedded)):
        raw = plain(node)
        return [raw[:-1] + bytes([raw[-1] ^ 1]) if raw else b"\x00"]
    if isinstance(node, list):
        return [] if node else [[0]]
    if isinstance(node, dict):
        return [{**node, _free_key(node): 0}]
    if isinstance(node, cbor2.CBORTag):
        return [cbor2.CBORTag(node.tag + 1, node.value)]
    return []


def _other_types(node: Any) -> list[Any]:
    if isinstance(node, bool):
        return [int(node)]
    if isinstance(node, int):
        return [float(node), str(node)] + ([node == 1] if node in (0, 1) else [])
    if isinstance(node, float):
        return [int(node), str(node)]
    if isinstance(node, str):
        return [node.encode()]
    if isinstance(node, bytes):
        return [node.hex()]
    if isinstance(node, Embedded):
        return [node.value]  # the structure itself, not wrapped in a byte string
    if node is None:
        return [0]
    if isinstance(node, list):
        return [dict(enumerate(node))]
    if isinstance(node, dict):
        return [list(node.values())]
    if isinstance(node, cbor2.CBORTag):
        return [node.value]
    return []


def _truncated(path: FieldPath, node: Any) -> Iterator[Mutation]:
    whole = plain(node) if isinstance(node, Embedded) else node
    if not isinstance(whole, (bytes, str, list)) or not whole:
        return
    for length in sorted({len(whole) - 1, len(whole) // 2}):
        yield Mutation("truncated", path, f"first {length} of {len(whole)}", path, _const(whole[:length]))


def _reordered(path: FieldPath, node: Any) -> Iterator[Mutation]:
    if not isinstance(node, list):
        return
    for i in range(len(node) - 1):
        yield Mutation("reordered", path, f"[{i}] and [{i + 1}] swapped", path, _swapped(i))
    if len(node) > 2:
        yield Mutation("reordered", path, "[0] moved last", path, lambda items: [*items[1:], items[0]])


def _replayed(tree: Any, path: FieldPath, node: Any) -> Iterator[Mutation]:
    """From the neighbour in each array of like elements on the path."""
    for depth, step in enumerate(path):
        container = get(tree, path[:depth])
        if not (isinstance(container, list) and _alike(container)):
            continue
        sibling = step - 1 if step > 0 else step + 1
        if sibling >= len(container):
            continue
        source = (*path[:depth], sibling, *path[depth + 1 :])
        try:
            value = get(tree, source)
        except (LookupError, TypeError, AttributeError):
            continue  # the sibling has no such field
        if value != node:
            yield Mutation("replayed", path, f"from {show(source)}", path, _const(value))


def _renamed(path: FieldPath, parent: dict[Any, Any]) -> Iterator[Mutation]:
    key = path[-1]
    for new in (_another_key(key, parent), _other_key(key)):
        yield Mutation("modified", path, f"key renamed to {new!r}", path[:-1], _rekeyed(key, new))


# -- helpers ------------------------------------------------------------------------------


def _expand(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            inner = cbor.decode(value)
        except cbor.CborError:
            return value
        return Embedded(_expand(inner)) if isinstance(inner, (list, dict, cbor2.CBORTag)) else value
    if isinstance(value, list):
        return [_expand(x) for x in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _expand(value.value))
    return value


def _replaced(node: Any, path: FieldPath, change: Change) -> Any:
    """A copy of `node` with the node at `path` changed; the rest shared."""
    if not path:
        return change(node)
    step, rest = path[0], path[1:]
    if step is Into.CBOR:
        return Embedded(_replaced(node.value, rest, change))
    if step is Into.TAG:
        return cbor2.CBORTag(node.tag, _replaced(node.value, rest, change))
    copy = list(node) if isinstance(node, list) else dict(node)
    copy[step] = _replaced(node[step], rest, change)
    return copy


def _alike(items: list[Any]) -> bool:
    """An array of like elements (batches, readings, hashes), not a record of fields."""
    return len({type(x) for x in items}) == 1 and not isinstance(items[0], (int, float, str, bool))


def _free_key(m: dict[Any, Any]) -> Any:
    if m and all(isinstance(k, int) for k in m):
        return max(m) + 1
    return "extra"


def _another_key(key: Any, m: dict[Any, Any]) -> Any:
    if isinstance(key, int):
        return next(k for k in range(key + 1, key + len(m) + 2) if k not in m)
    if isinstance(key, str):
        return key + "_"
    return key + b"_"


def _other_key(key: Any) -> Any:
    if isinstance(key, int):
        return str(key)
    return key.encode() if isinstance(key, str) else key.hex()


def _brief(value: Any) -> str:
    text = repr(plain(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _const(value: Any) -> Change:
    return lambda _: value


def _without(step: Any) -> Change:
    def change(container: Any) -> Any:
        if isinstance(container, list):
            return container[:step] + container[step + 1 :]
        return {k: v for k, v in container.items() if k != step}

    return change


def _repeated(index: int) -> Change:
    return lambda items: [*items[: index + 1], items[index], *items[index + 1 :]]


def _swapped(i: int) -> Change:
    return lambda items: [*items[:i], items[i + 1], items[i], *items[i + 2 :]]


def _rekeyed(old: Any, new: Any) -> Change:
    return lambda m: {(new if k == old else k): v for k, v in m.items()}
