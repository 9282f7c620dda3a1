"""`edgeseal probe modbus`: read a span of one table of one device, once or repeatedly,
and print what came back, for commissioning: each value with its zero-based and Modicon
address, the raw registers (or bits) and the decoded value, as a device's manual lists
them or mbpoll shows them.

A probe is a span of N registers or bits read as values of one type: one `Point` per
value, planned into requests by the driver's planner (several when N exceeds what one
request reads), read through the driver's client and decoded by its codec, so what the
probe shows is what a configured tag at that address would read.

    START:N   N registers or bits from START
    START     the zero-based protocol address (100 is holding register 100, Modicon 400101),
              unless written the Modicon way for the option's table: 5 or 6 digits whose
              first digit names the table (40101 or 400101 with --holding, 30001 with
              --input, 00001 with --coils, 10001 with --discrete) or the text form 4x0101.
              Modicon addresses count from 1. Zero-based 40000..49999 with --holding
              (and alike) are written in the 6-digit form, 440001 for register 40000.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

from drivers.config_types import format_duration
from drivers.modbus.addressing import NOUNS, TABLE_SIZE, AddressError, describe, modicon, parse_address
from drivers.modbus.client import ConnectionDown, Link, ModbusClient, NoAnswer, ReadError
from drivers.modbus.codec import Decoder, compile_request
from drivers.modbus.config import SerialConfig, unit_problem
from drivers.modbus.endpoint import parse_url
from drivers.modbus.planner import MAX_REGISTERS, plan
from drivers.modbus.points import REGISTERS_PER_TYPE, Point, Request, Table

TABLE_OPTIONS = {
    "holding": Table.HOLDING_REGISTERS,
    "input": Table.INPUT_REGISTERS,
    "coils": Table.COILS,
    "discrete": Table.DISCRETE_INPUTS,
}
_FLOAT32 = struct.Struct(">f")


class ProbeUsage(ValueError):
    """Options that name no possible read (exit 2)."""


class ProbeFailed(Exception):
    """The device answered badly or not at all (exit 1)."""


@dataclass(frozen=True)
class Serial:
    """Serial options as given on the command line; None where not given."""

    baudrate: int | None = None
    parity: str | None = None
    stopbits: int | None = None

    def given(self) -> bool:
        return any(value is not None for value in (self.baudrate, self.parity, self.stopbits))


@dataclass(frozen=True)
class Probe:
    """One validated probe: `count` registers or bits of `table` from `start`, read from
    `unit` as `value_type` values in byte order `order`."""

    url: str
    link: Link
    unit: int
    table: Table
    start: int
    count: int
    value_type: str
    order: str

    @property
    def width(self) -> int:
        """Registers (or bits) per value."""
        if self.table.is_bits or self.value_type == "bool":
            return 1
        return self.count if self.value_type == "string" else REGISTERS_PER_TYPE[self.value_type]

    def points(self) -> list[Point]:
        """One point per value, named by its address."""
        bits_of_register = {"bit": 0, "count": 16} if self.value_type == "bool" and not self.table.is_bits else {}
        return [
            Point(str(a), self.table, a, self.width, self.value_type, self.order, **bits_of_register)
            for a in range(self.start, self.start + self.count, self.width)
        ]

    def requests(self) -> list[Request]:
        return plan(self.points())

    def span(self) -> str:
        """'holding registers 100..103 (400101..400104)'."""
        if self.count == 1:
            return describe(self.table, self.start)
        last = self.start + self.count - 1
        first_ref, last_ref = modicon(self.table, self.start), modicon(self.table, last)
        return f"{NOUNS[self.table]}s {self.start}..{last} ({first_ref}..{last_ref})"


def make_probe(
    url: str,
    unit: int,
    option: str,
    span: str,
    *,
    value_type: str | None = None,
    order: str | None = None,
    timeout: float = 1.0,
    serial: Serial = Serial(),
) -> Probe:
    """A probe from command-line options; `option` is a key of TABLE_OPTIONS and `span`
    its START:N. Raises ProbeUsage saying which option is wrong and what was expected."""
    try:
        endpoint = parse_url(url)
    except ValueError as err:
        raise ProbeUsage(f"{url}: expected {err}") from None
    problem = unit_problem(unit, endpoint) if unit >= 0 else f"expected a unit 0..255, found {unit}"
    if problem:
        raise ProbeUsage(f"--unit: {problem}")
    if serial.given() and not endpoint.is_serial:
        raise ProbeUsage(f"--baud, --parity and --stopbits go with rtu:// URLs only, not {endpoint.scheme}://")
    table = TABLE_OPTIONS[option]
    start, count = parse_span(table, f"--{option}", span)
    value_type = value_type or ("bool" if table.is_bits else "uint16")
    _check_type(table, count, value_type, order, f"--{option} {span}")
    line = _serial_line(serial) if endpoint.is_serial else None
    link = Link(
        endpoint,
        timeout=timeout,
        retries=0,  # a probe shows what one request gets
        reconnect_delay=0.0,  # a watch tries again at its next read
        reconnect_delay_max=0.0,
        frame_delay=line.silence(3.5) if line else 0.0,
        **(_serial_link(line) if line else {}),
    )
    return Probe(url, link, unit, table, start, count, value_type, order or "ABCD")


def parse_span(table: Table, option: str, text: str) -> tuple[int, int]:
    """(zero-based start, count) of START:N; see the module docstring for START."""
    start_text, colon, count_text = text.partition(":")
    if not colon or not start_text or not count_text.isdigit():
        raise ProbeUsage(f"{option}: expected START:COUNT like 100:4 (zero-based) or 40101:4 (Modicon), found {text!r}")
    start, count = _start(table, option, start_text), int(count_text)
    if count < 1 or start + count > TABLE_SIZE:
        raise ProbeUsage(f"{option}: expected a count 1..{TABLE_SIZE - start} from address {start}, found {count}")
    return start, count


def _start(table: Table, option: str, text: str) -> int:
    modicon_form = (len(text) in (5, 6) and text.isdigit() and text[0] == modicon(table, 0)[0]) or (
        len(text) > 2 and text[1] in "xX"
    )
    if modicon_form:
        try:
            named, address = parse_address(text)
        except AddressError as err:
            zero_based = f" (zero-based {text} is written {modicon(table, int(text))})" if len(text) == 5 else ""
            raise ProbeUsage(f"{option}: expected {err}, found {text}{zero_based}") from None
        if named is not table:
            raise ProbeUsage(f"{option}: {text} is a Modicon {NOUNS[named]} address, not a {NOUNS[table]} one")
        return address
    if not text.isdigit() or int(text) >= TABLE_SIZE:
        raise ProbeUsage(f"{option}: expected a zero-based address 0..{TABLE_SIZE - 1} or a Modicon one, found {text}")
    return int(text)


def _check_type(table: Table, count: int, value_type: str, order: str | None, span: str) -> None:
    if table.is_bits and value_type != "bool":
        raise ProbeUsage(f"--type: {NOUNS[table]}s are bits: bool, not {value_type}")
    width = REGISTERS_PER_TYPE.get(value_type, 1)
    if order is not None and width == 1:
        raise ProbeUsage(f"--order: applies to 32- and 64-bit types, not {value_type}")
    if count % width:
        raise ProbeUsage(
            f"{span}: a {value_type} takes {width} registers; expected a count that is a multiple of {width}"
        )
    if value_type == "string" and count > MAX_REGISTERS:
        raise ProbeUsage(f"{span}: a string of at most {MAX_REGISTERS} registers (one request)")


def _serial_line(serial: Serial) -> SerialConfig:
    if serial.baudrate is not None and not 300 <= serial.baudrate <= 4_000_000:
        raise ProbeUsage(f"--baud: expected 300..4000000, found {serial.baudrate}")
    given = {"baudrate": serial.baudrate, "parity": serial.parity, "stopbits": serial.stopbits}
    return SerialConfig(**{key: value for key, value in given.items() if value is not None})


def _serial_link(line: SerialConfig) -> dict[str, Any]:
    return {
        "baudrate": line.baudrate,
        "parity": line.parity[0].upper(),
        "stopbits": line.stop_bits(),
        "bytesize": line.bytesize,
    }


# -- reading -------------------------------------------------------------------------


class Row(NamedTuple):
    address: str  # zero-based
    reference: str  # Modicon
    raw: str
    value: str


def run(probe: Probe, out: TextIO, *, reads: int | None = 1, interval: float = 1.0) -> None:
    """Read `reads` times (None: until Ctrl-C), `interval` seconds apart, printing a table
    per read. Repeated reads print a failed read as a line and go on; raises ProbeFailed
    when the last read failed. Ctrl-C ends repeated reads; a single read it interrupts."""
    outcome: list[str | None] = [None]  # the last read's failure, kept across Ctrl-C
    try:
        asyncio.run(_poll(probe, out, reads, interval, outcome))
    except KeyboardInterrupt:
        if reads == 1:
            raise
    if outcome[0] is not None:
        raise ProbeFailed(outcome[0])


async def _poll(probe: Probe, out: TextIO, reads: int | None, interval: float, outcome: list[str | None]) -> None:
    client = ModbusClient(probe.link)
    requests = [(request, compile_request(request)) for request in probe.requests()]
    loop = asyncio.get_running_loop()
    next_at, done = loop.time(), 0
    try:
        while True:
            outcome[0] = await _read_and_show(client, probe, requests, out, watching=reads != 1)
            done += 1
            if reads is not None and done >= reads:
                return
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    finally:
        client.close()


async def _read_and_show(
    client: ModbusClient, probe: Probe, requests: list[tuple[Request, Decoder]], out: TextIO, *, watching: bool
) -> str | None:
    """One read, printed; returns what went wrong, or None. A failure is printed only
    when `watching`: a single read's failure is the command's error."""
    started = time.perf_counter()
    try:
        rows = await _read(client, probe, requests)
    except ReadError as error:
        failure = await _explain(probe, error, client)
        if watching:
            print(f"{_clock()} {failure}", file=out, flush=True)
        return failure
    header = _header(probe, len(requests), time.perf_counter() - started)
    print(f"{_clock()} {header}" if watching else header, file=out)
    print(render(rows), file=out, flush=True)
    return None


async def _read(client: ModbusClient, probe: Probe, requests: list[tuple[Request, Decoder]]) -> list[Row]:
    rows: list[Row] = []
    for request, decode in requests:
        words = await client.read(request.table, request.start, request.count, probe.unit)
        values = {tag: (value, quality) for tag, value, quality in decode(words)}
        for point in request.points:
            raw = words[point.address - request.start : point.end - request.start]
            value = _value(*values[point.tag], probe.value_type)
            rows.append(Row(str(point.address), modicon(probe.table, point.address), _raw(raw, probe.table), value))
    return rows


async def _explain(probe: Probe, error: ReadError, client: ModbusClient) -> str:
    """The one line that says what went wrong."""
    if isinstance(error, ConnectionDown) and not client.connected:
        why = await _why_unreachable(probe)
        if why:
            return f"{probe.url}: cannot connect: {why}"
    if isinstance(error, NoAnswer) and not str(error).startswith("exception"):  # 5, 6, 11: answers
        return f"{probe.url} unit {probe.unit}: {error} (timeout {format_duration(probe.link.timeout)})"
    if isinstance(error, ConnectionDown):
        return f"{probe.url}: {error}"
    return f"{probe.url} unit {probe.unit} refused to read {probe.span()}: {error}"


async def _why_unreachable(probe: Probe) -> str | None:
    """Why the connection fails, in the system's words ("Connection refused", "No such
    file or directory"): the client only says that it did. None when it works now."""
    endpoint, timeout = probe.link.endpoint, probe.link.timeout
    try:
        if endpoint.is_serial:
            os.close(os.open(endpoint.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
        else:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            writer.close()
    except TimeoutError:
        return f"no answer within {format_duration(timeout)}"
    except socket.gaierror as exc:
        return f"{endpoint.host}: {exc.strerror}"
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return None


# -- output --------------------------------------------------------------------------


def render(rows: Sequence[Row]) -> str:
    """The table: zero-based address, Modicon address, raw contents, decoded value."""
    table = [Row("address", "modicon", "raw", "value"), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(Row._fields))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def _header(probe: Probe, requests: int, seconds: float) -> str:
    kind = probe.value_type + (f" {probe.order}" if REGISTERS_PER_TYPE.get(probe.value_type, 1) > 1 else "")
    took = f"{requests} request{'s' if requests > 1 else ''}, {seconds * 1000:.1f} ms"
    return f"{probe.url} unit {probe.unit}, {probe.span()} as {kind}: {took}"


def _clock() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def _raw(words: Sequence[Any], table: Table) -> str:
    if table.is_bits:
        return "1" if words[0] else "0"
    return " ".join(f"0x{word:04X}" for word in words)


def _value(value: Any, quality: int, value_type: str) -> str:
    if quality:
        return "(not valid ascii)"  # the codec's only Bad quality for an answered request
    if isinstance(value, list):  # the 16 bits of a register, as bool tags would read them
        bits = "".join("1" if bit else "0" for bit in reversed(value))
        return "bits 15..0: " + " ".join(bits[i : i + 4] for i in range(0, 16, 4))
    if isinstance(value, bool):
        return "true" if value else "false"
    if value_type == "float32":
        return _float32(value)
    return repr(value) if isinstance(value, (float, str)) else str(value)


def _float32(value: float) -> str:
    """The fewest digits that give back the same float32 (123.456, not 123.45600128173828)."""
    if not math.isfinite(value):
        return str(value)
    for digits in range(6, 9):
        text = f"{value:.{digits}g}"
        if _FLOAT32.unpack(_FLOAT32.pack(float(text)))[0] == value:
            return text
    return f"{value:.9g}"  # 9 significant digits always identify a float32
