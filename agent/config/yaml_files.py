"""Reading one YAML file into PyYAML's node tree, and saying plainly why it cannot be read."""

from __future__ import annotations

import os

import yaml


class FileProblem(Exception):
    """The file cannot be used. `position` is (line, column) in the file, 1-based, for a
    syntax error; None when the file itself is missing or unreadable."""

    def __init__(self, position: tuple[int, int] | None, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.message = message


MAX_FILE_BYTES = 64 << 20  # far above any tag list; keeps /dev/zero from filling memory


def display_path(path: str) -> str:
    """`path` relative to the current directory, or absolute when that would need '..'."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # on another drive (Windows)
        return os.path.abspath(path)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return os.path.abspath(path) if outside else relative


def compose_file(file: str) -> yaml.Node | None:
    """The root node of `file`, None when it holds no document. Every node's marks name
    `file`, so a node always tells which file it came from."""
    try:
        if os.path.exists(file) and not os.path.isfile(file):
            raise FileProblem(None, f"expected a YAML file, found '{file}', which is not a regular file")
        if os.path.getsize(file) > MAX_FILE_BYTES:
            raise FileProblem(None, f"expected a YAML file of at most {MAX_FILE_BYTES >> 20} MiB, found '{file}'")
        with open(file, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise FileProblem(None, f"expected a YAML file, found no file at '{file}'") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise FileProblem(None, f"expected a readable UTF-8 YAML file, found '{file}' ({reason})") from None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = file
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise _syntax_problem(err, text) from None
    except RecursionError:
        raise FileProblem(
            None, f"expected YAML nested at most a few hundred levels deep, found deeper in '{file}'"
        ) from None


def _syntax_problem(err: yaml.YAMLError, text: str) -> FileProblem:
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark, context = err.problem_mark, err.context_mark
        message = _syntax_message(err.problem or "", err.context, context.line + 1 if context else None)
        return FileProblem((mark.line + 1, mark.column + 1), message)
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        column = err.position - text.rfind("\n", 0, err.position)
        character = err.character
        found = f"the control character U+{character:04X}" if isinstance(character, int) else "bytes, not text"
        return FileProblem((line, column), f"expected printable text, found {found}")
    return FileProblem((1, 1), f"invalid YAML: {err}")


# PyYAML names tokens in its messages; say what they mean in the file instead.
_TOKENS = {
    "'<block end>'": "the end of the indented block",
    "<block end>": "the end of the indented block",
    "'<block mapping start>'": "a key indented differently",
    "'<block sequence start>'": "a list indented differently",
    "'<block entry>'": "a list item ('- ')",
    "'<stream end>'": "the end of the file",
    "'<document start>'": "a new document ('---')",
    "'<scalar>'": "a value",
    "'?'": "a key",
}

_PROBLEMS = {
    "found character '\\t' that cannot start any token": "expected spaces for indentation, found a tab character",
    "mapping values are not allowed here": "expected a value, found ': ' (quote a value that contains ': ', "
    "or check the indentation of this line)",
    "could not find expected ':'": "expected ':' after a key, found none (check the indentation)",
}


def _syntax_message(problem: str, context: str | None, context_line: int | None) -> str:
    """A PyYAML syntax error as one sentence saying what was expected and what was found."""
    text = _PROBLEMS.get(problem, problem)
    for token, words in _TOKENS.items():
        text = text.replace(token, words)
    text = text.replace(", but found", ", found").replace(", but got", ", found")
    if context and text.startswith("but found"):
        return f"invalid YAML: {context}, {text[4:]}"
    if context and context_line is not None:
        return f"invalid YAML: {text} ({context} at line {context_line})"
    return f"invalid YAML: {text}"
