"""Every table, over Modbus TCP, RTU over TCP and RTU on a serial line (a socat
pseudo-terminal pair), read by the driver from a real pymodbus server with known contents."""

from __future__ import annotations

import asyncio
import math

import pytest
from driver_harness import all_good
from modbus_harness import Running, source
from modbus_servers import ServerFarm, registers

from drivers.modbus.points import Table

# A power meter: float32 values in CDAB word order from holding register 100; an int16
# array of temperatures in input registers; coils and discrete inputs; a uint32 counter;
# a bit inside a status register; a name.
METER = {"voltage": 230.5, "current": -12.25, "power": 2824.0625}
TAGS = [
    {"name": "voltage", "table": "holding", "address": 100, "type": "float32"},
    {"name": "current", "table": "holding", "address": 102, "type": "float32"},
    {"name": "power", "table": "holding", "address": 104, "type": "float32"},
    {"name": "energy", "table": "holding", "address": 110, "type": "uint32", "order": "ABCD"},
    {"name": "alarm", "table": "holding", "address": 112, "bit": 3},
    {"name": "model", "table": "holding", "address": 120, "type": "string", "length": 4},
    {"name": "temps", "table": "input", "address": 10, "type": "int16", "count": 4},
    {"name": "scaled", "table": "input", "address": 20, "type": "int16", "scale": 0.1},
    {"name": "running", "address": "000001"},
    {"name": "relays", "table": "coil", "address": 3, "count": 3},
    {"name": "door", "table": "discrete", "address": 7},
]
EXPECTED = {
    **METER,
    "energy": 70_000,
    "alarm": True,
    "model": "PM-5",
    "temps": [21, -5, 0, 32767],
    "scaled": -12.3,
    "running": True,
    "relays": [True, False, True],
    "door": True,
}


def load_meter(server, unit: int = 1) -> None:
    for offset, value in enumerate(METER.values()):
        server.set(unit, Table.HOLDING_REGISTERS, 100 + 2 * offset, registers("float32", value, "CDAB"))
    server.set(unit, Table.HOLDING_REGISTERS, 110, registers("uint32", 70_000))
    server.set(unit, Table.HOLDING_REGISTERS, 112, [0b1000])
    server.set(unit, Table.HOLDING_REGISTERS, 120, [0x504D, 0x2D35, 0, 0])  # "PM-5" NUL-padded
    server.set(unit, Table.INPUT_REGISTERS, 10, [21, 0xFFFB, 0, 32767])
    server.set(unit, Table.INPUT_REGISTERS, 20, [0xFF85])  # -123
    server.set(unit, Table.COILS, 0, [True, False, False, True, False, True])
    server.set(unit, Table.DISCRETE_INPUTS, 7, [True])


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp", "rtu"])
def test_every_table_reads_good_with_the_servers_values(modbus_servers: ServerFarm, transport: str) -> None:
    server = {"tcp": modbus_servers.tcp, "rtu-over-tcp": modbus_servers.rtu_over_tcp, "rtu": modbus_servers.serial}[
        transport
    ](1)
    load_meter(server)
    serial = {"serial": {"baudrate": 115200, "parity": "none"}} if transport == "rtu" else {}  # ptys refuse parity
    config = source(server.url, [{"unit": 1, "order": "CDAB", "tags": TAGS}], **serial)

    async def main() -> dict:
        async with Running(config) as run:
            await run.sink.wait(lambda sink: len(sink.batches) >= 2)
        return run.sink.batches

    batches = asyncio.run(main())
    readings = {r.tag: r for r in batches[-1][1]}
    assert all_good(readings), readings
    values = {tag: r.value for tag, r in readings.items()}
    assert values.pop("scaled") == pytest.approx(EXPECTED["scaled"])
    assert values == {k: v for k, v in EXPECTED.items() if k != "scaled"}
    assert all(not math.isnan(v) for v in METER.values())
    # one request per table: the planner merged each table's tags
    assert sorted({(fc, address) for _, fc, address, _ in server.requests}) == [(1, 0), (2, 7), (3, 100), (4, 10)]
