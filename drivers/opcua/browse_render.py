"""What `edgeseal browse` found, and how it is printed: pure, no I/O and no asyncua.

`render_tree` is the indented tree; `render_yaml` a ready-to-edit `sources:` item whose
tags are the readable variables. A tag's name is its browse path below the Objects
folder (from the start node, its own name included, when the walk starts elsewhere),
lower-case, dots between the names; its node id is written with the namespace URI
(nsu=), which, unlike an index, survives a server's restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from drivers.opcua.config import Mode, Policy
from drivers.opcua.nodeid import NodeRef

OBJECTS_REF = NodeRef(0, "i", 85)  # the Objects folder (ua.ObjectIds.ObjectsFolder)
MAX_TAG_NAME = 128  # config_types.TagName
MAX_SOURCE_NAME = 64  # config_types.SourceName
_NOT_IN_NAMES = re.compile(r"[^a-z0-9._-]")  # after lower-casing; what SourceName allows
INDENT = "  "


@dataclass(frozen=True)
class Access:
    """How to connect, as given on the command line."""

    policy: Policy = "None"
    mode: Mode | None = None  # None: SignAndEncrypt with a secure policy
    username: str | None = None
    password_env: str | None = None
    state_dir: Path | None = None


@dataclass
class Found:
    """A node met in the walk. `path` holds the browse names from the start node, its own first."""

    path: tuple[str, ...]
    node: NodeRef
    is_variable: bool
    data_type: str = ""  # of a variable: "Double", "Int32[]"
    readable: bool = False  # a variable whose value this user may read
    problem: str | None = None  # why its children are missing
    children: list[Found] = field(default_factory=list)

    def walk(self) -> Iterator[Found]:
        """This node and all below it, depth first, in the server's order."""
        yield self
        for child in self.children:
            yield from child.walk()


def render_tree(root: Found) -> str:
    """One line per node, indented by depth: browse name and node id, and for a variable
    its data type and whether it is readable; a count of the variables at the end."""
    lines = []
    for found in root.walk():
        parts = [printable(found.path[-1]), printable(found.node.text())]
        if found.is_variable:
            parts += [found.data_type, "readable" if found.readable else "not readable"]
        if found.problem:
            parts.append(f"({found.problem})")
        lines.append(INDENT * (len(found.path) - 1) + "  ".join(parts))
    variables = [found for found in root.walk() if found.is_variable]
    lines.append(f"{len(variables)} variables, {sum(found.readable for found in variables)} readable")
    return "\n".join(lines) + "\n"


def render_yaml(root: Found, url: str, access: Access) -> str:
    """A `sources:` item for the server at `url` with one subscribe group whose tags are the
    readable variables, each under a comment giving its data type and browse path; the
    variables left out for being unreadable are listed in comments at the end."""
    variables = [found for found in root.walk() if found.is_variable]
    readable = [found for found in variables if found.readable]
    names = unique_names(tag_name(_tag_path(found, root)) for found in readable)
    lines = [
        f"# edgeseal browse: {len(readable)} readable variables below {printable('/'.join(root.path))}",
        "sources:",
        f"  - name: {_scalar(source_name(url))}",
        "    type: opcua",
        f"    url: {_scalar(url)}",
        *_access_lines(access),
        "    groups:",
        "      - mode: subscribe",
        "        publishing_interval: 1s",
        "        tags:",
    ]
    tag = INDENT * 5
    for name, found in zip(names, readable):
        lines += [
            f"{tag}# {_comment(found)}",
            f"{tag}- name: {_scalar(name)}",
            f"{tag}  node: {_scalar(found.node.text())}",
        ]
    unreadable = [found for found in variables if not found.readable]
    if unreadable:
        lines.append(f"{tag}# not readable, left out:")
        lines += [f"{tag}#   {_comment(found)}  {printable(found.node.text())}" for found in unreadable]
    return "\n".join(lines) + "\n"


def tag_name(path: Sequence[str]) -> str:
    """Browse names lower-cased and joined by dots; characters other than letters,
    digits and . _ - become _."""
    name = ".".join(_NOT_IN_NAMES.sub("_", segment.lower()) or "_" for segment in path)
    return name[:MAX_TAG_NAME]


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, a later one of a clash suffixed _2, _3, ..."""
    used: set[str] = set()
    result = []
    for name in names:
        unique, n = name, 1
        while unique in used:
            n += 1
            unique = name[: MAX_TAG_NAME - len(f"_{n}")] + f"_{n}"
        used.add(unique)
        result.append(unique)
    return result


def source_name(url: str) -> str:
    """The server's host name as a source name: plc1 for opc.tcp://plc1:4840."""
    host = urlsplit(url).hostname or "opcua"
    return _NOT_IN_NAMES.sub("_", host.lower())[:MAX_SOURCE_NAME]


def _tag_path(found: Found, root: Found) -> tuple[str, ...]:
    """The names below the Objects folder: every instance path starts there, so its own
    name would only lengthen every tag name."""
    return found.path[1:] if root.node == OBJECTS_REF else found.path


def _access_lines(access: Access) -> list[str]:
    """The security and user the browse needed, which the agent needs too."""
    lines = []
    if access.policy != "None":
        lines += ["    security:", f"      policy: {access.policy}"]
        if access.mode is not None:
            lines.append(f"      mode: {access.mode}")
    if access.username is not None:
        lines += [
            "    auth:",
            f"      username: {_scalar(access.username)}",
            f"      password_env: {access.password_env}",
        ]
    return lines


def _comment(found: Found) -> str:
    return f"{found.data_type}, {printable('/'.join(found.path))}"


def _scalar(text: str) -> str:
    """`text` as a one-line YAML scalar that the configuration loader reads back as it is:
    quoted where YAML needs it, and `${` written `$${`, since the loader substitutes
    `${NAME}` from the environment."""
    text = text.replace("${", "$${")
    if text.isprintable():  # plain or single-quoted, on one line
        dumped = yaml.safe_dump(text, allow_unicode=True, width=float("inf"))
    else:  # double-quoted: line breaks and control characters escaped
        dumped = yaml.safe_dump(text, default_style='"', width=float("inf"))
    return dumped.removesuffix("\n...\n").removesuffix("\n")


def printable(text: str) -> str:
    """Control characters and line breaks escaped, as Python writes them: one line stays one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
