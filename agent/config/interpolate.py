"""`${NAME}` and `${NAME:-default}` in configuration text, so secrets and per-site values
can come from the environment instead of the file. `$${` stands for a literal `${`."""

from __future__ import annotations

import re
from collections.abc import Mapping

# An escaped "$${", a whole "${...}", or an opening "${" that is never closed.
_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class InterpolationError(ValueError):
    """The text refers to a variable that cannot be substituted; str() says why."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    return _TOKEN.sub(lambda match: _substitute(match, env), text)


def is_one_reference(text: str) -> bool:
    """True when the whole text is a single `${...}`: its result is then typed like YAML."""
    match = _TOKEN.fullmatch(text)
    return match is not None and match.group(1) is not None


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group(0) == "$${":
        return "${"
    body = match.group(1)
    if body is None:
        raise InterpolationError("expected ${NAME} or ${NAME:-default}, found '${' without a closing '}'")
    reference = _REFERENCE.fullmatch(body)
    if reference is None:
        raise InterpolationError(f"expected ${{NAME}} or ${{NAME:-default}}, found '${{{body}}}'")
    name, default = reference.groups()
    # As in the shell: the default also stands in for a variable that is set but empty.
    if env.get(name):
        return env[name]
    if default is not None:
        return default
    if name in env:
        return ""
    raise InterpolationError(f"environment variable {name} is not set")
