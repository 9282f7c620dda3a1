"""Configuration of a Modbus source: one connection (Modbus TCP, RTU over TCP, or a serial
line) and the devices (unit ids) reached through it, each with its tags. No I/O here.

What the driver gets from a validated `SourceConfig`:
- `endpoint()`: the parsed `url` (drivers.modbus.endpoint.Endpoint);
- `serial_line()`: the serial settings with every default filled in (rtu only);
- `frame_pause()`: seconds of silence to keep between two requests on the connection;
- `poll_groups()`: one `PollGroup` per device and poll interval, holding its tags as
  `Point`s (zero-based addresses, widths in registers or bits, orders resolved) and the
  device's planner options; `PollGroup.requests()` plans its requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from drivers.config_types import (
    Duration,
    Expected,
    SourceName,
    SubPath,
    backoff_findings,
    expected,
    findings,
)
from drivers.modbus.addressing import NOUNS
from drivers.modbus.endpoint import URL_TEXT, Endpoint, parse_url
from drivers.modbus.planner import MAX_BIT_GAP, MAX_BITS, MAX_GAP, MAX_REGISTERS, plan
from drivers.modbus.points import Point, Request
from drivers.modbus.tags import ModbusTag, Order, StrictModel


def _url(value: str) -> str:
    try:
        parse_url(value)
    except ValueError as err:
        raise expected(str(err)) from None
    return value


Url = Annotated[str, AfterValidator(_url), Expected(URL_TEXT)]


class SerialConfig(StrictModel):
    """Settings of the serial line (rtu:// only)."""

    baudrate: int = Field(9600, ge=300, le=4_000_000, description="Line speed in bits per second, e.g. 9600 or 19200.")
    parity: Literal["none", "even", "odd"] = Field(
        "even", description="Parity bit: none, even or odd. Even is the Modbus RTU default."
    )
    stopbits: Literal[1, 2] | None = Field(
        None, description="Stop bits, 1 or 2. Default: 1 with parity, 2 without (the Modbus serial line rule)."
    )
    bytesize: Literal[7, 8] = Field(8, description="Data bits per character, 8 (RTU) or 7.")
    byte_timeout: Duration | None = Field(
        None,
        description="Longest silence inside one frame, e.g. 2ms. Default: 1.5 character times "
        "(750us above 19200 baud), as the Modbus serial line specification says.",
    )

    def stop_bits(self) -> int:
        return self.stopbits or (2 if self.parity == "none" else 1)

    def character_time(self) -> float:
        """Seconds one character takes on the line: start bit, data, parity, stop bits."""
        bits = 1 + self.bytesize + (self.parity != "none") + self.stop_bits()
        return bits / self.baudrate

    def silence(self, characters: float) -> float:
        """`characters` character times (1.5 or 3.5), with the fixed values the
        specification sets above 19200 baud (750us per 1.5 characters)."""
        if self.baudrate > 19200:
            return characters * 0.0005
        return characters * self.character_time()

    def inter_byte_timeout(self) -> float:
        return self.byte_timeout or self.silence(1.5)


class ModbusDevice(StrictModel):
    """One device (unit id) on the connection, with its tags and the quirks it needs."""

    unit: int = Field(
        1,
        ge=0,
        le=255,
        description="Unit id (slave address): 1..247 on serial lines and RTU over TCP; "
        "0..247 or 255 with Modbus TCP, where many devices answer any id.",
    )
    order: Order = Field("ABCD", description="Default byte order of this device's 32- and 64-bit values.")
    max_registers: int = Field(
        MAX_REGISTERS, ge=1, le=MAX_REGISTERS, description="Most registers one request reads (1..125)."
    )
    max_bits: int = Field(MAX_BITS, ge=1, le=MAX_BITS, description="Most coils or discrete inputs one request reads.")
    max_gap: int = Field(
        MAX_GAP, ge=0, description="Most unused registers read between two tags to save a request; 0 reads none."
    )
    max_bit_gap: int = Field(
        MAX_BIT_GAP, ge=0, description="Most unused coils or discrete inputs read between two tags to save a request."
    )
    one_request_per_tag: bool = Field(
        False, description="Read each tag with its own request, for devices that refuse reads spanning several."
    )
    request_pause: Duration | None = Field(None, description="Pause after each request to this device, e.g. 20ms.")
    coils_from_zero: bool = Field(
        False, description="Start every coil and discrete input request at address 0 (a quirk of some devices)."
    )
    swap_string_bytes: bool = Field(
        False, description="Default for string tags: the two characters of each register are swapped."
    )
    tags: list[ModbusTag] = Field(min_length=1, description="The tags read from this device.")

    @model_validator(mode="after")
    def _tags_fit_requests(self) -> ModbusDevice:
        found = [problem for index, tag in enumerate(self.tags) for problem in self._too_wide(index, tag)]
        if found:
            raise findings(found)
        return self

    def points(self) -> list[Point]:
        """The tags as points, with this device's defaults, in the order written."""
        return [tag.point(self.order, self.swap_string_bytes) for tag in self.tags]

    def _too_wide(self, index: int, tag: ModbusTag) -> list[tuple[SubPath, str]]:
        table, address = tag.location()
        width = tag.width(table)
        at = ("tags", index, "length" if tag.length else "count" if tag.count else "type")
        found = f"{width} ({tag.count} x {tag.value_type(table)})" if tag.count else str(width)
        if table.is_bits and self.coils_from_zero and address + width > self.max_bits:
            noun, last = NOUNS[table], address + width - 1
            within = f"the first {self.max_bits} {noun}s (coils_from_zero reads from 0, max_bits at a time)"
            return [(("tags", index, "address"), f"expected a tag within {within}, found one ending at {noun} {last}")]
        if table.is_bits and width > self.max_bits:
            return [(at, f"expected at most {self.max_bits} bits per tag (max_bits), found {found}")]
        if not table.is_bits and width > self.max_registers:
            return [(at, f"expected at most {self.max_registers} registers per tag (max_registers), found {found}")]
        return []


@dataclass(frozen=True)
class PollGroup:
    """Tags of one device read at one interval: the unit of polling. `points` are in the
    order the tags were written; the planner options are the device's."""

    unit: int
    interval: float
    points: tuple[Point, ...]
    request_pause: float = 0.0
    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    max_gap: int = MAX_GAP
    max_bit_gap: int = MAX_BIT_GAP
    one_request_per_tag: bool = False
    coils_from_zero: bool = False

    def requests(self) -> list[Request]:
        return plan(
            self.points,
            max_registers=self.max_registers,
            max_bits=self.max_bits,
            max_gap=self.max_gap,
            max_bit_gap=self.max_bit_gap,
            one_request_per_tag=self.one_request_per_tag,
            coils_from_zero=self.coils_from_zero,
        )


class SourceConfig(StrictModel):
    """A Modbus connection and the devices read through it."""

    name: SourceName = Field(description="Name of this source in logs and metrics; unique among sources.")
    type: Literal["modbus"] = Field(description="Source type: `modbus` for Modbus TCP, RTU and RTU over TCP.")
    url: Url = Field(
        description="Where to connect: tcp://HOST[:PORT] (Modbus TCP, port 502 by default), "
        "rtu-over-tcp://HOST:PORT (RTU frames through a serial device server) or rtu:///dev/ttyUSB0 (serial line)."
    )
    serial: SerialConfig | None = Field(None, description="Serial line settings, with rtu:// only (defaults apply).")
    timeout: Duration = Field(1.0, description="How long to wait for an answer to one request, e.g. 500ms.")
    retries: int = Field(1, ge=0, le=10, description="How many times to repeat a request that got no answer in time.")
    reconnect_delay: Duration = Field(
        1.0, description="Wait before connecting again after a failure; doubles with each failure in a row."
    )
    reconnect_delay_max: Duration = Field(60.0, description="Longest wait between two connection attempts.")
    frame_delay: Duration | None = Field(
        None,
        description="Silence kept between two requests on this connection, e.g. 5ms. "
        "Default: 3.5 character times on serial lines (1.75ms above 19200 baud), none over TCP.",
    )
    interval: Duration = Field(1.0, description="How often tags are read, e.g. 1s, unless a tag sets its own.")
    devices: list[ModbusDevice] = Field(
        min_length=1, description="The devices (unit ids) read through this connection."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        endpoint = self.endpoint()
        found: list[tuple[SubPath, str]] = []
        if self.serial is not None and not endpoint.is_serial:
            found.append(
                (("serial",), f"expected serial settings only with rtu://, found them with {endpoint.scheme}://")
            )
        for index, device in enumerate(self.devices):
            problem = unit_problem(device.unit, endpoint)
            if problem:
                found.append((("devices", index, "unit"), problem))
        found += backoff_findings(self.reconnect_delay, self.reconnect_delay_max)
        if found:
            raise findings(found)
        return self

    def endpoint(self) -> Endpoint:
        return parse_url(self.url)

    def serial_line(self) -> SerialConfig:
        return self.serial or SerialConfig.model_validate({})

    def frame_pause(self) -> float:
        if self.frame_delay is not None:
            return self.frame_delay
        return self.serial_line().silence(3.5) if self.endpoint().is_serial else 0.0

    def poll_groups(self) -> list[PollGroup]:
        """One group per device and interval, devices in order, intervals as first written."""
        groups: list[PollGroup] = []
        for device in self.devices:
            by_interval: dict[float, list[Point]] = {}
            for tag, point in zip(device.tags, device.points()):
                by_interval.setdefault(tag.interval or self.interval, []).append(point)
            groups += [_group(device, interval, points) for interval, points in by_interval.items()]
        return groups

    def tag_names(self) -> Iterator[tuple[SubPath, str]]:
        """Every tag name with the field to blame for a duplicate (see DefinesTags)."""
        for d, device in enumerate(self.devices):
            for t, tag in enumerate(device.tags):
                yield ("devices", d, "tags", t, "name"), tag.name


def unit_problem(unit: int, endpoint: Endpoint) -> str | None:
    """What is wrong with unit id `unit` on `endpoint`, or None (also used by the probe)."""
    if endpoint.rtu_framing and not 1 <= unit <= 247:
        return (
            f"expected a unit 1..247 with {endpoint.scheme}:// (0 is broadcast, which no device answers), found {unit}"
        )
    if not endpoint.rtu_framing and not (unit <= 247 or unit == 255):
        return f"expected a unit 0..247 or 255, found {unit}"
    return None


def _group(device: ModbusDevice, interval: float, points: list[Point]) -> PollGroup:
    return PollGroup(
        unit=device.unit,
        interval=interval,
        points=tuple(points),
        request_pause=device.request_pause or 0.0,
        max_registers=device.max_registers,
        max_bits=device.max_bits,
        max_gap=device.max_gap,
        max_bit_gap=device.max_bit_gap,
        one_request_per_tag=device.one_request_per_tag,
        coils_from_zero=device.coils_from_zero,
    )
