"""`edgeseal probe modbus` against real pymodbus servers (tests/modbus_servers.py): the table
it prints holds the server's contents, over Modbus TCP, RTU over TCP and RTU on a serial
line; each way a device can answer badly or not at all is one line and exit 1; bad
usage is one line and exit 2; --watch repeats until --count or Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_runner import Result, in_process, one_line_error
from modbus_servers import ModbusServer, ServerFarm, free_port, registers

from drivers.modbus.points import Table

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"(\d+)\s+(\d{6})\s+((?:0x[0-9A-F]{4} ?)+|[01])\s+(.+)")
SERIAL = ("--baud", "115200", "--parity", "none")  # pseudo-terminals refuse parity


class ProbeResult(Result):
    def rows(self) -> dict[int, tuple[str, str, str]]:
        """{zero-based address: (Modicon address, raw, value)} of every table row printed."""
        found = (ROW.fullmatch(line.strip()) for line in self.out.splitlines())
        return {int(m[1]): (m[2], m[3].strip(), m[4]) for m in found if m}

    def values(self) -> dict[int, str]:
        return {address: value for address, (_, _, value) in self.rows().items()}


@pytest.fixture
def probe(capsys: pytest.CaptureFixture[str]):
    """`edgeseal probe modbus ...` in-process; an escaping exception is a traceback."""
    return in_process(capsys, "probe", "modbus", result=ProbeResult)


def load(server: ModbusServer) -> None:
    server.set(1, Table.HOLDING_REGISTERS, 0, [1, 2, 0xFFFF, 0x1234])
    server.set(1, Table.HOLDING_REGISTERS, 100, registers("float32", 123.456, "CDAB") + registers("float32", -12.25))
    server.set(1, Table.HOLDING_REGISTERS, 110, registers("float64", 2824.0625, "DCBA"))
    server.set(1, Table.HOLDING_REGISTERS, 120, [0x504D, 0x2D35, 0, 0])  # "PM-5" NUL-padded
    server.set(1, Table.HOLDING_REGISTERS, 130, [0b1000_0000_0000_1001])
    server.set(1, Table.INPUT_REGISTERS, 10, [21, 0xFFFB] + registers("int32", -70_000) + registers("uint32", 70_000))
    server.set(1, Table.COILS, 0, [True, False, True])
    server.set(1, Table.DISCRETE_INPUTS, 7, [True, False, True])


def transport(farm: ServerFarm, name: str) -> tuple[ModbusServer, tuple[str, ...]]:
    server = {"tcp": farm.tcp, "rtu-over-tcp": farm.rtu_over_tcp, "rtu": farm.serial}[name](1)
    load(server)
    return server, SERIAL if name == "rtu" else ()


# -- values -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tcp", "rtu-over-tcp", "rtu"])
def test_float32_cdab_prints_addresses_raw_registers_and_values(probe, modbus_servers: ServerFarm, name: str) -> None:
    server, serial = transport(modbus_servers, name)

    result = probe(server.url, "--unit", "1", "--holding", "100:2", "--type", "float32", "--order", "CDAB", *serial)

    assert result.code == 0, result.err
    assert result.out.splitlines()[0].startswith(f"{server.url} unit 1, holding registers 100..101 (400101..400102)")
    assert result.rows() == {100: ("400101", "0xE979 0x42F6", "123.456")}


@pytest.mark.parametrize("name", ["tcp", "rtu-over-tcp", "rtu"])
def test_every_table_prints_the_servers_contents(probe, modbus_servers: ServerFarm, name: str) -> None:
    server, serial = transport(modbus_servers, name)

    holding = probe(server.url, "--holding", "0:4", *serial)
    inputs = probe(server.url, "--input", "12:4", "--type", "int32", *serial)
    coils = probe(server.url, "--coils", "0:3", *serial)
    discrete = probe(server.url, "--discrete", "7:3", *serial)

    assert holding.rows() == {
        0: ("400001", "0x0001", "1"),
        1: ("400002", "0x0002", "2"),
        2: ("400003", "0xFFFF", "65535"),
        3: ("400004", "0x1234", "4660"),
    }
    assert inputs.rows() == {12: ("300013", "0xFFFE 0xEE90", "-70000"), 14: ("300015", "0x0001 0x1170", "70000")}
    assert coils.rows() == {0: ("000001", "1", "true"), 1: ("000002", "0", "false"), 2: ("000003", "1", "true")}
    assert discrete.values() == {7: "true", 8: "false", 9: "true"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--holding", "0:4", "--type", "int16"), {0: "1", 1: "2", 2: "-1", 3: "4660"}),
        (("--holding", "102:2", "--type", "float32"), {102: "-12.25"}),  # ABCD unless --order
        (("--holding", "110:4", "--type", "float64", "--order", "DCBA"), {110: "2824.0625"}),
        (("--holding", "120:4", "--type", "string"), {120: "'PM-5'"}),
        (("--holding", "130:1", "--type", "bool"), {130: "bits 15..0: 1000 0000 0000 1001"}),
        (("--input", "10:2", "--type", "int16"), {10: "21", 11: "-5"}),
        (("--input", "14:2", "--type", "uint32", "--order", "ABCD"), {14: "70000"}),
    ],
)
def test_types_and_orders_decode_as_tags_would(probe, modbus_servers: ServerFarm, argv, expected) -> None:
    server = modbus_servers.tcp(1)
    load(server)

    result = probe(server.url, *argv)

    assert result.code == 0, result.err
    assert result.values() == expected


@pytest.mark.parametrize(
    ("option", "written", "address"),
    [
        ("--holding", "40101", 100),
        ("--holding", "400101", 100),
        ("--holding", "4x0101", 100),
        ("--input", "30011", 10),
        ("--coils", "00001", 0),
        ("--discrete", "10008", 7),
    ],
)
def test_a_modicon_start_reads_what_its_zero_based_address_reads(
    probe, modbus_servers: ServerFarm, option: str, written: str, address: int
) -> None:
    server = modbus_servers.tcp(1)
    load(server)

    modicon = probe(server.url, option, f"{written}:2")
    zero_based = probe(server.url, option, f"{address}:2")

    assert modicon.code == zero_based.code == 0, modicon.err + zero_based.err
    assert modicon.rows() == zero_based.rows()
    assert sorted(modicon.rows()) == [address, address + 1]


def test_a_start_with_another_tables_first_digit_is_zero_based(probe, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)  # has 1024 registers: 30001 is refused, and named

    one_line_error(probe(server.url, "--holding", "30001:1"), 1, "holding register 30001 (430002)", "0x02")


def test_a_span_longer_than_one_request_is_read_in_several(probe, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    server.set(1, Table.HOLDING_REGISTERS, 0, list(range(300)))

    result = probe(server.url, "--holding", "0:300")

    assert result.code == 0, result.err
    assert "3 requests" in result.out.splitlines()[0]
    assert result.values() == {n: str(n) for n in range(300)}
    assert [(fc, address, count) for _, fc, address, count in server.requests] == [
        (3, 0, 125),
        (3, 125, 125),
        (3, 250, 50),
    ]


# -- a device that answers badly or not at all: exit 1 ------------------------------


def test_connection_refused(probe) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"

    one_line_error(probe(url, "--holding", "0:1"), 1, url, "cannot connect: Connection refused")


def test_no_serial_device(probe, tmp_path: Path) -> None:
    one_line_error(probe(f"rtu://{tmp_path}/ttyNONE", "--holding", "0:1"), 1, "cannot connect: No such file")


def test_no_answer_within_the_timeout(probe, modbus_servers: ServerFarm) -> None:
    blackhole = modbus_servers.proxy()  # accepts the connection, never answers

    started = time.monotonic()
    result = probe(blackhole.url(), "--holding", "0:1", "--timeout", "300ms")

    one_line_error(result, 1, "unit 1: no answer in time (timeout 0.3s)")
    assert time.monotonic() - started < 3


def test_a_silent_unit_on_a_serial_line(probe, modbus_servers: ServerFarm) -> None:
    server, serial = transport(modbus_servers, "rtu")
    server.silent_units.add(1)

    result = probe(server.url, "--holding", "0:1", "--timeout", "200ms", *serial)

    one_line_error(result, 1, "unit 1: no answer in time (timeout 0.2s)")


def test_garbled_answers(probe, modbus_servers: ServerFarm) -> None:
    proxy = modbus_servers.proxy(modbus_servers.tcp(1))
    proxy.mode = "junk"

    one_line_error(probe(proxy.url(), "--holding", "0:1", "--timeout", "300ms"), 1, "unintelligible answer")


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (0x01, "exception 0x01: illegal function"),
        (0x02, "exception 0x02: illegal data address"),
        (0x03, "exception 0x03: illegal data value"),
        (0x04, "exception 0x04: server device failure"),
        (0x06, "exception 0x06: server device busy"),
        (0x0A, "exception 0x0a: gateway path unavailable"),
        (0x0B, "exception 0x0b: gateway target device failed to respond"),
    ],
)
def test_exception_responses_are_named_with_their_code(
    probe, modbus_servers: ServerFarm, code: int, meaning: str
) -> None:
    server = modbus_servers.tcp(1)
    server.fail(1, 101, code)

    result = probe(server.url, "--holding", "40101:4")

    one_line_error(result, 1, "holding registers 100..103 (400101..400104)", meaning)
    assert len(server.requests) == 1, "a probe asks once"


# -- bad usage: exit 2 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("ftp://x", "--holding", "0:1"), ("ftp://x", "expected a URL like tcp://HOST")),
        (("rtu-over-tcp://h", "--holding", "0:1"), ("a port with rtu-over-tcp://",)),
        (("tcp://h", "--holding", "100"), ("--holding", "START:COUNT")),
        (("tcp://h", "--holding", "100:0"), ("--holding", "a count 1..65436")),
        (("tcp://h", "--holding", "65535:2"), ("--holding", "a count 1..1")),
        (("tcp://h", "--holding", "40000:1"), ("from 40001", "zero-based 40000 is written 440001")),
        (("tcp://h", "--holding", "3x0001:1"), ("3x0001 is a Modicon input register address",)),
        (("tcp://h", "--coils", "0:8", "--type", "int16"), ("--type", "coils are bits")),
        (("tcp://h", "--holding", "0:3", "--type", "float32"), ("a float32 takes 2 registers",)),
        (("tcp://h", "--holding", "0:1", "--order", "CDAB"), ("--order", "not uint16")),
        (("tcp://h", "--holding", "0:126", "--type", "string"), ("at most 125 registers",)),
        (("tcp://h", "--holding", "0:1", "--baud", "9600"), ("rtu:// URLs only",)),
        (("rtu:///dev/ttyS9", "--holding", "0:1", "--baud", "10"), ("--baud", "300..4000000")),
        (("tcp://h", "--holding", "0:1", "--unit", "256"), ("--unit", "0..247 or 255")),
        (("tcp://h", "--holding", "0:1", "--unit", "-1"), ("--unit", "0..255")),
        (("rtu-over-tcp://h:1", "--holding", "0:1", "--unit", "0"), ("--unit", "0 is broadcast")),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(probe, argv: tuple[str, ...], words: tuple[str, ...]) -> None:
    one_line_error(probe(*argv), 2, *words)


@pytest.mark.parametrize(
    "argv",
    [
        ("tcp://h",),  # no span
        ("tcp://h", "--holding", "0:1", "--coils", "0:1"),  # two spans
        ("tcp://h", "--holding", "0:1", "--type", "float16"),
        ("tcp://h", "--holding", "0:2", "--type", "float32", "--order", "ACBD"),
        ("tcp://h", "--holding", "0:1", "--timeout", "soon"),
        ("tcp://h", "--holding", "0:1", "--watch", "0"),
        ("tcp://h", "--holding", "0:1", "--count", "0"),
        ("rtu:///dev/ttyS0", "--holding", "0:1", "--parity", "mark"),
    ],
)
def test_options_argparse_refuses_exit_2(probe, argv: tuple[str, ...]) -> None:
    result = probe(*argv)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert "usage: edgeseal probe modbus" in result.err


def test_help_says_which_start_is_zero_based_and_which_modicon(probe) -> None:
    result = probe("--help")
    assert result.code == 0
    assert "--holding 100:4     zero-based" in result.out
    assert "--holding 40101:4   Modicon" in result.out


# -- repeated reads -----------------------------------------------------------------


def test_watch_reads_count_times_with_timestamps(probe, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    load(server)

    result = probe(server.url, "--holding", "0:2", "--watch", "100ms", "--count", "3")

    assert result.code == 0, result.err
    headers = [line for line in result.out.splitlines() if "unit 1, holding registers 0..1" in line]
    assert len(headers) == 3 and all(re.match(r"\d\d:\d\d:\d\d\.\d{3} tcp://", h) for h in headers), result.out
    assert len(server.requests) == 3


def test_watch_shows_failures_as_lines_and_ends_with_the_last_outcome(probe, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    server.fail(1, 0, 0x04)

    result = probe(server.url, "--holding", "0:1", "--watch", "50ms", "--count", "2")

    failures = [line for line in result.out.splitlines() if "exception 0x04" in line]
    assert len(failures) == 2, result.out
    one_line_error(result, 1, "exception 0x04: server device failure")


def test_watch_goes_on_until_the_device_answers(probe, modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    load(server)
    server.stop()
    starting = threading.Timer(0.35, server.start)
    starting.start()

    result = probe(server.url, "--holding", "0:1", "--watch", "100ms", "--count", "8")
    starting.join()

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    refused = [n for n, line in enumerate(lines) if "cannot connect: Connection refused" in line]
    read = [n for n, line in enumerate(lines) if "holding register 0 (400001)" in line]
    assert refused and read and max(refused) < min(read), result.out
    assert result.values() == {0: "1"}


def test_ctrl_c_ends_a_watch_with_exit_0(modbus_servers: ServerFarm) -> None:
    server = modbus_servers.tcp(1)
    load(server)
    command = [sys.executable, "-m", "agent.cli", "probe", "modbus", server.url, "--holding", "0:1", "--watch", "0.1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while len(server.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)

    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out.count("unit 1, holding register 0 (400001)") >= 3
