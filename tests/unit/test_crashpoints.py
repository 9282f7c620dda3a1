"""The crash suite's kill switch: armed only by the environment, exact about the arrival
it kills at, and a clear error for a point that does not exist."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from agent import crashpoints
from agent.errors import UsageError

PROGRAM = """
import os
from agent import crashpoints
crashpoints.arm(os.environ)
for i in range(1, 6):
    crashpoints.crash_point("seal.written")
    crashpoints.crash_point("seal.signed")
    print(i, flush=True)
"""


def run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {crashpoints.ENV: spec} if spec else {}
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=30)


def test_the_nth_arrival_at_the_named_point_kills_the_process() -> None:
    done = run("seal.signed:3")
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2"]


def test_unarmed_points_do_nothing() -> None:
    assert run(None).stdout.split() == ["1", "2", "3", "4", "5"]
    assert run("anchor.final").stdout.split() == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("spec", ["seal.signd", "seal.signed:0", "seal.signed:x", "seal.signed:-1"])
def test_a_bad_specification_is_a_usage_error_naming_the_points(spec: str) -> None:
    with pytest.raises(UsageError, match="seal.signed, seal.written"):
        crashpoints.arm({crashpoints.ENV: spec})
