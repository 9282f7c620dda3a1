"""What a Modbus tag is on the wire, and what one request reads: the vocabulary that the
configuration, the planner, the codec and the driver share. Pure data, no I/O.

Addresses here are always zero-based protocol addresses (what goes in the PDU); the
Modicon notations of plant documents (40001, 4x0001, 300001) are turned into these by
drivers.modbus.addressing when the configuration is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Table(Enum):
    """The four Modbus data tables and the function code that reads each."""

    COILS = ("coils", 1)
    DISCRETE_INPUTS = ("discrete_inputs", 2)
    HOLDING_REGISTERS = ("holding_registers", 3)
    INPUT_REGISTERS = ("input_registers", 4)

    def __init__(self, label: str, function_code: int) -> None:
        self.label = label
        self.function_code = function_code

    @property
    def is_bits(self) -> bool:
        return self in (Table.COILS, Table.DISCRETE_INPUTS)


# Word/byte orders of multi-register values, named by where the bytes of the big-endian
# value A B C D (E F G H for 64 bits) appear in register order. ABCD is Modbus's own
# big-endian; CDAB swaps words (common in power meters); BADC swaps bytes within words;
# DCBA is fully little-endian. For 64 bits the same names apply word-pair by word-pair:
# ABCD = ABCDEFGH, CDAB = GHEFCDAB, BADC = BADCFEHG, DCBA = HGFEDCBA.
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

VALUE_TYPES = ("bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string")
REGISTERS_PER_TYPE = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Point:
    """One tag's place and meaning on the wire.

    `address` is the first register (or bit) and `width` how many registers (bits) the
    tag spans: count x registers-per-value, `length` registers for a string, 1 for a
    bool (a coil, a discrete input, or bit `bit` of a register)."""

    tag: str
    table: Table
    address: int
    width: int
    value_type: str  # one of VALUE_TYPES
    order: str = "ABCD"  # one of ORDERS; ignored for 16-bit values, bools and strings
    count: int | None = None  # None: one value; N: a list of N values
    bit: int | None = None  # bool in a register: 0 = least significant bit
    scale: float | None = None  # value * scale + offset, for numeric types
    offset: float | None = None
    encoding: str = "ascii"  # strings
    swap_string_bytes: bool = False  # strings whose two characters per register are swapped
    trim: bool = True  # strings: strip trailing NULs and spaces

    @property
    def end(self) -> int:
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class Request:
    """One read request: `count` registers (or bits) of `table` from `start`, covering
    every point in `points` (which may leave unread gaps between them)."""

    table: Table
    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.start + self.count
