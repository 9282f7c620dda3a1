"""The codec against byte layouts written out by hand, and round trips against struct."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.trust.leaf import encode_leaf
from drivers.api import Quality
from drivers.modbus.codec import compile_request
from drivers.modbus.points import ORDERS, REGISTERS_PER_TYPE, Point, Request, Table

HOLDING = Table.HOLDING_REGISTERS
GOOD, BAD_ENCODING, BAD_ANSWER = 0, Quality.BAD_ENCODING_ERROR, Quality.BAD_COMMUNICATION_ERROR


def _point(value_type: str, address: int = 0, width: int | None = None, **kw: Any) -> Point:
    count = kw.get("count") or 1
    width = width if width is not None else REGISTERS_PER_TYPE.get(value_type, 1) * count
    return Point(kw.pop("tag", "t"), kw.pop("table", HOLDING), address, width, value_type, **kw)


def _request(*points: Point, start: int = 0, count: int | None = None) -> Request:
    end = max(p.end for p in points)
    return Request(points[0].table, start, end - start if count is None else count, points)


def _decode_one(point: Point, words: list[Any]) -> tuple[str, Any, int]:
    [decoded] = compile_request(_request(point, count=len(words)))(words)
    return decoded


# -- the type x order matrix, by hand --------------------------------------------------
# Big-endian bytes of each value, then where they sit in the registers for every order.

MATRIX = [
    # float32 123.456 = 42 F6 E9 79
    ("float32", "ABCD", [0x42F6, 0xE979], struct.unpack(">f", bytes.fromhex("42f6e979"))[0]),
    ("float32", "CDAB", [0xE979, 0x42F6], struct.unpack(">f", bytes.fromhex("42f6e979"))[0]),
    ("float32", "BADC", [0xF642, 0x79E9], struct.unpack(">f", bytes.fromhex("42f6e979"))[0]),
    ("float32", "DCBA", [0x79E9, 0xF642], struct.unpack(">f", bytes.fromhex("42f6e979"))[0]),
    # int32 -123456789 = F8 A4 32 EB
    ("int32", "ABCD", [0xF8A4, 0x32EB], -123456789),
    ("int32", "CDAB", [0x32EB, 0xF8A4], -123456789),
    ("int32", "BADC", [0xA4F8, 0xEB32], -123456789),
    ("int32", "DCBA", [0xEB32, 0xA4F8], -123456789),
    # uint32 0x12345678
    ("uint32", "ABCD", [0x1234, 0x5678], 0x12345678),
    ("uint32", "CDAB", [0x5678, 0x1234], 0x12345678),
    ("uint32", "BADC", [0x3412, 0x7856], 0x12345678),
    ("uint32", "DCBA", [0x7856, 0x3412], 0x12345678),
    # uint32 0xFFFFFFFE: the top bit set stays positive
    ("uint32", "CDAB", [0xFFFE, 0xFFFF], 0xFFFFFFFE),
    # int64 -1234567890123456789 = EE DD EF 0B 82 16 7E EB
    ("int64", "ABCD", [0xEEDD, 0xEF0B, 0x8216, 0x7EEB], -1234567890123456789),
    ("int64", "CDAB", [0x7EEB, 0x8216, 0xEF0B, 0xEEDD], -1234567890123456789),
    ("int64", "BADC", [0xDDEE, 0x0BEF, 0x1682, 0xEB7E], -1234567890123456789),
    ("int64", "DCBA", [0xEB7E, 0x1682, 0x0BEF, 0xDDEE], -1234567890123456789),
    # uint64 0xFEDCBA9876543210
    ("uint64", "ABCD", [0xFEDC, 0xBA98, 0x7654, 0x3210], 0xFEDCBA9876543210),
    ("uint64", "CDAB", [0x3210, 0x7654, 0xBA98, 0xFEDC], 0xFEDCBA9876543210),
    ("uint64", "BADC", [0xDCFE, 0x98BA, 0x5476, 0x1032], 0xFEDCBA9876543210),
    ("uint64", "DCBA", [0x1032, 0x5476, 0x98BA, 0xDCFE], 0xFEDCBA9876543210),
    # float64 pi = 40 09 21 FB 54 44 2D 18
    ("float64", "ABCD", [0x4009, 0x21FB, 0x5444, 0x2D18], math.pi),
    ("float64", "CDAB", [0x2D18, 0x5444, 0x21FB, 0x4009], math.pi),
    ("float64", "BADC", [0x0940, 0xFB21, 0x4454, 0x182D], math.pi),
    ("float64", "DCBA", [0x182D, 0x4454, 0xFB21, 0x0940], math.pi),
] + [
    # 16-bit values read alike in every order
    (value_type, order, [0xFF85], value)
    for order in ORDERS
    for value_type, value in (("int16", -123), ("uint16", 0xFF85))
]


@pytest.mark.parametrize(("value_type", "order", "registers", "value"), MATRIX)
def test_every_type_in_every_order(value_type: str, order: str, registers: list[int], value: Any) -> None:
    tag, decoded, quality = _decode_one(_point(value_type, order=order), registers)
    assert (tag, decoded, quality) == ("t", value, GOOD)
    assert type(decoded) is type(value)


def test_float32_123_456_reads_the_same_in_four_orders_in_one_request() -> None:
    words = [0x42F6, 0xE979, 0xE979, 0x42F6, 0xF642, 0x79E9, 0x79E9, 0xF642]
    points = [_point("float32", 2 * i, tag=order, order=order) for i, order in enumerate(ORDERS)]
    decoded = compile_request(_request(*points))(words)
    assert sorted(decoded) == [(order, pytest.approx(123.456, rel=1e-7), GOOD) for order in sorted(ORDERS)]


# -- bits --------------------------------------------------------------------------------


@pytest.mark.parametrize(("bit", "value"), [(0, True), (1, False), (2, True), (7, False), (15, True)])
def test_bit_n_of_a_register(bit: int, value: bool) -> None:
    assert _decode_one(_point("bool", bit=bit), [0b1000_0000_0000_0101]) == ("t", value, GOOD)


def test_bools_from_several_bits_of_one_register() -> None:
    assert _decode_one(_point("bool", bit=1, count=4, width=1), [0b1_0110]) == ("t", [True, True, False, True], GOOD)


@pytest.mark.parametrize("table", [Table.COILS, Table.DISCRETE_INPUTS])
def test_coils_and_discrete_inputs(table: Table) -> None:
    points = (
        _point("bool", 10, tag="a", table=table),
        _point("bool", 12, tag="b", table=table),
        _point("bool", 13, 3, tag="c", table=table, count=3),
    )
    decode = compile_request(Request(table, 10, 6, points))
    bits = [True, False, False, True, False, True, False, False]  # padded to a whole byte, as pymodbus does
    assert decode(bits) == [("a", True, GOOD), ("b", False, GOOD), ("c", [True, False, True], GOOD)]
    assert [type(v) for _, v, _ in decode([1, 0, 1, 1, 0, 1])[:2]] == [bool, bool]


def test_a_single_coil() -> None:
    point = _point("bool", 0, table=Table.COILS)
    assert compile_request(Request(Table.COILS, 0, 1, (point,)))([True]) == [("t", True, GOOD)]


# -- strings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registers", "options", "value"),
    [
        ([0x4845, 0x4C4C, 0x4F00, 0x0000], {}, "HELLO"),
        ([0x4845, 0x4C4C, 0x4F00, 0x0000], {"trim": False}, "HELLO\x00\x00\x00"),
        ([0x4548, 0x4C4C, 0x004F, 0x0000], {"swap_string_bytes": True}, "HELLO"),
        ([0x4142, 0x2020], {}, "AB"),
        ([0x4142, 0x2020], {"trim": False}, "AB  "),
        ([0x2041, 0x4200], {}, " AB"),  # leading spaces are data
        ([0xC3A9, 0x7465], {"encoding": "utf-8"}, "éte"),
        ([0xE974, 0xE900], {"encoding": "latin-1"}, "été"),
        ([0x0041, 0x0100], {"encoding": "utf-16-be"}, "A\u0100"),  # trimming after decoding keeps U+0100
    ],
)
def test_strings(registers: list[int], options: dict[str, Any], value: str) -> None:
    point = _point("string", width=len(registers), **options)
    assert _decode_one(point, registers) == ("t", value, GOOD)


def test_undecodable_string_bytes_read_bad_encoding_error() -> None:
    point = _point("string", width=2)
    assert _decode_one(point, [0x41FF, 0x4200]) == ("t", None, BAD_ENCODING)


# -- arrays, scale, offset ---------------------------------------------------------------


def test_arrays() -> None:
    assert _decode_one(_point("int16", count=3), [1, 0xFFFF, 2]) == ("t", [1, -1, 2], GOOD)
    floats = _point("float32", order="CDAB", count=2)
    assert _decode_one(floats, [0x0000, 0x3FC0, 0x0000, 0xC020]) == ("t", [1.5, -2.5], GOOD)


def test_scale_and_offset_give_floats() -> None:
    assert _decode_one(_point("int16", scale=0.5, offset=-1), [0xFFF6]) == ("t", -6.0, GOOD)
    tag, value, _ = _decode_one(_point("uint16", scale=1), [7])
    assert (value, type(value)) == (7.0, float)
    assert _decode_one(_point("uint16", offset=2), [7])[1:] == (9.0, GOOD)
    assert _decode_one(_point("int16", count=2, scale=10), [1, 0xFFFF]) == ("t", [10.0, -10.0], GOOD)


def test_ints_stay_ints_without_scale() -> None:
    assert type(_decode_one(_point("uint32"), [0, 7])[1]) is int


# -- requests with many points -------------------------------------------------------------


def test_overlapping_points_are_all_decoded_from_one_read() -> None:
    points = (
        _point("float32", 0, tag="f"),
        _point("bool", 0, tag="b", bit=14),
        _point("uint16", 0, tag="hi"),
        _point("uint16", 1, tag="lo"),
        _point("int32", 0, tag="i", order="CDAB"),
    )
    decoded = dict((t, v) for t, v, _ in compile_request(_request(*points))([0x42F6, 0xE979]))
    assert decoded == {
        "f": pytest.approx(123.456, rel=1e-7),
        "b": True,
        "hi": 0x42F6,
        "lo": 0xE979,
        "i": struct.unpack(">i", bytes.fromhex("e97942f6"))[0],
    }


def test_gaps_between_points_are_skipped() -> None:
    points = (_point("uint16", 3, tag="a"), _point("int32", 10, tag="b"))
    words = [0] * 3 + [42] + [0] * 6 + [0xFFFF, 0xFFFE]
    assert compile_request(_request(*points, start=3, count=9))(words[3:]) == [("a", 42, GOOD), ("b", -2, GOOD)]


def test_an_answer_of_the_wrong_size_reads_bad() -> None:
    decode = compile_request(_request(_point("uint16", 0, tag="a"), _point("uint16", 1, tag="b")))
    assert decode([1]) == [("a", None, BAD_ANSWER), ("b", None, BAD_ANSWER)]
    assert decode([1, 2, 3]) == [("a", None, BAD_ANSWER), ("b", None, BAD_ANSWER)]
    assert decode([1, 70000]) == [("a", None, BAD_ANSWER), ("b", None, BAD_ANSWER)]
    coils = compile_request(Request(Table.COILS, 0, 9, (_point("bool", 8, table=Table.COILS),)))
    assert coils([True] * 8) == [("t", None, BAD_ANSWER)]


@pytest.mark.parametrize(
    "request_",
    [
        Request(HOLDING, 2, 4, (_point("uint16", 0),)),  # before the request
        Request(HOLDING, 0, 1, (_point("float32", 0),)),  # past its end
        Request(HOLDING, 0, 1, (_point("bool", 0),)),  # a bool in a register without its bit
        Request(Table.COILS, 0, 1, (_point("uint16", 0, table=Table.COILS),)),
        Request(HOLDING, 0, 1, (_point("uint16", 0, table=Table.INPUT_REGISTERS),)),
    ],
)
def test_points_a_request_cannot_decode_are_refused_when_compiling(request_: Request) -> None:
    with pytest.raises(ValueError):
        compile_request(request_)


@pytest.mark.parametrize(
    ("registers", "check"),
    [
        ([0x7FC0, 0x0000], math.isnan),
        ([0x7F80, 0x0000], lambda v: v == math.inf),
        ([0xFF80, 0x0000], lambda v: v == -math.inf),
    ],
)
def test_nan_and_infinities_are_values_a_leaf_holds(registers: list[int], check: Any) -> None:
    tag, value, quality = _decode_one(_point("float32"), registers)
    assert check(value) and quality == GOOD
    encode_leaf(1, 0, tag, value, quality)


# -- round trips against struct ------------------------------------------------------------

NUMERIC = {
    "int16": ("h", st.integers(-(2**15), 2**15 - 1)),
    "uint16": ("H", st.integers(0, 2**16 - 1)),
    "int32": ("i", st.integers(-(2**31), 2**31 - 1)),
    "uint32": ("I", st.integers(0, 2**32 - 1)),
    "int64": ("q", st.integers(-(2**63), 2**63 - 1)),
    "uint64": ("Q", st.integers(0, 2**64 - 1)),
    "float32": ("f", st.floats(width=32)),
    "float64": ("d", st.floats()),
}


def _registers(value_type: str, value: Any, order: str) -> list[int]:
    """What a device with `order` sends: big-endian bytes, words reversed for CDAB and
    DCBA, the two bytes of each word swapped for BADC and DCBA (16-bit values as they are)."""
    raw = struct.pack(">" + NUMERIC[value_type][0], value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if len(words) > 1 and order in ("CDAB", "DCBA"):
        words.reverse()
    if len(words) > 1 and order in ("BADC", "DCBA"):
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or (a == b and type(a) is type(b))


@st.composite
def _typed_values(draw: st.DrawFn) -> tuple[str, str, Any]:
    value_type = draw(st.sampled_from(sorted(NUMERIC)))
    return value_type, draw(st.sampled_from(ORDERS)), draw(NUMERIC[value_type][1])


@given(_typed_values())
def test_round_trip_of_every_type_and_order(case: tuple[str, str, Any]) -> None:
    value_type, order, value = case
    tag, decoded, quality = _decode_one(_point(value_type, order=order), _registers(value_type, value, order))
    assert quality == GOOD and _same(decoded, value)
    encode_leaf(1, 0, tag, decoded, quality)


@st.composite
def _blocks(draw: st.DrawFn) -> tuple[Request, list[int], dict[str, Any]]:
    """A request of random points (some overlapping, some in gaps) over random registers,
    and what each point should read, computed one point at a time."""
    words = draw(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=125))
    points, expected = [], {}
    for index in range(draw(st.integers(1, 12))):
        value_type = draw(st.sampled_from(sorted(NUMERIC)))
        count = draw(st.sampled_from([None, None, 1, 2]))
        size = REGISTERS_PER_TYPE[value_type]
        address = draw(st.integers(0, len(words) - size * (count or 1)))
        order = draw(st.sampled_from(ORDERS))
        scale = draw(st.sampled_from([None, None, 0.5]))
        points.append(_point(value_type, address, tag=f"p{index}", order=order, count=count, scale=scale))
        at = range(address, address + size * (count or 1), size)
        values = [_value(value_type, order, words[i : i + size]) for i in at]
        values = [v * scale for v in values] if scale is not None else values
        expected[f"p{index}"] = values if count else values[0]
    return Request(HOLDING, 0, len(words), tuple(points)), words, expected


def _value(value_type: str, order: str, words: list[int]) -> Any:
    """The inverse of _registers."""
    if len(words) > 1 and order in ("BADC", "DCBA"):
        words = [int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in words]
    if len(words) > 1 and order in ("CDAB", "DCBA"):
        words = words[::-1]
    return struct.unpack(">" + NUMERIC[value_type][0], b"".join(w.to_bytes(2, "big") for w in words))[0]


@given(_blocks())
def test_a_request_of_many_points_decodes_each_as_alone(block: tuple[Request, list[int], dict[str, Any]]) -> None:
    request, words, expected = block
    decoded = compile_request(request)(words)
    assert [quality for _, _, quality in decoded] == [GOOD] * len(expected)
    assert {tag for tag, _, _ in decoded} == set(expected)
    for tag, value, _ in decoded:
        assert _same(value, expected[tag]), tag


@given(st.integers(0, 0xFFFF), st.integers(0, 15))
def test_round_trip_of_bits_in_registers(register: int, bit: int) -> None:
    assert _decode_one(_point("bool", bit=bit), [register]) == ("t", bool(register >> bit & 1), GOOD)


@given(st.lists(st.booleans(), min_size=1, max_size=64), st.data())
def test_round_trip_of_coils(bits: list[bool], data: st.DataObject) -> None:
    address = data.draw(st.integers(0, len(bits) - 1))
    count = data.draw(st.integers(1, len(bits) - address))
    point = _point("bool", address, count, table=Table.COILS, count=count)
    decoded = compile_request(Request(Table.COILS, 0, len(bits), (point,)))(bits)
    assert decoded == [("t", bits[address : address + count], GOOD)]


@given(
    st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=20).map(lambda t: t.rstrip(" ")),
    st.integers(0, 4),
    st.booleans(),
)
def test_round_trip_of_strings(text: str, padding: int, swapped: bool) -> None:
    """Text packed two characters per register (high byte first, or swapped), padded
    with NULs to `length` registers, reads back as the text."""
    length = max(1, (len(text) + 1) // 2 + padding)
    raw = struct.pack(f">{2 * length}s", text.encode("ascii"))
    registers = list(struct.unpack(f"{'<' if swapped else '>'}{length}H", raw))
    point = _point("string", width=length, swap_string_bytes=swapped)
    assert _decode_one(point, registers) == ("t", text, GOOD)
