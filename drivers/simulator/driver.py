"""A synthetic source: configurable tags, types, rates and value patterns, with
simulated device faults. Used by tests, benchmarks and the demo; the first
implementation of the driver contract in drivers/api.py."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from drivers.api import DriverContext, Reading, ReadingSink
from drivers.simulator.config import SourceConfig
from drivers.simulator.patterns import converter, make_pattern


@dataclass(frozen=True)
class _Fault:
    every: float
    duration: float
    quality: int

    def active(self, t: float) -> bool:
        return (t % self.every) >= self.every - self.duration


class _Tag(NamedTuple):
    name: str
    sample: Callable[[float, int], Any]
    fault: _Fault | None


def _sampler(
    kind: str, value_type: str, lo: float, hi: float, period: float, name: str, constant: Any = None
) -> Callable[[float, int], Any]:
    if kind == "constant" and constant is not None:
        return lambda _t, _k: constant
    pattern = make_pattern(kind, lo, hi, period, name)
    if value_type == "float":
        return pattern  # patterns produce floats already
    convert = converter(value_type)
    return lambda t, k: convert(pattern(t, k))


def _tags(config: SourceConfig) -> list[_Tag]:
    tags = []
    for t in config.tags:
        fault = _Fault(t.fault.every, t.fault.duration, t.fault.quality) if t.fault else None
        sample = _sampler(t.pattern, t.type, t.min, t.max, t.period, t.name, t.value)
        tags.append(_Tag(t.name, sample, fault))
    if g := config.generate:
        for name in g.names():
            tags.append(_Tag(name, _sampler(g.pattern, g.type, g.min, g.max, g.period, name), None))
    return tags


class SimulatorDriver:
    def __init__(self, config: SourceConfig, sink: ReadingSink, context: DriverContext) -> None:
        self._config, self._sink, self._context = config, sink, context
        self._tags = _tags(config)
        self.samples = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._config.interval
        next_at = loop.time()
        while True:
            with self._context.timing_read():
                readings = self._sample()
            await self._sink.submit(readings)
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:
                # A scan longer than its period: skip the missed scans, never overlap them.
                missed = math.ceil(-delay / interval)
                self._context.count("scan_overruns", missed)
                next_at += missed * interval
                delay = next_at - loop.time()
            await asyncio.sleep(delay)

    def _sample(self) -> list[Reading]:
        ts = time.time_ns()
        t, k = ts / 1e9, self.samples
        self.samples += 1
        return [
            Reading(name, ts, None, fault.quality)
            if fault is not None and fault.active(t)
            else Reading(name, ts, sample(t, k), 0)
            for name, sample, fault in self._tags
        ]


def create(config: SourceConfig, sink: ReadingSink, context: DriverContext) -> SimulatorDriver:
    return SimulatorDriver(config, sink, context)
