"""Tag addresses as plant documents write them -> (Table, zero-based protocol address).

Two families of notation, and they count differently:

    written                          counts from   holding register 0 is written
    table: holding, address: N       0             table: holding, address: 0
    5-digit Modicon    40001         1             40001   (x0001..x9999: registers 0..9998)
    6-digit Modicon    400001        1             400001  (x00001..x65536: registers 0..65535)
    text Modicon       4x0001        1             4x0001 or 4X0001 (x1..x65536)

The zero-based address is what goes into the request PDU. The first digit of a Modicon
address names the table: 0 coils, 1 discrete inputs, 3 input registers, 4 holding
registers. YAML drops the leading zeros of a coil address written as a number (and reads
00010 as the octal number 8), so coils in Modicon form are written as text ('00001',
'000001', '0x0001') or with `table: coil`; a bare small number is refused rather than
guessed.
"""

from __future__ import annotations

import re

from drivers.modbus.points import Table

TABLE_NAMES = {
    "coil": Table.COILS,
    "discrete": Table.DISCRETE_INPUTS,
    "input": Table.INPUT_REGISTERS,
    "holding": Table.HOLDING_REGISTERS,
}
TABLE_SIZE = 65536  # addresses 0..65535 in every table
_PREFIXES = {"0": Table.COILS, "1": Table.DISCRETE_INPUTS, "3": Table.INPUT_REGISTERS, "4": Table.HOLDING_REGISTERS}
NOUNS = {
    Table.COILS: "coil",
    Table.DISCRETE_INPUTS: "discrete input",
    Table.INPUT_REGISTERS: "input register",
    Table.HOLDING_REGISTERS: "holding register",
}
_TEXT_FORM = re.compile(r"([0-9])[xX]([0-9]{1,5})")
_DIGITS = re.compile(r"[0-9]{5,6}")

MODICON = "a Modicon address like 40001, 4x0001 or 400001, or {table, address}"
_COIL_HINT = (
    "a Modicon address like 40001, 4x0001 or 400001, or {table, address} "
    "(YAML drops leading zeros: write coils as text, e.g. '000001' or '0x0001')"
)
_FIRST_DIGIT = (
    "a Modicon address whose first digit is 0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register)"
)
ZERO_BASED = "a zero-based address 0..65535 (with `table`; Modicon forms like 40001 go without it)"


class AddressError(ValueError):
    """What was expected instead, in words; the caller says what was found."""


def parse_address(address: int | str, table: str | None = None) -> tuple[Table, int]:
    """(table, zero-based address) of a tag. `table` is one of TABLE_NAMES when the tag
    names it, and then `address` is zero-based; else `address` is a Modicon notation."""
    if table is not None:
        if type(address) is not int or not 0 <= address < TABLE_SIZE:
            raise AddressError(ZERO_BASED)
        return TABLE_NAMES[table], address
    if type(address) is int:
        if 0 <= address < 10000:
            raise AddressError(_COIL_HINT)
        return _from_digits(str(address))
    if not isinstance(address, str):
        raise AddressError(MODICON)
    text_form = _TEXT_FORM.fullmatch(address)
    if text_form:
        return _modicon(text_form[1], int(text_form[2]), TABLE_SIZE, "{}x{:04d}")
    if _DIGITS.fullmatch(address):
        return _from_digits(address)
    raise AddressError(MODICON)


def describe(table: Table, address: int) -> str:
    """'holding register 0 (400001)': the zero-based address with its 6-digit Modicon form."""
    return f"{NOUNS[table]} {address} ({modicon(table, address)})"


def modicon(table: Table, address: int) -> str:
    """The 6-digit Modicon form of a zero-based address: holding register 0 is '400001'."""
    prefix = next(digit for digit, named in _PREFIXES.items() if named is table)
    return f"{prefix}{address + 1:05d}"


def _from_digits(digits: str) -> tuple[Table, int]:
    if len(digits) == 5:
        return _modicon(digits[0], int(digits[1:]), 9999, "{}{:04d}")
    if len(digits) == 6:
        return _modicon(digits[0], int(digits[1:]), TABLE_SIZE, "{}{:05d}")
    raise AddressError(MODICON)


def _modicon(prefix: str, number: int, highest: int, form: str) -> tuple[Table, int]:
    """`number` counts from 1 within the table named by `prefix`, up to `highest`;
    `form` writes an address the way it was written (prefix, number), for messages."""
    table = _PREFIXES.get(prefix)
    if table is None:
        raise AddressError(_FIRST_DIGIT)
    if number == 0:
        first = form.format(prefix, 1)
        raise AddressError(f"a Modicon address from {first} (they count from 1: {first} is {NOUNS[table]} 0)")
    if number > highest:
        last = form.format(prefix, highest)
        raise AddressError(f"a Modicon address up to {last} ({NOUNS[table]} {highest - 1})")
    return table, number - 1
