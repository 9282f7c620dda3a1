"""The demo's plant, simulated in the demo's own event loop on 127.0.0.1: a press PLC that
speaks Modbus TCP (pymodbus) and a line controller that speaks OPC UA (asyncua, security
None). The demo's agent reads both with its real `modbus` and `opcua` drivers, so every
byte goes over a socket as it would from a PLC. agent/demo_config.yaml names the same
registers and nodes.

Press PLC, unit 1 (protocol addresses):
    holding 0-1   press.hydraulic_pressure  float32, bar
    holding 2-3   press.strokes             uint32
    holding 4     press.running             bit 0 of a status word
    input 0       press.motor_current       int16, 0.1 A
Line controller, namespace urn:edgeseal:demo:line:
    s=Oven.Temperature (Double, degC), s=Line.Speed (Double, m/min), s=Line.State (String)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import struct
from dataclasses import dataclass

from asyncua import Node, Server, ua
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HOST = "127.0.0.1"
PRESS_UNIT = 1
LINE_NAMESPACE = "urn:edgeseal:demo:line"
TICK = 0.1  # s between two changes of the plant's values
CYCLE = 30.0  # s: the line runs for RUNNING of every CYCLE, then changes over
RUNNING = 26.0
STROKE = 2.0  # s: one press stroke while the line runs
_HOLDING, _INPUT = 3, 4  # the function codes that read each table: pymodbus addresses tables by them


@dataclass(frozen=True)
class PlantState:
    """The plant's values at one moment."""

    running: bool
    pressure: float  # bar
    strokes: int
    current: float  # A
    oven: float  # degC
    speed: float  # m/min

    @property
    def state(self) -> str:
        return "RUNNING" if self.running else "CHANGEOVER"


def plant_state(t: float, noise: random.Random) -> PlantState:
    """The plant `t` seconds after it started: a press stroking while the line runs, an oven
    drifting slowly. A function of time (and noise) only, so it needs no state of its own."""
    running = t % CYCLE < RUNNING
    run_time = t // CYCLE * RUNNING + min(t % CYCLE, RUNNING)
    wave = math.sin(2 * math.pi * t / STROKE)
    if running:
        pressure, current, speed = 200 + 15 * wave, 35 + 5 * wave, 12 + noise.uniform(-0.2, 0.2)
    else:
        pressure, current, speed = 5.0, 2.0, 0.0
    oven = 180 + 5 * math.sin(2 * math.pi * t / 120) + noise.uniform(-0.3, 0.3)
    return PlantState(running, pressure + noise.uniform(-1, 1), int(run_time // STROKE), current, oven, speed)


def press_registers(state: PlantState) -> tuple[list[int], list[int]]:
    """The press PLC's holding registers 0-4 and input register 0 for `state`."""
    words = struct.pack(">fIH", state.pressure, state.strokes, int(state.running))
    holding = [int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2)]
    return holding, [round(state.current * 10)]


def free_port() -> int:
    """A port free now; the simulators bind it a moment later (the demo's only race, harmless on one box)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Plant:
    """Both simulators and the task that changes their values; `async with` starts and stops
    them all, leaving no task or socket behind."""

    def __init__(self, modbus_port: int, opcua_port: int) -> None:
        self.modbus_url = f"tcp://{HOST}:{modbus_port}"
        self.opcua_url = f"opc.tcp://{HOST}:{opcua_port}/edgeseal-demo/"
        self._modbus_port = modbus_port
        self._modbus: ModbusTcpServer | None = None
        self._opcua = Server()
        self._nodes: dict[str, Node] = {}
        self._ticking: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Plant:
        # asyncua announces its endpoints and certificates at INFO and WARNING: not the demo's news
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        await self._start_modbus()
        try:
            await self._start_opcua()
        except BaseException:
            await self._modbus_stop()
            raise
        self._ticking = asyncio.create_task(self._tick(), name="demo-plant")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking
        await self._opcua.stop()
        await self._modbus_stop()

    async def _start_modbus(self) -> None:
        tables = (
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],  # coils: unused
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],  # discrete inputs: unused
            [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
        )
        self._modbus = ModbusTcpServer(SimDevice(PRESS_UNIT, simdata=tables), address=(HOST, self._modbus_port))
        await self._modbus.serve_forever(background=True)

    async def _modbus_stop(self) -> None:
        if self._modbus is not None:
            await self._modbus.shutdown()
            self._modbus = None

    async def _start_opcua(self) -> None:
        await self._opcua.init()
        self._opcua.set_endpoint(self.opcua_url)
        self._opcua.set_server_name("edgeseal demo line controller")
        self._opcua.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await self._opcua.register_namespace(LINE_NAMESPACE)
        line = await self._opcua.nodes.objects.add_object(ua.NodeId("Line", ns), "Line")
        for name, initial in (("Oven.Temperature", 0.0), ("Line.Speed", 0.0), ("Line.State", "")):
            self._nodes[name] = await line.add_variable(ua.NodeId(name, ns), name, initial)
        await self._opcua.start()

    async def _tick(self) -> None:
        loop, noise = asyncio.get_running_loop(), random.Random()
        started = loop.time()
        while True:
            await self._serve(plant_state(loop.time() - started, noise))
            await asyncio.sleep(TICK)

    async def _serve(self, state: PlantState) -> None:
        assert self._modbus is not None
        holding, inputs = press_registers(state)
        await self._modbus.async_setValues(PRESS_UNIT, _HOLDING, 0, holding)
        await self._modbus.async_setValues(PRESS_UNIT, _INPUT, 0, inputs)
        await self._nodes["Oven.Temperature"].write_value(state.oven)
        await self._nodes["Line.Speed"].write_value(state.speed)
        await self._nodes["Line.State"].write_value(state.state)
