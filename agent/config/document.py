"""A loaded configuration document: plain values plus where each one was written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agent.config.wording import printable
from agent.errors import Problem

# A field path: mapping keys and list indices from the top, e.g. ("sources", 2, "tags").
# `None` as the last step stands for "an item of this list that could not be loaded".
Path = tuple[str | int | None, ...]


class Where(NamedTuple):
    """A position in a file; line and column are 1-based."""

    file: str
    line: int
    column: int


def format_path(path: Path) -> str:
    """("sources", 2, "tags", 5, "pattern") -> "sources[2].tags[5].pattern"."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif step is not None:
            text += f".{step}" if text else step
    return text


@dataclass
class Document:
    data: Any = None
    values: dict[Path, Where] = field(default_factory=dict)
    keys: dict[Path, Where] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Values replaced because loading them failed (unset variable, missing include):
    # validating them again would only repeat the problem already reported.
    unloaded: list[Path] = field(default_factory=list)

    def report(self, where: Where, path: Path, message: str) -> None:
        self.problems.append(
            Problem(where.file, where.line, where.column, printable(format_path(path)), printable(message))
        )

    def locate(self, path: Path, key: bool = False) -> Where:
        """The position of the key or value at `path`, else of its nearest written ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        raise LookupError(f"no position recorded for {format_path(path)!r}")

    def concerns_unloaded(self, path: Path) -> bool:
        """True when a problem at `path` may only be an echo of a value that failed to load:
        it lies inside that value, or is about a container holding it."""
        return any(path[: len(gone)] == gone or gone[: len(path)] == path for gone in self.unloaded)
