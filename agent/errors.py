"""The error tree. Every error a user can cause maps to one exit code.

    EdgesealError                  exit 2 unless said otherwise
    ├── UsageError                 bad command-line use
    ├── ConfigError                invalid configuration: one Problem per finding, all at once
    ├── KeyError_                  a signing key or certificate cannot be used
    │   └── TpmError               the TPM refused a command
    │       └── TpmUnreachable     the TPM cannot be reached (TCTI failure)
    ├── SigningError               a signature failed for now (e.g. a busy TPM): retried
    ├── BufferError_               the state directory / database cannot be used
    ├── InvalidBundle              input is not a usable bundle (malformed, truncated)
    ├── VerificationFailed         exit 1: well-formed data that does not verify
    └── DeviceFailed               exit 1: a probed device answered badly or not at all

"Input is malformed" (exit 2) is kept apart from "verification failed" (exit 1),
as the design contract's exit codes demand. The CLI catches `EdgesealError` once and
prints `diagnostics()`; no traceback reaches a user for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgesealError(Exception):
    exit_code = 2

    def diagnostics(self) -> str:
        return str(self)


class UsageError(EdgesealError):
    pass


@dataclass(frozen=True)
class Problem:
    """One finding in a configuration file. Line and column are 1-based."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(EdgesealError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.column, p.path))
        super().__init__(self.diagnostics())

    def diagnostics(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class KeyError_(EdgesealError):
    """A key or certificate problem (named with a trailing underscore: not the builtin)."""


class TpmError(KeyError_):
    """`transient` says whether the same command may succeed later (a busy or unreachable
    TPM, a dictionary-attack lockout) or never will (an empty handle, a wrong key)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class TpmUnreachable(TpmError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class SigningError(EdgesealError):
    """A signer could not sign this time; the sealer retries with backoff. Signers raise
    it for transient conditions only: anything else ends the agent."""


class BufferError_(EdgesealError):
    """The buffer database cannot be opened or written as required."""


class InvalidBundle(EdgesealError):
    pass


class VerificationFailed(EdgesealError):
    exit_code = 1


class DeviceFailed(EdgesealError):
    exit_code = 1
