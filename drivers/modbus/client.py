"""Modbus I/O: the only module that imports pymodbus.

One `ModbusClient` per source owns one connection (TCP, RTU over TCP, or a serial
line) and reads with `read(table, start, count, unit)`. Our code decides timeouts,
retries and reconnects; pymodbus's own are switched off (see `_connection`). Requests on
one connection take turns under a lock, because a shared RS-485 bus carries one request
at a time, and keep `frame_delay` of silence between frames.

Every pymodbus exception and exception response becomes one `ReadError` subclass in
`classify`; its class carries the driver's decision and its `quality` what the points
of the failed request read as:

    ConnectionDown   refused, lost, unintelligible answer, waiting to reconnect
                     -> Bad_CommunicationError; the connection is dropped and re-made
    NoAnswer         no answer in time, still busy after retries, gateway target silent
                     -> Bad_Timeout; the driver backs the unit off
    IllegalAddress   exception 2 -> split the request (Bad_ConfigurationError alone)
    Refused          other exception codes -> quality by code
"""

from __future__ import annotations

import asyncio
import logging
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerRTU, FramerSocket, FramerType
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from drivers.api import Quality
from drivers.modbus.endpoint import Endpoint
from drivers.modbus.points import Table

# A connection whose units all stay silent this many requests in a row is re-made:
# a NAT or a gateway may have dropped it without telling us.
STALE_AFTER = 3


class ReadError(Exception):
    """A read that produced no values; `quality` is what its points read as."""

    quality: Quality = Quality.BAD_COMMUNICATION_ERROR

    def __init__(self, message: str, quality: Quality | None = None) -> None:
        super().__init__(message)
        if quality is not None:
            self.quality = quality


class ConnectionDown(ReadError):
    """No usable connection (refused, lost, garbled, or waiting to reconnect)."""


class NoAnswer(ReadError):
    """The unit did not answer in time, or stayed busy: poll it less often."""

    quality = Quality.BAD_TIMEOUT


class IllegalAddress(ReadError):
    """Exception 2: an address in the request does not exist; split the request."""

    quality = Quality.BAD_CONFIGURATION_ERROR


class Refused(ReadError):
    """The unit answered with an exception code that retrying will not change."""


_EXCEPTION_CODES: dict[int, tuple[type[ReadError], Quality, str]] = {
    1: (Refused, Quality.BAD_CONFIGURATION_ERROR, "illegal function"),
    2: (IllegalAddress, Quality.BAD_CONFIGURATION_ERROR, "illegal data address"),
    3: (Refused, Quality.BAD_CONFIGURATION_ERROR, "illegal data value"),
    4: (Refused, Quality.BAD_DEVICE_FAILURE, "server device failure"),
    5: (NoAnswer, Quality.BAD_TIMEOUT, "acknowledge (still working)"),  # retried like a timeout
    6: (NoAnswer, Quality.BAD_TIMEOUT, "server device busy"),
    0x0A: (Refused, Quality.BAD_COMMUNICATION_ERROR, "gateway path unavailable"),
    0x0B: (NoAnswer, Quality.BAD_TIMEOUT, "gateway target device failed to respond"),
}


def classify(failure: BaseException | ExceptionResponse, *, connected: bool, garbled: bool) -> ReadError:
    """The one place where pymodbus's failures become ours. `connected`: whether the
    connection survived the attempt; `garbled`: whether bytes that form no frame arrived."""
    if isinstance(failure, ExceptionResponse):
        code = failure.exception_code
        kind, quality, text = _EXCEPTION_CODES.get(code, (Refused, Quality.BAD_DEVICE_FAILURE, "unknown exception"))
        return kind(f"exception {code:#04x}: {text}", quality)
    if not connected:
        return ConnectionDown(f"connection lost ({failure})" if str(failure) else "connection lost")
    if garbled:
        return ConnectionDown("unintelligible answer")
    if isinstance(failure, TimeoutError):
        return NoAnswer("no answer in time")
    return ConnectionDown(str(failure) or type(failure).__name__)


