"""What the fuzzing promises (tests/promises/test_fuzz_*.py) share: how many examples
each property runs, and the figures each module prints when its tests are done.

    EDGESEAL_FUZZ_EXAMPLES=5000 pytest -s tests/promises/test_fuzz_bundle.py

Every input a property judges is counted under its target: accepted (a config, a
report, a value), rejected with the project's clear, typed error, or neither, which
fails the test; the printed line says how many of each there were:

    reliability: fuzz: bundle decoder: 300 inputs, 12 accepted, 288 clear errors, 0 tracebacks
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

EXAMPLES = int(os.environ.get("EDGESEAL_FUZZ_EXAMPLES", "300"))
# No deadline: one slow example (a deep YAML file, a verify with many signatures) on a
# busy CI machine is not a failure of the promise.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False)
# Properties that run the whole CLI or a whole verification per input take a tenth.
FUZZ_SLOW = settings(FUZZ, max_examples=max(10, EXAMPLES // 10))


class Tally:
    """Inputs judged per target, in the order targets were first seen."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def judged(self, target: str) -> None:
        """Called before judging an input: an input that is neither accepted nor
        rejected afterwards raised something else."""
        self._counts.setdefault(target, Counter())["inputs"] += 1

    def accepted(self, target: str) -> None:
        self._counts[target]["accepted"] += 1

    def rejected(self, target: str) -> None:
        self._counts[target]["rejected"] += 1

    def lines(self) -> list[str]:
        return [_line(target, counts) for target, counts in self._counts.items()]


def _line(target: str, counts: Counter[str]) -> str:
    n, accepted, rejected = counts["inputs"], counts["accepted"], counts["rejected"]
    return (
        f"reliability: fuzz: {target}: {n} inputs, {accepted} accepted, {rejected} clear errors, "
        f"{n - accepted - rejected} tracebacks"
    )


def figures(tally: Tally) -> Callable[..., Any]:
    """A module fixture printing `tally`'s lines once the module's tests are done
    (visible with `pytest -s`); assign it to a name in the test module."""

    @pytest.fixture(scope="module", autouse=True)
    def print_figures() -> Iterator[None]:
        yield
        print()
        for line in tally.lines():
            print(line)

    return print_figures
