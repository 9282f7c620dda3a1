"""Cross-check with an independent Modbus implementation: what the driver reads from a
pymodbus server equals what mbpoll (libmodbus) reads from the same server, for every
table, and for 32-bit floats and integers in both word orders. Over Modbus TCP and over
RTU on a serial line (a socat pseudo-terminal pair, used by one client at a time).

mbpoll's 32-bit word order is little-endian by default (the low word first: our CDAB);
`-B` makes it big-endian (our ABCD). `-0` makes references zero-based, `-1` polls once.
It prints one `[reference]: value` line per value: 16-bit registers as unsigned with the
signed value in parentheses when they differ, floats with printf's %g, bits as 0 or 1.

mbpoll must be installed (scripts/setup.sh installs it): without it this test fails,
it is never skipped.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
from typing import Any

import pytest
from driver_harness import all_good
from modbus_harness import Running, source
from modbus_servers import ModbusServer, ServerFarm, registers

from drivers.api import Value
from drivers.modbus.points import Table

WORDS = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x1234, 42, 0xFFFB]
FLOATS = [123.456, -12.25, 3.0e10, -1.5e-5, 0.0, 65504.0, 1.0e-38, -273.15]
INTS = [-70_000, 2_147_483_647, -2_147_483_648, 1, 65_536, -1, 0, 123_456_789]
BITS = [True, False, True, True, False, False, True, False, True]
TABLES = {"holding": Table.HOLDING_REGISTERS, "input": Table.INPUT_REGISTERS}
MBPOLL_TYPES = {"holding": "4", "input": "3", "coil": "0", "discrete": "1"}
LINE = re.compile(r"\[(\d+)\]:\s+(\S.*)")
START_32 = {("float32", "CDAB"): 100, ("float32", "ABCD"): 200, ("int32", "CDAB"): 300, ("int32", "ABCD"): 400}


def load(server: ModbusServer) -> None:
    """16-bit words from 0, 32-bit values from START_32, in both register tables; bits from 5."""
    for table in TABLES.values():
        server.set(1, table, 0, WORDS)
        for (value_type, order), start in START_32.items():
            values = FLOATS if value_type == "float32" else INTS
            server.set(1, table, start, [w for v in values for w in registers(value_type, v, order)])
    server.set(1, Table.COILS, 5, BITS)
    server.set(1, Table.DISCRETE_INPUTS, 5, BITS[::-1])


def mbpoll(server: ModbusServer, kind: str, start: int, count: int, *options: str) -> dict[int, str]:
    """{reference: value text} as mbpoll prints them; fails when mbpoll fails or is missing."""
    program = shutil.which("mbpoll")
    assert program, "mbpoll is not installed: scripts/setup.sh installs it (apt-get install mbpoll)"
    if server.url.startswith("rtu://"):
        where = ["-m", "rtu", "-b", "115200", "-P", "none", server.url.removeprefix("rtu://")]
    else:
        where = ["-m", "tcp", "-p", str(server.port), "127.0.0.1"]
    argv = [program, "-a", "1", "-0", "-1", "-o", "2", "-t", kind, "-r", str(start), "-c", str(count)]
    done = subprocess.run([*argv, *options, *where], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"mbpoll failed: {done.stdout}{done.stderr}"
    values = {int(m[1]): m[2].strip() for m in map(LINE.fullmatch, done.stdout.splitlines()) if m}
    assert len(values) == count, done.stdout
    return values


def driver_reads(server: ModbusServer, tags: list[dict[str, Any]]) -> dict[str, Value]:
    """{tag: value} of the driver's first all-Good cycle."""
    serial = {"serial": {"baudrate": 115200, "parity": "none"}} if server.url.startswith("rtu://") else {}
    config = source(server.url, [{"unit": 1, "tags": tags}], timeout="1s", **serial)

    async def main() -> dict[str, Value]:
        async with Running(config) as run:
            await run.sink.wait_batch(all_good)
            return {tag: reading.value for tag, reading in run.sink.latest().items()}

    return asyncio.run(main())


@pytest.fixture(params=["tcp", "rtu"])
def server(request: pytest.FixtureRequest, modbus_servers: ServerFarm) -> ModbusServer:
    made = modbus_servers.tcp(1) if request.param == "tcp" else modbus_servers.serial(1)
    load(made)
    return made


@pytest.mark.parametrize("table", ["holding", "input"])
def test_16_bit_registers_as_mbpoll_reads_them(server: ModbusServer, table: str) -> None:
    count = len(WORDS)
    theirs = mbpoll(server, MBPOLL_TYPES[table], 0, count)
    tags = [{"name": f"u{a}", "table": table, "address": a} for a in range(count)]
    tags += [{"name": f"s{a}", "table": table, "address": a, "type": "int16"} for a in range(count)]

    ours = driver_reads(server, tags)

    for address, text in theirs.items():
        unsigned, _, signed = text.partition(" ")  # "65535 (-1)"
        assert str(ours[f"u{address}"]) == unsigned, (address, text)
        assert str(ours[f"s{address}"]) == (signed.strip("()") or unsigned), (address, text)
    assert [ours[f"u{a}"] for a in range(count)] == WORDS


@pytest.mark.parametrize("table", ["holding", "input"])
@pytest.mark.parametrize("value_type", ["float32", "int32"])
@pytest.mark.parametrize(("order", "mbpoll_order"), [("CDAB", ()), ("ABCD", ("-B",))])
def test_32_bit_values_in_both_word_orders_as_mbpoll_reads_them(
    server: ModbusServer, table: str, value_type: str, order: str, mbpoll_order: tuple[str, ...]
) -> None:
    start, count = START_32[(value_type, order)], len(FLOATS)
    kind = f"{MBPOLL_TYPES[table]}:{'float' if value_type == 'float32' else 'int'}"
    theirs = mbpoll(server, kind, start, count, *mbpoll_order)
    addresses = range(start, start + 2 * count, 2)
    tags = [{"name": f"v{a}", "table": table, "address": a, "type": value_type, "order": order} for a in addresses]

    ours = driver_reads(server, tags)

    assert sorted(theirs) == list(addresses)
    for address, text in theirs.items():
        value = ours[f"v{address}"]
        assert (f"{value:g}" if value_type == "float32" else str(value)) == text, (address, value, text)
    sent = INTS if value_type == "int32" else [struct.unpack(">f", struct.pack(">f", v))[0] for v in FLOATS]
    assert [ours[f"v{a}"] for a in addresses] == sent, "the server's values, not only the same as mbpoll's"


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_coils_and_discrete_inputs_as_mbpoll_reads_them(server: ModbusServer, table: str) -> None:
    theirs = mbpoll(server, MBPOLL_TYPES[table], 0, 16)
    tags = [{"name": f"b{a}", "table": table, "address": a} for a in range(16)]

    ours = driver_reads(server, tags)

    assert {a: "1" if ours[f"b{a}"] else "0" for a in range(16)} == theirs
    assert sum(text == "1" for text in theirs.values()) == sum(BITS), "the bits set are read, not only zeros"