@dataclass(frozen=True)
class Link:
    """Where and how to talk; durations in seconds, `parity` "N", "E" or "O"."""

    endpoint: Endpoint
    timeout: float = 1.0
    retries: int = 0
    reconnect_delay: float = 1.0
    reconnect_delay_max: float = 60.0
    frame_delay: float = 0.0
    baudrate: int = 9600
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8


def _connection(
    link: Link, on_packet: Callable[[bool, bytes], bytes], on_connect: Callable[[bool], None]
) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """A pymodbus client that never retries or reconnects by itself. Its timeout is only
    a backstop: `ModbusClient` times every call itself, so pymodbus never counts
    "no response" towards closing a shared connection on its own."""
    endpoint = link.endpoint
    backstop = link.timeout * 2 + 1
    hooks: dict[str, Any] = {"trace_packet": on_packet, "trace_connect": on_connect}
    if endpoint.is_serial:
        return AsyncModbusSerialClient(
            endpoint.path,
            framer=FramerType.RTU,
            baudrate=link.baudrate,
            parity=link.parity,
            stopbits=link.stopbits,
            bytesize=link.bytesize,
            retries=0,
            reconnect_delay=0,
            timeout=backstop,
            **hooks,
        )
    framer = FramerType.RTU if endpoint.rtu_framing else FramerType.SOCKET
    return AsyncModbusTcpClient(
        endpoint.host, port=endpoint.port, framer=framer, retries=0, reconnect_delay=0, timeout=backstop, **hooks
    )


