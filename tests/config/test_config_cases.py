"""Configuration cases as files, run by one test.

Each folder under cases/ holds config.yaml (plus any files it includes), expected.txt
with the exact diagnostics, one per line (empty: the file is valid), and optionally
env.txt: NAME=value lines, the whole environment the case sees. The loader runs with
the case folder as current directory, so the file names in expected.txt are relative.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError

CASES = Path(__file__).parent / "cases"


def _environment(folder: Path) -> dict[str, str]:
    env_file = folder / "env.txt"
    if not env_file.exists():
        return {}
    return dict(line.split("=", 1) for line in env_file.read_text(encoding="utf-8").splitlines() if line)


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = CASES / case
    monkeypatch.chdir(folder)
    expected = (folder / "expected.txt").read_text(encoding="utf-8").splitlines()
    try:
        load_config("config.yaml", env=_environment(folder))
    except ConfigError as error:
        assert [str(problem) for problem in error.problems] == expected
    else:
        assert expected == [], "the configuration loaded, but problems were expected"
