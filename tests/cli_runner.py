"""`edgeseal` run in-process by CLI tests: exit code, stdout and stderr of one command.
An exception that escapes main() is what a user would see as a traceback: its code is
"uncaught exception" and the traceback is in `err`."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from agent.cli import main


@dataclass
class Result:
    code: int | str | None
    out: str
    err: str

    def error(self) -> str:
        """The one line on stderr."""
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeseal: "), self.err
        return lines[0]


R = TypeVar("R", bound=Result)


def one_line_error(result: Result, code: int, *words: str) -> None:
    """The command failed with exit `code` and one `edgeseal: ...` line holding `words`."""
    assert result.code == code, f"exit {result.code!r}, expected {code}: {result.out}{result.err}"
    line = result.error()
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def in_process(
    capsys: pytest.CaptureFixture[str],
    *command: str,
    result: type[R] = Result,  # type: ignore[assignment]
) -> Callable[..., R]:
    """A function running `edgeseal COMMAND... ARGS...` and returning its `result`."""

    def run(*argv: str | Path) -> R:
        capsys.readouterr()
        try:
            code: int | str | None = main([*command, *(str(a) for a in argv)])
        except SystemExit as exc:
            code = exc.code
        except Exception:
            code = "uncaught exception"
            print(traceback.format_exc(), file=sys.stderr)
        captured = capsys.readouterr()
        return result(code, captured.out, captured.err)

    return run