class ModbusClient:
    """One connection per source; `read` is safe to call from many tasks at once.
    Counts, through `count`, "requests" (frames sent, retries included) and "reconnects"."""

    def __init__(self, link: Link, count: Callable[[str, int], None] = lambda _name, _n: None) -> None:
        self._link, self._count = link, count
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None  # made in the loop, see _connect
        # Checks whether received bytes form a frame, without touching the client's state.
        self._framer = (FramerRTU if link.endpoint.rtu_framing else FramerSocket)(DecodePDU(False))
        self._garbled = False
        self._connect_attempts = 0
        self._connect_failures = 0
        self._next_connect = 0.0
        self._down_reason = "not connected yet"
        self._silent = 0
        self._quiet_since = 0.0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def read(self, table: Table, start: int, count: int, unit: int) -> list[int] | list[bool]:
        """`count` registers (ints) or bits (bools) of `table` from `start`; raises a
        ReadError. Timeouts and busy answers are retried `retries` times, each attempt
        taking its own turn on the connection so that other units are not held up."""
        for _ in range(self._link.retries):
            try:
                async with self._lock:
                    return await self._read_once(table, start, count, unit)
            except NoAnswer:
                pass
        async with self._lock:
            return await self._read_once(table, start, count, unit)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _read_once(self, table: Table, start: int, count: int, unit: int) -> list[int] | list[bool]:
        await self._keep_quiet()
        await self._ensure_connected()  # then no await before the request: the connection is still there
        self._garbled = False
        self._count("requests", 1)
        try:
            async with asyncio.timeout(self._link.timeout):
                response = await self._call(table, start, count, unit)
        except (TimeoutError, OSError, ModbusException) as exc:
            raise self._failed(classify(exc, connected=self.connected, garbled=self._garbled)) from None
        finally:
            self._quiet_since = asyncio.get_running_loop().time()
        _honour_cancellation()
        self._silent = 0
        if isinstance(response, ExceptionResponse):
            raise classify(response, connected=True, garbled=False)
        values = response.bits[:count] if table.is_bits else response.registers
        if len(values) != count:  # a late answer to another request, taken for this one
            raise self._failed(classify(ValueError("answer of the wrong size"), connected=True, garbled=True))
        self._connect_failures = 0
        return values

    def _call(self, table: Table, start: int, count: int, unit: int) -> Awaitable[ModbusPDU]:
        client = self._client
        assert client is not None  # _ensure_connected made it
        read = {
            Table.COILS: client.read_coils,
            Table.DISCRETE_INPUTS: client.read_discrete_inputs,
            Table.HOLDING_REGISTERS: client.read_holding_registers,
            Table.INPUT_REGISTERS: client.read_input_registers,
        }[table]
        return read(start, count=count, device_id=unit)

    def _failed(self, error: ReadError) -> ReadError:
        """Keeps the connection's state in step with a failed attempt."""
        if isinstance(error, ConnectionDown):
            self._drop(str(error))
        elif isinstance(error, NoAnswer):
            self._silent += 1
            if self._silent >= STALE_AFTER:
                self.close()
                self._next_connect = 0.0  # the line was not refused: connect again at once
        return error

    async def _ensure_connected(self) -> None:
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        wait = self._next_connect - loop.time()
        if wait > 0:
            raise ConnectionDown(f"{self._down_reason}; next attempt in {wait:.1f}s")
        if self._connect_attempts:
            self._count("reconnects", 1)
        self._connect_attempts += 1
        reason = "cannot connect"
        try:
            async with asyncio.timeout(self._link.timeout):
                connected = await self._connect()
        except TimeoutError:
            connected = False
        except termios.error as exc:  # pymodbus lets it through: a setting the port refuses (parity on a pty)
            connected, reason = False, f"the serial port refuses its settings ({exc})"
        _honour_cancellation()
        if not connected:
            self._connect_failures += 1
            self._drop(reason)
            raise ConnectionDown(reason)
        self._silent = 0

    def _drop(self, reason: str) -> None:
        """Close the connection; the next attempt waits a delay that doubles with each
        failure in a row, up to reconnect_delay_max."""
        self.close()
        self._down_reason = reason
        steps = max(self._connect_failures - 1, 0)
        delay = min(self._link.reconnect_delay * 2**steps, self._link.reconnect_delay_max)
        self._next_connect = asyncio.get_running_loop().time() + delay

    async def _connect(self) -> bool:
        # pymodbus clients take the running loop when made: make ours in it, not in __init__
        if self._client is None:
            self._client = _connection(self._link, self._on_packet, self._on_connect)
        return await self._client.connect()

    async def _keep_quiet(self) -> None:
        if self._link.frame_delay:
            wait = self._quiet_since + self._link.frame_delay - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's receive hook: passes on only whole, well-formed frames, so junk
        never reaches its decoder (which would raise inside asyncio's data callback);
        notes junk, so that a timeout that follows it reads as a garbled line."""
        if sending:
            return data
        frame = self._framer.decode(data)[3]
        if frame and frame[0] & 0x7F in (1, 2, 3, 4):
            self._garbled = False
            return data
        self._garbled = True
        return b""

    def _on_connect(self, connected: bool) -> None:
        if not connected:  # closed by the other end or by an I/O error, not by us
            self._down_reason = "connection closed by the device"
            self._next_connect = asyncio.get_running_loop().time() + self._link.reconnect_delay


def _honour_cancellation() -> None:
    """pymodbus awaits with asyncio.wait_for, which on Python 3.11 returns the result
    instead of raising when the task is cancelled just as the answer arrives (CPython
    gh-86296, fixed in 3.12): a driver would then never stop. Raise what it swallowed."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _ExpectedFailures(logging.Filter):
    """pymodbus logs, at WARNING and ERROR, failures that `classify` turns into Bad
    readings which the driver reports once per change; drop those lines, keep the rest."""

    PREFIXES = (
        "Failed to connect",
        "ERROR: request ask for",  # an answer for another unit or an earlier request, skipped
        "ERROR: received pdu without a corresponding request",  # an answer after its timeout
        "Invalid Modbus protocol id",  # junk, seen by `_on_packet`'s frame check
        "Repeating....",  # pymodbus's stand-in for a repeated line
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def _quiet_pymodbus() -> None:
    logger = logging.getLogger("pymodbus.logging")
    logger.addFilter(_ExpectedFailures())
    if logging.getLogger("pymodbus").level == logging.NOTSET:
        logging.getLogger("pymodbus").setLevel(logging.WARNING)  # its INFO is per-connection chatter


_quiet_pymodbus()
