"""Value patterns of simulated tags: pure functions of time (seconds) and sample count."""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

Pattern = Callable[[float, int], float]


def make_pattern(kind: str, lo: float, hi: float, period: float, seed: str) -> Pattern:
    """A function (t, sample_no) -> float. Random patterns are seeded by the tag name so
    a run is reproducible."""
    mid, amp = (lo + hi) / 2, (hi - lo) / 2
    if kind == "sine":
        return lambda t, _: mid + amp * math.sin(2 * math.pi * t / period)
    if kind == "ramp":
        return lambda t, _: lo + (hi - lo) * ((t % period) / period)
    if kind == "step":
        return lambda t, _: lo if (t % period) < period / 2 else hi
    if kind == "counter":
        return lambda _, k: lo + k
    if kind == "random":
        draw, span = random.Random(zlib.crc32(seed.encode())).random, hi - lo
        return lambda _t, _k: lo + span * draw()
    if kind == "constant":
        return lambda _t, _k: lo
    raise ValueError(f"unknown pattern {kind!r}")


def converter(value_type: str) -> Callable[[float], Any]:
    """Turns a pattern's float into the tag's configured value type."""
    return {
        "float": float,
        "int": lambda x: int(round(x)),
        "bool": lambda x: x >= 0.5 if abs(x) <= 1 else x > 0,
        "text": lambda x: f"{x:.3f}",
        "bytes": lambda x: struct.pack(">d", x),
    }[value_type]
