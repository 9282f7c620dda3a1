"""YAML files -> plain values, remembering the file, line and column of every node.

Values are built from PyYAML's composed nodes instead of `yaml.safe_load`, so that every
node keeps its position, a key written twice is caught (PyYAML silently keeps the last),
`!include` is followed and `${NAME}` is substituted before validation sees the value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import yaml

from agent.config.document import Document, Path, Where
from agent.config.interpolate import InterpolationError, interpolate, is_one_reference
from agent.config.wording import show
from agent.config.yaml_files import FileProblem, compose_file, display_path

INCLUDE = "!include"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_YAML_TAG = "tag:yaml.org,2002:"
_COLLECTION_TAGS = {_YAML_TAG + name for name in ("map", "seq")}
_SCALAR_TAGS = {_YAML_TAG + name for name in ("null", "bool", "int", "float", "str", "binary", "timestamp")}
# Aliases expand in place, so a small file can stand for billions of values ("billion
# laughs"). Building stops past this many values, far more than any real configuration.
MAX_VALUES = 1_000_000
# PyYAML's scalar constructors expect text their tag's pattern matched; an explicit tag
# (`!!int ''`, `!!bool x`, `!!timestamp 2024-1-1 1:2:3.4: 5`) skips that match, and they
# fail with whatever Python raises for it: IndexError, KeyError, AttributeError.
_CONSTRUCT_ERRORS = (yaml.YAMLError, ValueError, TypeError, LookupError, AttributeError)


class _Unloaded(Exception):
    """A node could not be loaded; its problem is already reported."""


class _TooManyValues(Exception):
    """More than MAX_VALUES values; reported, and nothing more of the file is built."""


def load_yaml(path: str, env: Mapping[str, str]) -> Document:
    builder = _Builder(env)
    builder.load_root(display_path(path))
    return builder.doc


def _where(node: yaml.Node) -> Where:
    return Where(node.start_mark.name, node.start_mark.line + 1, node.start_mark.column + 1)


def _tag(node: yaml.Node) -> str:
    """A tag as written: tag:yaml.org,2002:seq is written !!seq."""
    return "!!" + node.tag.removeprefix(_YAML_TAG) if node.tag.startswith(_YAML_TAG) else node.tag


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return "a list" if isinstance(node, yaml.SequenceNode) else f"'{node.value}'"


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.doc = Document()
        self._env = env
        self._scalars = yaml.SafeLoader("")  # resolves and constructs scalar values
        self._files: list[tuple[str, str]] = []  # (real path, shown path) of files being read
        # Each file is read once: an !include of it again reuses its nodes, like an alias.
        self._composed: dict[str, yaml.Node | None | FileProblem] = {}
        self._failed: set[tuple[str, Where]] = set()  # (file, !include) failures reported
        self._targets: dict[tuple[str, str], tuple[str, str]] = {}  # (file, !include) -> _target
        self._building: set[int] = set()  # nodes being built: an alias back to one is a loop
        self._built: dict[int, yaml.Node] = {}  # nodes built once (kept, so ids stay unique)
        self._repeat: tuple[yaml.Node, Path] | None = None  # the outermost alias being expanded
        self._count = 0  # values built so far, counting every expansion of an alias
        self._unloadable: set[tuple[Where, str]] = set()  # problems _unload reported

    def load_root(self, file: str) -> None:
        try:
            root = self._compose(file, Where(file, 1, 1), ())
        except _Unloaded:
            return
        if root is None:
            self.doc.report(Where(file, 1, 1), (), "expected a mapping at the top level, found an empty file")
            return
        try:
            with self._reading(os.path.realpath(file), file):
                data = self._value(root, ())
        except _TooManyValues:
            return
        if isinstance(data, dict):
            self.doc.data = data
        elif () not in self.doc.unloaded:
            self.doc.report(_where(root), (), f"expected a mapping at the top level, found {show(data)}")

    @contextmanager
    def _reading(self, real: str, file: str) -> Iterator[None]:
        self._files.append((real, file))
        try:
            yield
        finally:
            self._files.pop()

    def _compose(self, file: str, blame: Where, path: Path) -> yaml.Node | None:
        """The root node of `file` (None when it is empty). A file that cannot be read is
        reported at `blame` (the `!include`), a syntax error where it is in the file; once
        for each `!include`, however often an alias or include repeats it."""
        if file not in self._composed:
            try:
                self._composed[file] = compose_file(file)
            except FileProblem as problem:
                self._composed[file] = problem
        composed = self._composed[file]
        if not isinstance(composed, FileProblem):
            return composed
        if (file, blame) not in self._failed:
            self._failed.add((file, blame))
            if composed.position is None:
                self.doc.report(blame, path, composed.message)
            else:
                self.doc.report(Where(file, *composed.position), (), composed.message)
        raise _Unloaded

    def _value(self, node: yaml.Node, path: Path) -> Any:
        if node.tag == INCLUDE:
            return self._include(node, path)
        self._counted(node, path)
        self.doc.values[path] = _where(node)
        if id(node) in self._building:
            return self._unload(node, path, "expected a value, found an alias to a node that contains it")
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            return self._unload(node, path, f"expected a plain mapping or list, found the tag {_tag(node)}")
        outermost = self._enter(node, path)
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._scalar(cast(yaml.ScalarNode, node), path)
        finally:
            self._leave(node, outermost)

    def _enter(self, node: yaml.Node, path: Path) -> bool:
        """Marks `node` as being built. A node built before is built again for an alias:
        True when it is the outermost such node, which _leave must then be told."""
        outermost = self._repeat is None and id(node) in self._built
        if outermost:
            self._repeat = (node, path)
        self._building.add(id(node))
        self._built[id(node)] = node
        return outermost

    def _leave(self, node: yaml.Node, outermost: bool) -> None:
        self._building.discard(id(node))
        if outermost:
            self._repeat = None

    def _counted(self, node: yaml.Node, path: Path) -> None:
        """Counts a value about to be built; past MAX_VALUES, reports it at the outermost
        alias being expanded (else at `node`) and stops building."""
        self._count += 1
        if self._count > MAX_VALUES:
            blame, at = self._repeat or (node, path)
            message = f"expected at most {MAX_VALUES} values in total (aliases expand in place), found more"
            self.doc.report(_where(blame), at, message + "; is this an alias bomb?")
            raise _TooManyValues

    def _unload(self, node: yaml.Node, path: Path, message: str) -> None:
        """Reports a value that cannot be loaded, once: an alias repeating it adds no problem."""
        if (_where(node), message) not in self._unloadable:
            self._unloadable.add((_where(node), message))
            self.doc.report(_where(node), path, message)
        self.doc.unloaded.append(path)

    def _include(self, node: yaml.Node, path: Path) -> Any:
        self.doc.values[path] = _where(node)
        try:
            with self._included(node, path) as root:
                return self._value(root, path)
        except _Unloaded:
            self.doc.unloaded.append(path)
            return None

    @contextmanager
    def _included(self, node: yaml.Node, path: Path) -> Iterator[yaml.Node]:
        """The root node of the file an `!include` names, while that file is being read."""
        self._counted(node, path)
        blame = _where(node)
        if not isinstance(node, yaml.ScalarNode) or not node.value:
            self.doc.report(blame, path, f"expected a file path after !include, found {_node_kind(node)}")
            raise _Unloaded
        file, real = self._target(blame.file, node.value)
        reading = [each for each, _ in self._files]
        if real in reading:
            cycle = " -> ".join([shown for _, shown in self._files[reading.index(real) :]] + [file])
            self.doc.report(blame, path, f"expected a file not already being included, found a cycle: {cycle}")
            raise _Unloaded
        root = self._compose(file, blame, path)
        if root is None:
            self.doc.report(blame, path, f"expected YAML content in '{file}', found an empty file")
            raise _Unloaded
        with self._reading(real, file):
            yield root

    def _target(self, including: str, included: str) -> tuple[str, str]:
        """(shown path, real path) of the file `included` names, relative to `including`."""
        if (including, included) not in self._targets:
            file = display_path(os.path.join(os.path.dirname(os.path.abspath(including)), included))
            self._targets[including, included] = (file, os.path.realpath(file))
        return self._targets[including, included]

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node, merged in self._pairs(node, path):
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.report(_where(key_node), path, f"expected a key, found {_node_kind(key_node)}")
                continue
            key, here = key_node.value, path + (key_node.value,)
            if key in result:
                if not merged:  # a merged key gives way to keys written in the mapping itself
                    first = self.doc.keys[here]
                    where = f"line {first.line}, column {first.column}"
                    self.doc.report(
                        _where(key_node),
                        here,
                        f"expected each key once, found '{key}' again (first at {where})",
                    )
                continue
            self.doc.keys[here] = _where(key_node)
            result[key] = self._value(value_node, here)
        return result

    def _pairs(self, node: yaml.MappingNode, path: Path) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """Key/value pairs, written ones first, then those of `<<:` merges (YAML merge keys)."""
        written = [(key, value, False) for key, value in node.value if key.tag != _MERGE]
        merged = []  # merges copy pairs (through aliases too): count the copies as they come
        for merge_key, source in node.value:
            if merge_key.tag == _MERGE:
                for key, value, _ in self._merge_source(source, path):
                    self._counted(source, path)
                    merged.append((key, value, True))
        return written + merged

    def _merge_source(self, node: yaml.Node, path: Path) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        if id(node) in self._building:
            self.doc.report(
                _where(node), path, "expected a mapping to merge, found an alias to a node that contains it"
            )
            return []
        outermost = self._enter(node, path)
        try:
            if isinstance(node, yaml.MappingNode):
                return self._pairs(node, path)
            if isinstance(node, yaml.SequenceNode) and all(isinstance(item, yaml.MappingNode) for item in node.value):
                return [pair for item in node.value for pair in self._merge_source(item, path)]
            self.doc.report(
                _where(node),
                path,
                f"expected a mapping or a list of mappings after '<<', found {_node_kind(node)}",
            )
            return []
        finally:
            self._leave(node, outermost)

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any]:
        items: list[Any] = []
        for item in self._items(node, path):
            items.append(self._value(item, path + (len(items),)))
        return items

    def _items(self, node: yaml.SequenceNode, path: Path) -> Iterator[yaml.Node]:
        """The items of a list, where an `!include` of a list stands for that list's items."""
        for item in node.value:
            if item.tag != INCLUDE:
                yield item
                continue
            try:
                with self._included(item, path) as root:
                    if isinstance(root, yaml.SequenceNode):
                        outermost = self._enter(root, path)
                        try:
                            yield from self._items(root, path)
                        finally:
                            self._leave(root, outermost)
                    else:
                        yield root
            except _Unloaded:
                self.doc.unloaded.append(path + (None,))

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        if node.tag == _STR and "${" in node.value:
            try:
                node = self._interpolated(node)
            except InterpolationError as err:
                return self._unload(node, path, str(err))
        if node.tag not in _SCALAR_TAGS:
            return self._unload(node, path, f"expected a plain value or !include, found the tag {_tag(node)}")
        construct = self._scalars.yaml_constructors[node.tag]
        try:
            return construct(self._scalars, node)
        except _CONSTRUCT_ERRORS:
            kind = node.tag.removeprefix(_YAML_TAG)
            return self._unload(node, path, f"expected a valid {kind}, found '{node.value}'")

    def _interpolated(self, node: yaml.ScalarNode) -> yaml.ScalarNode:
        """The node with `${...}` substituted; an unquoted scalar that is one reference
        only is typed like YAML would type the substituted text (`${N}` -> 5, an int)."""
        text = interpolate(node.value, self._env)
        tag = node.tag
        if node.style is None and is_one_reference(node.value):
            tag = self._scalars.resolve(yaml.ScalarNode, text, (True, False))
        return yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
