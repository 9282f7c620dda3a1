"""Tag addresses: Modicon notations count from 1, `table` + `address` from 0."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.addressing import AddressError, describe, parse_address
from drivers.modbus.points import Table

COILS, DISCRETE = Table.COILS, Table.DISCRETE_INPUTS
INPUT, HOLDING = Table.INPUT_REGISTERS, Table.HOLDING_REGISTERS


@pytest.mark.parametrize(
    ("written", "table", "expected"),
    [
        # 5-digit Modicon, one-based
        (40001, None, (HOLDING, 0)),
        (49999, None, (HOLDING, 9998)),
        (30001, None, (INPUT, 0)),
        (10010, None, (DISCRETE, 9)),
        ("00001", None, (COILS, 0)),
        ("40001", None, (HOLDING, 0)),
        # 6-digit Modicon, one-based
        (400001, None, (HOLDING, 0)),
        (465536, None, (HOLDING, 65535)),
        (300100, None, (INPUT, 99)),
        (100001, None, (DISCRETE, 0)),
        ("000001", None, (COILS, 0)),
        # text Modicon, one-based
        ("4x0001", None, (HOLDING, 0)),
        ("4X0001", None, (HOLDING, 0)),
        ("4x65536", None, (HOLDING, 65535)),
        ("3x0010", None, (INPUT, 9)),
        ("1x0001", None, (DISCRETE, 0)),
        ("0x0001", None, (COILS, 0)),
        # table and address, zero-based
        (0, "holding", (HOLDING, 0)),
        (40001, "holding", (HOLDING, 40001)),
        (65535, "input", (INPUT, 65535)),
        (7, "coil", (COILS, 7)),
        (7, "discrete", (DISCRETE, 7)),
    ],
)
def test_address_forms(written: int | str, table: str | None, expected: tuple[Table, int]) -> None:
    assert parse_address(written, table) == expected


@pytest.mark.parametrize(
    ("written", "table", "message"),
    [
        (40000, None, "a Modicon address from 40001 (they count from 1: 40001 is holding register 0)"),
        (400000, None, "a Modicon address from 400001 (they count from 1: 400001 is holding register 0)"),
        ("4x0000", None, "a Modicon address from 4x0001 (they count from 1: 4x0001 is holding register 0)"),
        ("00000", None, "a Modicon address from 00001 (they count from 1: 00001 is coil 0)"),
        (465537, None, "a Modicon address up to 465536 (holding register 65535)"),
        ("4x65537", None, "a Modicon address up to 4x65536 (holding register 65535)"),
        (20001, None, "first digit is 0 (coil), 1 (discrete input), 3 (input register) or 4 (holding register)"),
        ("2x0001", None, "first digit is 0"),
        (8, None, "YAML drops leading zeros: write coils as text, e.g. '000001' or '0x0001'"),  # 00010 in YAML
        ("abc", None, "a Modicon address like 40001, 4x0001 or 400001, or {table, address}"),
        ("4x", None, "a Modicon address like"),
        ("4000001", None, "a Modicon address like"),
        (4000001, None, "a Modicon address like"),
        (" 40001", None, "a Modicon address like"),
        (65536, "holding", "a zero-based address 0..65535"),
        (-1, "coil", "a zero-based address 0..65535"),
        ("4x0001", "holding", "Modicon forms like 40001 go without it"),
    ],
)
def test_bad_addresses_say_what_was_expected(written: int | str, table: str | None, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(written, table)
    assert message in str(caught.value)


@given(st.sampled_from(["0", "1", "3", "4"]), st.integers(0, 65535))
def test_the_three_modicon_forms_agree(prefix: str, zero_based: int) -> None:
    six = parse_address(f"{prefix}{zero_based + 1:05d}")
    assert parse_address(f"{prefix}x{zero_based + 1:04d}") == six
    assert six[1] == zero_based
    if zero_based < 9999:
        assert parse_address(f"{prefix}{zero_based + 1:04d}") == six


def test_describe_names_both_forms() -> None:
    assert describe(HOLDING, 0) == "holding register 0 (400001)"
    assert describe(COILS, 65535) == "coil 65535 (065536)"
