"""The Modbus driver: reads the devices of one source through one connection.

One task per poll group (a device's tags at one interval). Each group's requests are
planned once; each cycle reads them in order, decodes each answer with its compiled
decoder, stamps the readings with the time the answer arrived and submits the cycle's
readings in one batch. A failed request yields one Bad reading per point, never silence:

    connection refused, lost or garbled   Bad_CommunicationError (client reconnects, backing off)
    unit silent or busy                   Bad_Timeout; the unit is backed off: until its next
                                          try its groups read Bad without touching the bus,
                                          so the other units of a shared line keep their rate
    illegal data address (exception 2)    the request is split for good and retried at once;
                                          a point refused alone reads Bad_ConfigurationError
                                          and is not asked for again for REPROBE_AFTER
    other exception codes                 by code (see drivers.modbus.client)

A silent unit's backoff starts at the source's reconnect_delay and doubles up to
reconnect_delay_max, like the connection's. A scan longer than its interval never
overlaps the next: missed scans are skipped and counted. Availability changes are logged
once each way, not every cycle. Counters: requests and reconnects (by the client),
request_failures, request_splits, scan_overruns.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from drivers.api import DriverContext, Quality, Reading, ReadingSink
from drivers.modbus.addressing import describe
from drivers.modbus.client import ConnectionDown, IllegalAddress, Link, ModbusClient, NoAnswer, ReadError
from drivers.modbus.codec import compile_request
from drivers.modbus.config import PollGroup, SourceConfig
from drivers.modbus.planner import split
from drivers.modbus.points import Request

REPROBE_AFTER = 60.0  # seconds before asking again for what a device refused as misconfigured


class _Planned:
    """One request of a group with its decoder, compiled once."""

    __slots__ = ("request", "decode", "refused_until", "reported")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.decode = compile_request(request)
        self.refused_until = 0.0
        self.reported = False

    def bad(self, quality: int) -> list[Reading]:
        ts = time.time_ns()
        return [Reading(point.tag, ts, None, quality) for point in self.request.points]

    def describe(self) -> str:
        r = self.request
        return f"{r.count} {'bits' if r.table.is_bits else 'registers'} from {describe(r.table, r.start)}"


class _Group:
    def __init__(self, group: PollGroup) -> None:
        self.unit, self.interval, self.pause = group.unit, group.interval, group.request_pause
        self.requests = [_Planned(request) for request in group.requests()]
        self.refused: list[tuple[_Planned, ReadError]] = []  # newly refused this scan, to report


@dataclass
class _Unit:
    """One device's health: its backoff after timeouts, and what was last logged."""

    number: int
    failures: int = 0
    retry_at: float = 0.0
    quality: int = Quality.BAD_TIMEOUT
    problem: str | None = None


def _link(config: SourceConfig) -> Link:
    serial = config.serial_line()
    return Link(
        config.endpoint(),
        timeout=config.timeout,
        retries=config.retries,
        reconnect_delay=config.reconnect_delay,
        reconnect_delay_max=config.reconnect_delay_max,
        frame_delay=config.frame_pause(),
        baudrate=serial.baudrate,
        parity=serial.parity[0].upper(),
        stopbits=serial.stop_bits(),
        bytesize=serial.bytesize,
    )


