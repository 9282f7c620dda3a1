"""Runs a driver in the test's event loop and records what it submits: the harness of
the drivers' integration tests (Modbus, OPC UA)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from drivers.api import Driver, DriverContext, Reading, ReadingSink

Factory = Callable[[Any, ReadingSink, DriverContext], Driver]


def in_new_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test body, run with asyncio.run (the suite needs no asyncio plugin);
    its fixtures are requested as usual."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Sink:
    """Records every batch with the loop time it arrived at."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Reading]]] = []
        self._changed = asyncio.Event()

    async def submit(self, readings: Sequence[Reading]) -> None:
        self.batches.append((asyncio.get_running_loop().time(), list(readings)))
        self._changed.set()

    def latest(self) -> dict[str, Reading]:
        """The last reading of every tag."""
        return {r.tag: r for _, batch in self.batches for r in batch}

    def qualities(self, tag: str) -> list[int]:
        return [r.quality for _, batch in self.batches for r in batch if r.tag == tag]

    async def wait(self, condition: Callable[[Sink], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition(self):
                self._changed.clear()
                await self._changed.wait()

    async def wait_batch(self, condition: Callable[[dict[str, Reading]], bool], timeout: float = 5.0) -> None:
        """Until a batch whose readings (by tag) satisfy `condition` arrives."""
        seen = len(self.batches)

        def arrived(sink: Sink) -> bool:
            nonlocal seen
            fresh, seen = sink.batches[seen:], len(sink.batches)
            return any(condition({r.tag: r for r in batch}) for _, batch in fresh)

        await self.wait(arrived, timeout)


class Running:
    """A driver running in the current loop: `async with Running(create, config) as run:`,
    where `create` is the driver module's factory."""

    def __init__(self, create: Factory, config: Any, state_dir: str | None = None) -> None:
        self.sink = Sink()
        self.context = DriverContext(config.name, logging.getLogger(f"test.{config.type}.{config.name}"), state_dir)
        self._driver = create(config, self.sink, self.context)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self._task = asyncio.create_task(self._driver.run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        async with asyncio.timeout(5):  # a driver must stop when cancelled
            (outcome,) = await asyncio.gather(self._task, return_exceptions=True)
        if not self._task.cancelled():
            raise AssertionError("the driver ended by itself") from outcome

    def count(self, name: str) -> int:
        return self.context.counters.get(name, 0)


def all_good(readings: dict[str, Reading]) -> bool:
    return bool(readings) and all(r.quality == 0 for r in readings.values())
