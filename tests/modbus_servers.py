"""Modbus servers for tests: real pymodbus servers speaking Modbus TCP, RTU over TCP, and
RTU on one end of a pseudo-terminal pair made by socat; a fault proxy that delays,
swallows or garbles answers; and helpers to encode register contents.

The servers run in this process, on their own event loop in one thread (`ServerLoop`),
rather than in a subprocess: tests set registers, inject exception codes and count
requests with plain calls, and a stopped server closes its sockets exactly as a killed
process would (the kernel sends the same FIN), which is all the driver can see. The
thread is joined at teardown, so the suite's leaked-thread check holds.

Use the `modbus_servers` fixture: a `ServerFarm` that stops everything it started.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.points import Table

SIZE = 1024  # registers and bits of each table of each unit, from address 0
JUNK = b"\xde\xad\xbe\xef"  # no MBAP header (protocol id 0xBEEF) and no valid RTU CRC


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def registers(value_type: str, value: float, order: str = "ABCD") -> list[int]:
    """The registers a device holds for `value` (int16/uint16/int32/uint32/float32/
    float64) in word order `order` (ABCD big-endian, CDAB word-swapped, ...)."""
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "float64": ">d"}[value_type]
    data = struct.pack(fmt, value)
    if order in ("BADC", "DCBA"):
        data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if order in ("CDAB", "DCBA") else words


class ServerLoop:
    """An event loop in a thread, for servers that must outlive the test's own loops."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="modbus-test-servers", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def close(self) -> None:
        self.call(self._cancel_tasks())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    @staticmethod
    async def _cancel_tasks() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ModbusServer:
    """A pymodbus server with units `units`, each with SIZE coils, discrete inputs,
    holding and input registers, all zero until `set`. Contents survive `stop`/`start`.

    Fault controls: `silent_units` never get an answer; `fail(unit, address, code)`
    answers exception `code` to any register read that covers `address`. `requests`
    lists every request received as (unit, function code, address, count)."""

    def __init__(
        self, loop: ServerLoop, units: tuple[int, ...], *, framer: str = "socket", pty: PtyPair | None = None
    ) -> None:
        self._loop, self.units, self._pty = loop, units, pty
        self._framer = FramerType.RTU if framer == "rtu" or pty else FramerType.SOCKET
        self.port = 0 if pty else free_port()
        self.requests: list[tuple[int, int, int, int]] = []
        self.silent_units: set[int] = set()
        self._failures: dict[tuple[int, int], int] = {}
        self._contents: dict[tuple[int, Table, int], list[Any]] = {}
        self._server: ModbusBaseServer | None = None

    @property
    def url(self) -> str:
        if self._pty:
            return f"rtu://{self._pty.client_end}"
        scheme = "rtu-over-tcp" if self._framer == FramerType.RTU else "tcp"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> ModbusServer:
        self._loop.call(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call(self._server.shutdown())
            self._server = None

    def set(self, unit: int, table: Table, address: int, values: list[Any]) -> None:
        self._contents[(unit, table, address)] = list(values)
        if self._server is not None:
            self._loop.call(self._server.async_setValues(unit, table.function_code, address, list(values)))

    def fail(self, unit: int, address: int, code: int = ExcCodes.ILLEGAL_ADDRESS) -> None:
        self._failures[(unit, address)] = code

    def requests_for(self, unit: int) -> list[tuple[int, int, int]]:
        return [(fc, address, count) for u, fc, address, count in list(self.requests) if u == unit]

    async def _start(self) -> None:
        devices = [self._device(unit) for unit in self.units]
        if self._pty:
            self._server = ModbusSerialServer(
                devices, port=self._pty.server_end, trace_pdu=self._on_pdu, baudrate=115200
            )
        else:
            self._server = ModbusTcpServer(
                devices, address=("127.0.0.1", self.port), framer=self._framer, trace_pdu=self._on_pdu
            )
        await self._server.serve_forever(background=True)
        for (unit, table, address), values in self._contents.items():
            await self._server.async_setValues(unit, table.function_code, address, values)

    def _device(self, unit: int) -> SimDevice:
        bits = [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)]
        words = [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(
            unit, simdata=(bits, list(bits), words, list(words)), action=functools.partial(self._act, unit)
        )

    async def _act(self, unit: int, fc: int, _start: int, address: int, count: int, _regs: list[int], values: Any):
        if values is not None or fc not in (3, 4):
            return None
        for (failing_unit, failing), code in self._failures.items():
            if failing_unit == unit and address <= failing < address + count:
                return ExcCodes(code)
        return None

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self.requests.append((pdu.dev_id, pdu.function_code, getattr(pdu, "address", 0), getattr(pdu, "count", 0)))
        return None if pdu.dev_id in self.silent_units else pdu  # None: pymodbus drops the request


class FaultProxy:
    """A TCP proxy in front of `target_port`. `mode`: "pass"; "delay" (each answer
    `delay` seconds late); "junk" (answers replaced by bytes that form no frame); "drop"
    (requests swallowed, nothing answered). Without a target it only swallows."""

    def __init__(self, loop: ServerLoop, target_port: int | None = None) -> None:
        self._loop, self._target = loop, target_port
        self.port = free_port()
        self.mode = "pass" if target_port else "drop"
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, scheme: str = "tcp") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._loop.call(self._start())
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call(self._stop())
            self._server = None

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream = None
        try:
            if self._target is None:
                while await reader.read(4096):
                    pass
                return
            upstream = await asyncio.open_connection("127.0.0.1", self._target)
            await asyncio.gather(self._requests(reader, upstream[1]), self._answers(upstream[0], writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    w.close()

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            if self.mode != "drop":
                upstream.write(data)
        upstream.close()

    async def _answers(self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await upstream.read(4096):
            if self.mode == "delay":
                await asyncio.sleep(self.delay)
            elif self.mode == "junk":
                data = (JUNK * len(data))[: len(data)]
            writer.write(data)
        writer.close()


class PtyPair:
    """Two pseudo-terminals wired together by socat: what one end writes, the other
    reads, like two ends of a serial cable."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("socat") is None:
            pytest.skip("socat is not installed (scripts/setup.sh installs it)")
        self.server_end, self.client_end = str(directory / "tty-server"), str(directory / "tty-client")
        self._process = subprocess.Popen(
            ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.server_end}", f"pty,raw,echo=0,link={self.client_end}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (Path(self.server_end).exists() and Path(self.client_end).exists()):
            assert time.monotonic() < deadline, "socat made no pseudo-terminals"
            time.sleep(0.01)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=5)


class ServerFarm:
    """Starts servers on demand; `close` stops every one of them."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.loop = ServerLoop()
        self._servers: list[ModbusServer | FaultProxy] = []
        self._ptys: list[PtyPair] = []

    def tcp(self, *units: int) -> ModbusServer:
        return self._add(ModbusServer(self.loop, units or (1,)))

    def rtu_over_tcp(self, *units: int) -> ModbusServer:
        return self._add(ModbusServer(self.loop, units or (1,), framer="rtu"))

    def serial(self, *units: int) -> ModbusServer:
        """RTU on one end of a pseudo-terminal pair; `server.url` names the other end."""
        pty = PtyPair(self._directory)
        self._ptys.append(pty)
        return self._add(ModbusServer(self.loop, units or (1,), pty=pty))

    def proxy(self, target: ModbusServer | None = None) -> FaultProxy:
        return self._add(FaultProxy(self.loop, target.port if target else None))

    def _add(self, server: Any) -> Any:
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        self.loop.close()
        for pty in self._ptys:
            pty.close()


@pytest.fixture
def modbus_servers(tmp_path: Path) -> Iterator[ServerFarm]:
    farm = ServerFarm(tmp_path)
    try:
        yield farm
    finally:
        farm.close()
