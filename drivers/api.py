"""The whole driver contract.

A driver is built from (validated config, sink, context); construction does no I/O.
`run()` is one coroutine that reads its devices until cancelled. Device faults never
escape it: they become readings with a Bad quality (see `Quality`) and a backoff.
Readings reach the agent in batches through `ReadingSink.submit`, which is awaited so
that back pressure reaches the driver.

Nothing here knows of signing, buffering, MQTT or chains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

Value = bool | int | float | str | bytes | None | list[Any] | dict[str, Any]


class Quality(IntEnum):
    """OPC UA StatusCodes used by edgeseal drivers (uint32; 0 is Good)."""

    GOOD = 0x00000000
    UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_ENCODING_ERROR = 0x80060000
    BAD_TIMEOUT = 0x800A0000
    BAD_CONFIGURATION_ERROR = 0x80890000
    BAD_NODE_ID_UNKNOWN = 0x80340000
    BAD_OUT_OF_SERVICE = 0x808D0000
    BAD_DEVICE_FAILURE = 0x808B0000
    BAD_DATA_ENCODING_UNSUPPORTED = 0x80390000


def is_good(quality: int) -> bool:
    """Severity bits 30-31 are 00 for Good (OPC UA Part 4, 7.39)."""
    return quality & 0xC0000000 == 0


def is_bad(quality: int) -> bool:
    """Severity bits 30-31 are 10 for Bad (11 is reserved and treated as Bad)."""
    return quality & 0x80000000 != 0


class Reading(NamedTuple):
    """One value of one tag. `ts` is integer nanoseconds since the Unix epoch, UTC.
    A reading with a Bad quality carries no value (the agent stores null for it);
    Uncertain qualities may carry one, e.g. Uncertain_LastUsableValue."""

    tag: str
    ts: int
    value: Value
    quality: int = Quality.GOOD


class ReadingSink(Protocol):
    """Where a driver delivers its readings. Never raises for a full buffer:
    the agent records drops as signed gaps instead of stopping a driver."""

    async def submit(self, readings: Sequence[Reading]) -> None: ...


@dataclass(frozen=True)
class DriverContext:
    """What the agent lends a driver: a logger named after the source, a state
    directory the driver may use for its own files (e.g. client certificates),
    `secret`, which reads a TPM-sealed secret by name (None when the agent has no TPM), and
    `observe_read`, told (seconds, succeeded) of each read a driver times with `timing_read`."""

    source_name: str
    logger: logging.Logger
    state_dir: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    secret: Callable[[str], Awaitable[str]] | None = None
    observe_read: Callable[[float, bool], None] | None = None

    def count(self, name: str, increment: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + increment

    @contextmanager
    def timing_read(self) -> Iterator[None]:
        """Around one read of a device: a read that raises failed (and the error goes on)."""
        if self.observe_read is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        except Exception:  # not CancelledError: a cancelled read neither failed nor succeeded
            self.observe_read(time.perf_counter() - started, False)
            raise
        self.observe_read(time.perf_counter() - started, True)


@runtime_checkable
class Driver(Protocol):
    """Built by its factory from (config, sink, context); `run` until cancelled."""

    async def run(self) -> None: ...