class ModbusDriver:
    def __init__(self, config: SourceConfig, sink: ReadingSink, context: DriverContext) -> None:
        self._config, self._sink, self._context = config, sink, context
        self._log = context.logger
        self._client = ModbusClient(_link(config), context.count)
        self._groups = [_Group(group) for group in config.poll_groups()]
        self._units = {group.unit: _Unit(group.unit) for group in self._groups}
        self._connection_problem: str | None = None

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for group in self._groups:
                    tasks.create_task(self._poll(group), name=f"{self._config.name}:unit{group.unit}@{group.interval}s")
        finally:
            self._client.close()

    async def _poll(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self._sink.submit(await self._scan(group))
            next_at += group.interval
            delay = next_at - loop.time()
            if delay < 0:
                # A scan longer than its period: skip the missed scans, never overlap them.
                missed = math.ceil(-delay / group.interval)
                self._context.count("scan_overruns", missed)
                next_at += missed * group.interval
                delay = next_at - loop.time()
            await asyncio.sleep(delay)

    async def _scan(self, group: _Group) -> list[Reading]:
        readings: list[Reading] = []
        kept: list[_Planned] = []
        for planned in group.requests:
            got, parts = await self._fetch(group, planned)
            readings += got
            kept += parts
            if group.pause:
                await asyncio.sleep(group.pause)
        group.requests = kept  # splits are remembered
        if group.refused:
            self._report_refusals(group)
        return readings

    async def _fetch(self, group: _Group, planned: _Planned) -> tuple[list[Reading], list[_Planned]]:
        """The readings of one request, and what replaces it in its group: itself, or
        the parts it was split into."""
        health, now = self._units[group.unit], asyncio.get_running_loop().time()
        if now < health.retry_at:
            return planned.bad(health.quality), [planned]
        if now < planned.refused_until:
            return planned.bad(Quality.BAD_CONFIGURATION_ERROR), [planned]
        request = planned.request
        try:
            with self._context.timing_read():
                words = await self._client.read(request.table, request.start, request.count, group.unit)
        except IllegalAddress as error:
            self._context.count("request_failures")
            return await self._split(group, planned, error)
        except ReadError as error:
            self._context.count("request_failures")
            return self._failed(group, planned, error), [planned]
        ts = time.time_ns()
        self._answered(health)
        return [Reading(tag, ts, value, quality) for tag, value, quality in planned.decode(words)], [planned]

    async def _split(self, group: _Group, planned: _Planned, error: ReadError) -> tuple[list[Reading], list[_Planned]]:
        """A device refused an address: read the request's halves instead, now and from
        now on, down to single points; a single point refused is misconfigured."""
        parts = split(planned.request)
        if len(parts) == 1:
            return self._refused(group, planned, error), [planned]
        self._context.count("request_splits")
        readings: list[Reading] = []
        kept: list[_Planned] = []
        for part in parts:
            got, replaced = await self._fetch(group, _Planned(part))
            readings += got
            kept += replaced
        return readings, kept

    def _failed(self, group: _Group, planned: _Planned, error: ReadError) -> list[Reading]:
        health = self._units[group.unit]
        if isinstance(error, ConnectionDown):
            self._connection_lost(str(error))
        elif isinstance(error, NoAnswer):
            self._back_off(health, error)
        elif error.quality == Quality.BAD_CONFIGURATION_ERROR:
            return self._refused(group, planned, error)
        else:
            self._unavailable(health, str(error))
        return planned.bad(error.quality)

    def _refused(self, group: _Group, planned: _Planned, error: ReadError) -> list[Reading]:
        planned.refused_until = asyncio.get_running_loop().time() + REPROBE_AFTER
        if not planned.reported:
            planned.reported = True
            group.refused.append((planned, error))
        return planned.bad(Quality.BAD_CONFIGURATION_ERROR)

    def _report_refusals(self, group: _Group) -> None:
        """One line for all the tags a scan found refused, however many."""
        (first, error), tags = group.refused[0], [p.tag for planned, _ in group.refused for p in planned.request.points]
        group.refused = []
        shown = ", ".join(tags[:5]) + (f" and {len(tags) - 5} more" if len(tags) > 5 else "")
        self._log.warning(
            "unit %d refuses tags %s (the first at %s): %s; check their addresses (asking again every %ds)",
            group.unit,
            shown,
            first.describe(),
            error,
            REPROBE_AFTER,
        )

    def _back_off(self, health: _Unit, error: ReadError) -> None:
        """Poll a silent unit less often: a delay that doubles with each failure in a
        row, from reconnect_delay up to reconnect_delay_max."""
        health.failures += 1
        delay = min(self._config.reconnect_delay * 2 ** (health.failures - 1), self._config.reconnect_delay_max)
        health.retry_at = asyncio.get_running_loop().time() + delay
        health.quality = error.quality
        self._unavailable(health, f"{error}; polling it again in {delay:g}s, less often while it stays silent")

    def _unavailable(self, health: _Unit, reason: str) -> None:
        if health.problem is None:
            health.problem = reason
            self._log.warning("unit %d at %s unavailable: %s", health.number, self._config.url, reason)

    def _connection_lost(self, reason: str) -> None:
        if self._connection_problem is None:
            self._connection_problem = reason
            self._log.warning("%s unavailable: %s", self._config.url, reason)

    def _answered(self, health: _Unit) -> None:
        health.failures, health.retry_at = 0, 0.0
        if self._connection_problem is not None:
            self._connection_problem = None
            self._log.info("%s available again", self._config.url)
        if health.problem is not None:
            health.problem = None
            self._log.info("unit %d at %s available again", health.number, self._config.url)


def create(config: SourceConfig, sink: ReadingSink, context: DriverContext) -> ModbusDriver:
    return ModbusDriver(config, sink, context)
