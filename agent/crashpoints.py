"""Crash points: the places where the crash suite cuts the agent off as a power cut would.

Each sits between two steps whose order a promise depends on: readings written but not
committed, a seal signed but not stored, a batch acknowledged by the broker but not yet
marked delivered, an anchor transaction journalled but not sent. With
`EDGESEAL_CRASH_AT=seal.signed:3` in the environment, the third arrival at
`crash_point("seal.signed")` kills the process with SIGKILL: no handler runs, nothing is
flushed, only what is already on disk survives. Unset, which is how the service always
runs, a crash point costs one comparison.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from agent.errors import UsageError

ENV = "EDGESEAL_CRASH_AT"
POINTS = (
    "readings.written",  # a chunk of readings inserted, its transaction not committed
    "seal.signed",  # a seal's signature made, the seal not stored
    "seal.written",  # the seal row inserted, its fsync'd commit not done
    "checkpoint.signed",
    "checkpoint.written",
    "batch.acknowledged",  # the broker acknowledged a batch, the buffer not told
    "checkpoint.acknowledged",
    "anchor.journaled",  # a signed transaction fsync'd to the journal, not sent
    "anchor.sent",  # sent to the node, its receipt not seen
    "anchor.final",  # final on chain, the anchor record not stored
)

_armed: str | None = None
_left = 0


def arm(environ: Mapping[str, str]) -> None:
    """Reads `EDGESEAL_CRASH_AT=POINT[:N]` (N-th arrival, default 1) once, at start."""
    global _armed, _left
    spec = environ.get(ENV, "")
    if not spec:
        _armed = None
        return
    name, _, nth = spec.partition(":")
    if name not in POINTS or not (nth or "1").isdecimal() or int(nth or "1") < 1:
        raise UsageError(f"{ENV}={spec}: expected POINT[:N] with N >= 1, POINT one of {', '.join(POINTS)}")
    _armed, _left = name, int(nth or "1")


def crash_point(name: str) -> None:
    global _left
    if name != _armed:
        return
    _left -= 1
    if _left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
