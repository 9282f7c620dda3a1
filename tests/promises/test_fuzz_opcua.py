"""Promise (DESIGN 3.1 and 5): whatever an OPC UA server sends, the value mapping gives a
reading that a leaf can hold (sealed here with the real leaf encoder, so "accepted"
means "sealable"), or a reading with no value and a Bad quality; never an exception.

How: DataValues of every VariantType (scalars, arrays, matrices, nested Variants and
DataValues, every structure asyncua knows, extension objects of unknown types, nulls,
NaN, StatusCodes, timestamps from 1601 to 9999 in any time zone) encoded by asyncua's
binary codec, sometimes changed byte by byte, and decoded by it as a server's answer
would be; and Python values beyond what the wire carries (integers past 64 bits, dates
no reading holds, objects of no OPC UA type) handed to the mapping directly.
"""

from __future__ import annotations

import decimal
import enum
import math
import re
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import from_binary, to_binary
from fuzz_bytes import mutated
from fuzz_tally import FUZZ, Tally, figures
from hypothesis import example, given
from hypothesis import strategies as st

from agent.trust.leaf import decode_leaf, encode_leaf, is_leaf_time
from drivers.api import Quality, Reading, is_bad
from drivers.opcua.values import Unsupported, event_value, reading, to_value

TALLY = Tally()
print_figures = figures(TALLY)
WIRE, DIRECT = "OPC UA value mapping (wire)", "OPC UA value mapping (direct)"
V = ua.VariantType


def _constructible(cls: type) -> bool:
    """Whether asyncua can make a default instance of its structure `cls` (one of its
    generated classes names a type it does not define, so it cannot)."""
    try:
        cls()
    except NameError:
        return False
    return True


STRUCTURES = sorted(
    (cls for cls in set(ua.extension_objects_by_typeid.values()) if _constructible(cls)), key=lambda cls: cls.__name__
)
ENCODING_IDS = sorted(ua.extension_objects_by_typeid, key=lambda node: node.to_string())
ZONES = [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]


# -- values asyncua can send -----------------------------------------------------------


def _one_of(items: list[Any]) -> st.SearchStrategy[Any]:
    """sampled_from(items) without a repr listing hundreds of them in every report."""
    return st.integers(0, len(items) - 1).map(lambda index: items[index])


def _text() -> st.SearchStrategy[str | None]:
    return st.none() | st.text(max_size=12)


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else st.integers(0, 2**bits - 1)


NODE_IDS = st.one_of(
    st.builds(ua.NodeId, _ints(32, False), _ints(16, False)),
    st.builds(ua.NodeId, st.text(max_size=8), _ints(16, False)),
    st.builds(ua.NodeId, st.binary(max_size=8), _ints(16, False)),
    st.builds(ua.NodeId, st.uuids(), _ints(16, False)),
    _one_of(ENCODING_IDS),
)
TIMES = st.datetimes(min_value=datetime(1601, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.sampled_from(ZONES))

SCALARS: dict[ua.VariantType, st.SearchStrategy[Any]] = {
    V.Boolean: st.booleans(),
    V.SByte: _ints(8, True),
    V.Byte: _ints(8, False),
    V.Int16: _ints(16, True),
    V.UInt16: _ints(16, False),
    V.Int32: _ints(32, True),
    V.UInt32: _ints(32, False),
    V.Int64: _ints(64, True),
    V.UInt64: _ints(64, False),
    V.Float: st.floats(width=32),
    V.Double: st.floats(),
    V.String: _text(),
    V.DateTime: TIMES,
    V.Guid: st.uuids(),
    V.ByteString: st.none() | st.binary(max_size=12),
    V.XmlElement: st.builds(ua.XmlElement, _text()),
    V.NodeId: NODE_IDS,
    V.ExpandedNodeId: st.builds(ua.ExpandedNodeId, _ints(32, False), _ints(16, False)),
    V.StatusCode: st.builds(ua.StatusCode, _ints(32, False)),
    V.QualifiedName: st.builds(ua.QualifiedName, _text(), _ints(15, False)),
    V.LocalizedText: st.builds(ua.LocalizedText, _text(), _text()),
    # every structure asyncua knows (default fields), and bodies it cannot decode
    V.ExtensionObject: _one_of(STRUCTURES).map(lambda cls: cls())
    | st.builds(ua.ExtensionObject, NODE_IDS, st.binary(max_size=16)),
    V.DiagnosticInfo: st.builds(ua.DiagnosticInfo),
}


@st.composite
def variants(draw: st.DrawFn, depth: int = 2) -> ua.Variant:
    """A Variant of any type: a scalar, an array, a matrix, or (while `depth` lasts)
    Variants and DataValues inside one."""
    kinds = [*SCALARS] + ([V.Variant, V.DataValue] if depth else [])
    variant_type = draw(st.sampled_from(kinds))
    if variant_type == V.Variant:
        return ua.Variant(draw(st.lists(variants(depth - 1), max_size=3)), V.Variant)
    if variant_type == V.DataValue:
        return ua.Variant(draw(data_values(depth - 1)), V.DataValue)
    scalar = SCALARS[variant_type]
    shape = draw(st.sampled_from(["scalar", "scalar", "array", "matrix", "null"]))
    if shape == "array":
        return ua.Variant(draw(st.lists(scalar, max_size=4)), variant_type, is_array=True)
    if shape == "matrix":
        rows, columns = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        items = [draw(scalar) for _ in range(rows * columns)]
        return ua.Variant(items, variant_type, Dimensions=[rows, columns], is_array=True)
    if shape == "null":
        return ua.Variant(None, V.Null)
    return ua.Variant(draw(scalar), variant_type)


@st.composite
def data_values(draw: st.DrawFn, depth: int = 2) -> ua.DataValue:
    status = st.sampled_from([0, 0x40900000, 0x80050000, 0x80390000]) | _ints(32, False)
    return ua.DataValue(
        Value=draw(st.none() | variants(depth)),
        StatusCode=draw(st.none() | st.builds(ua.StatusCode, status)),
        SourceTimestamp=draw(st.none() | TIMES),
    )


# -- the judgement --------------------------------------------------------------------


def assert_sealable(result: Reading) -> None:
    """A reading the sequencer can write as it is: a leaf time, a uint32 quality, no value
    with a Bad one, and a leaf that decodes to exactly this reading."""
    assert is_leaf_time(result.ts), result
    assert 0 <= result.quality <= 0xFFFFFFFF, result
    if is_bad(result.quality):
        assert result.value is None, result
    leaf = decode_leaf(encode_leaf(1, result.ts, result.tag, result.value, result.quality))
    assert _same(leaf.value, result.value), (leaf.value, result.value)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (True is not 1, 1 is not 1.0), NaN equal to NaN."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def _tally(target: str, result: Reading) -> None:
    if result.quality == Quality.BAD_DATA_ENCODING_UNSUPPORTED:
        TALLY.rejected(target)
    else:
        TALLY.accepted(target)


def _encoded(data: ua.DataValue) -> bytes | None:
    """`data` as a server puts it on the wire; None when asyncua cannot encode it."""
    try:
        return to_binary(ua.DataValue, data)
    except Exception:  # asyncua's own refusal, whatever it raises: no server sends it
        return None


def _decoded(wire: bytes) -> ua.DataValue | None:
    """What a client makes of `wire`; None when asyncua cannot decode it: such a message
    never reaches the mapping (the session reports it)."""
    if _null_array_bomb(wire):
        return None
    try:
        return from_binary(ua.DataValue, Buffer(wire))
    except Exception:  # asyncua's own refusal, whatever it raises: not the mapping's input
        return None


# A Variant's encoding byte for an array (0x80, with dimensions 0xC0) of type Null (0), then
# its length (Int32, little-endian).
_NULL_ARRAY = re.compile(rb"[\x80\xc0](?=(....))", re.DOTALL)


def _null_array_bomb(wire: bytes) -> bool:
    """Whether `wire` may declare a long array of Null Variants. asyncua decodes each
    from no bytes at all, so 7 bytes make a list of up to 2**31 Nones and exhaust the
    memory of any asyncua client, whatever the mapping does after (a server can do this
    to the agent). Such input tests asyncua's memory, not the mapping."""
    return any(struct.unpack("<i", match[1])[0] > 1000 for match in _NULL_ARRAY.finditer(wire))


@FUZZ
@given(data_values(), st.booleans(), st.data())
@example(ua.DataValue(Value=ua.Variant(ua.XmlElement(None), V.XmlElement)), False, None)
def test_a_value_from_the_wire_makes_a_sealable_reading(sent: ua.DataValue, change: bool, data: Any) -> None:
    wire = _encoded(sent)
    if wire is not None and change:
        wire = data.draw(mutated(wire))
    received = _decoded(wire) if wire is not None else None
    if received is None:
        return
    TALLY.judged(WIRE)
    result = reading("press1.value", received)
    assert_sealable(result)
    _tally(WIRE, result)


# -- values beyond the wire -----------------------------------------------------------


def _holding(value: Any) -> ua.Variant:
    """A Variant holding `value` as it is: asyncua's constructor guesses and checks the
    type, which the values here are meant to escape."""
    variant = ua.Variant()
    variant.Value = value
    return variant


class _Shade(enum.IntEnum):
    DARK = 1
    LIGHT = 2**70  # an enum's value is mapped too, and may be out of range


DIRECT_VALUES = st.recursive(
    st.one_of(
        st.integers() | st.sampled_from([2**64, -(2**64) - 1, 2**100]),
        st.floats(),
        st.booleans(),
        st.none(),
        st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=6),
        st.binary(max_size=6).map(bytearray),
        st.datetimes(timezones=st.sampled_from(ZONES)),
        st.sampled_from([*_Shade, *ua.NodeClass, object(), {1, 2}, decimal.Decimal("1.5"), 1j, {"a": 1}]),
        *(strategy for strategy in SCALARS.values()),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.builds(_holding, inner),
    max_leaves=6,
)


@FUZZ
@given(DIRECT_VALUES, st.none() | st.datetimes(timezones=st.sampled_from(ZONES)))
@example(2**64, None)
@example(_Shade.LIGHT, None)
def test_any_python_value_maps_to_a_sealable_value_or_unsupported(value: Any, source: datetime | None) -> None:
    TALLY.judged(DIRECT)
    result = reading("press1.value", ua.DataValue(Value=_holding(value), SourceTimestamp=source))
    assert_sealable(result)
    try:
        mapped = to_value(value)
    except Unsupported as error:
        assert str(error).strip() and result.quality == Quality.BAD_DATA_ENCODING_UNSUPPORTED
    else:
        assert _same(mapped, result.value)
    fields = [value, _holding(source), _holding(value)]
    event = event_value(["Message", "Time", "Vendor"], fields)
    assert_sealable(Reading("press1.event", 0, event, 0))
    _tally(DIRECT, result)


def test_null_text_is_no_text() -> None:
    """Regressions, as asyncua decodes a null String (length -1) inside them: a null
    XmlElement raised AttributeError out of the mapping, and a QualifiedName with a
    null name read as the text '2:None'."""
    assert to_value(ua.XmlElement(None)) is None
    assert to_value(ua.QualifiedName(None, 2)) == "2:"
