"""OPC UA values onto reading values (drivers/opcua/values.py), on values decoded by
asyncua's own binary codec, exactly as they arrive from a server; and the contract the
mapping exists for: whatever it produces, the agent's leaf encoder takes and gives back."""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import from_binary, to_binary, variant_from_binary, variant_to_binary
from hypothesis import given
from hypothesis import strategies as st

from agent.trust.leaf import decode_leaf, encode_leaf
from drivers.api import Quality, Reading
from drivers.opcua.values import Unsupported, bad_readings, datetime_ns, event_value, reading, source_time, to_value

V = ua.VariantType
GUID = uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")
# 2024-01-02T03:04:05Z is 1704164645 s after the epoch
T_2024 = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
T_2024_NS = 1_704_164_645_123_456_000
BAD_DATA_ENCODING_UNSUPPORTED = 0x80390000
UINT64_MAX = 2**64 - 1


def decoded(value: Any, variant_type: ua.VariantType | None = None) -> Any:
    """The Python value asyncua hands over after decoding this Variant from the wire."""
    wire = variant_to_binary(ua.Variant(value, variant_type))
    return variant_from_binary(Buffer(wire)).Value


def decoded_data_value(data: ua.DataValue) -> ua.DataValue:
    return from_binary(ua.DataValue, Buffer(to_binary(ua.DataValue, data)))


def invalid_utf8_string() -> Any:
    """A String Variant whose bytes are not UTF-8, as a faulty device sends it."""
    wire = variant_to_binary(ua.Variant("ab", V.String))
    return variant_from_binary(Buffer(wire[:-2] + b"\xff\xfe")).Value


def _exactly(value: Any) -> tuple[type, Any]:
    """Compare values and their types (True == 1 and 1 == 1.0 are not the same reading)."""
    if isinstance(value, list):
        return (list, [_exactly(item) for item in value])
    if isinstance(value, dict):
        return (dict, {key: _exactly(item) for key, item in value.items()})
    return (type(value), value)


# -- scalars --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "variant_type", "expected"),
    [
        (True, V.Boolean, True),
        (False, V.Boolean, False),
        (-128, V.SByte, -128),
        (255, V.Byte, 255),
        (-32768, V.Int16, -32768),
        (65535, V.UInt16, 65535),
        (-(2**31), V.Int32, -(2**31)),
        (2**32 - 1, V.UInt32, 2**32 - 1),
        (-(2**63), V.Int64, -(2**63)),
        (2**64 - 1, V.UInt64, 2**64 - 1),
        (1.5, V.Float, 1.5),
        (0.1, V.Double, 0.1),
        (-0.0, V.Double, -0.0),
        ("Ölpumpe 1 – läuft", V.String, "Ölpumpe 1 – läuft"),
        ("", V.String, ""),
        (None, V.String, None),
        (b"\x00\xff\x10", V.ByteString, b"\x00\xff\x10"),
        (None, V.ByteString, None),
        (None, V.Null, None),
        (GUID, V.Guid, "09087e75-8e5e-499b-954f-f2a9603db28a"),
        (ua.LocalizedText("Druck zu hoch", "de-DE"), V.LocalizedText, "Druck zu hoch"),
        (ua.LocalizedText(None, "de-DE"), V.LocalizedText, None),
        (ua.QualifiedName("Pressure", 3), V.QualifiedName, "3:Pressure"),
        (ua.QualifiedName("Server", 0), V.QualifiedName, "0:Server"),
        (ua.NodeId(2253, 0), V.NodeId, "i=2253"),
        (ua.NodeId(5001, 2), V.NodeId, "ns=2;i=5001"),
        (ua.NodeId("Press1.Force", 3), V.NodeId, "ns=3;s=Press1.Force"),
        (ua.NodeId(GUID, 2), V.NodeId, "ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a"),
        (ua.NodeId(b"\x01\x02", 2), V.NodeId, "ns=2;b=AQI="),
        (ua.ExpandedNodeId(5001, 2), V.ExpandedNodeId, "ns=2;i=5001"),
        (ua.StatusCode(0), V.StatusCode, 0),
        (ua.StatusCode(0x80390000), V.StatusCode, 0x80390000),
        (ua.StatusCode(0x40900000), V.StatusCode, 0x40900000),
    ],
    ids=lambda item: repr(item)[:40],
)
def test_each_variant_type_becomes_its_reading_value(value: Any, variant_type: ua.VariantType, expected: Any) -> None:
    assert _exactly(to_value(decoded(value, variant_type))) == _exactly(expected)


def test_an_xml_element_is_its_text() -> None:
    """The module's table: String, XmlElement -> text (asyncua decodes an XmlElement
    into a small dataclass, which must not become a map)."""
    assert _exactly(to_value(decoded(ua.XmlElement("<a x='1'/>"), V.XmlElement))) == (str, "<a x='1'/>")


def test_floats_keep_their_special_values() -> None:
    assert math.isnan(to_value(decoded(math.nan, V.Double)))
    assert to_value(decoded(math.inf, V.Float)) == math.inf
    assert to_value(decoded(-math.inf, V.Double)) == -math.inf


class _Mode(enum.IntEnum):
    AUTO = 2


class _Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ua.ServerState.Shutdown, 4),
        (ua.NodeClass.Variable, 2),
        (_Mode.AUTO, 2),
        (_Colour.RED, "red"),
        (ua.Int32(7), 7),
    ],
)
def test_enums_and_int_subclasses_become_plain_values(value: Any, expected: Any) -> None:
    assert _exactly(to_value(value)) == _exactly(expected)


# -- date and time --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (T_2024, T_2024_NS),
        (T_2024.replace(tzinfo=None), T_2024_NS),  # naive is UTC, as asyncua means it
        (T_2024.astimezone(timezone(timedelta(hours=2))), T_2024_NS),
        (T_2024.astimezone(timezone(timedelta(hours=-9, minutes=-30))), T_2024_NS),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 1_000),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -1_000),
        (datetime(1969, 7, 20, 20, 17, 40, 500000, tzinfo=UTC), -14_182_939_500_000_000),
        (datetime(1601, 1, 1, tzinfo=UTC), -11_644_473_600_000_000_000),
        (datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC), 9_223_372_036_854_775_000),
    ],
)
def test_datetimes_are_exact_integer_nanoseconds_since_the_epoch(moment: datetime, expected: int) -> None:
    assert datetime_ns(moment) == expected
    assert _exactly(to_value(moment)) == (int, expected)


def test_a_decoded_datetime_keeps_its_microseconds() -> None:
    assert to_value(decoded(T_2024, V.DateTime)) == T_2024_NS
    assert to_value(decoded(datetime(1969, 12, 31, 23, 59, 59, 999999), V.DateTime)) == -1_000


@given(st.datetimes(min_value=datetime(1601, 1, 2), max_value=datetime(2500, 1, 1)))
def test_datetime_ns_agrees_with_integer_arithmetic(moment: datetime) -> None:
    seconds = (moment - datetime(1970, 1, 1)) // timedelta(seconds=1)
    assert datetime_ns(moment) == seconds * 10**9 + moment.microsecond * 1_000


# -- arrays and structures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "variant_type", "expected"),
    [
        ([1, -2, 3], V.Int32, [1, -2, 3]),
        ([], V.Int32, []),
        ([True, False], V.Boolean, [True, False]),
        ([0.5, 1.5], V.Float, [0.5, 1.5]),
        (["a", None, ""], V.String, ["a", None, ""]),
        ([b"\x01", b""], V.ByteString, [b"\x01", b""]),
        ([[1, 2, 3], [4, 5, 6]], V.Int32, [[1, 2, 3], [4, 5, 6]]),
        ([[[1.0], [2.0]], [[3.0], [4.0]]], V.Double, [[[1.0], [2.0]], [[3.0], [4.0]]]),
        ([ua.LocalizedText("an"), ua.LocalizedText("aus")], V.LocalizedText, ["an", "aus"]),
        ([ua.Variant(1, V.Int16), ua.Variant("x"), ua.Variant([1.5, 2.5], V.Double)], V.Variant, [1, "x", [1.5, 2.5]]),
        ([T_2024, datetime(1970, 1, 1, tzinfo=UTC)], V.DateTime, [T_2024_NS, 0]),
        ([ua.StatusCode(0), ua.StatusCode(0x80050000)], V.StatusCode, [0, 0x80050000]),
    ],
    ids=lambda item: repr(item)[:40],
)
def test_arrays_and_matrices_become_arrays_of_arrays(value: Any, variant_type: ua.VariantType, expected: Any) -> None:
    assert _exactly(to_value(decoded(value, variant_type))) == _exactly(expected)


def test_a_decoded_structure_becomes_a_map_of_its_fields() -> None:
    assert _exactly(to_value(decoded(ua.Range(-10.0, 250.5)))) == _exactly({"Low": -10.0, "High": 250.5})


def test_structures_nest_with_their_arrays_and_special_types() -> None:
    argument = ua.Argument(
        Name="setpoint",
        DataType=ua.NodeId(ua.ObjectIds.Double),
        ValueRank=1,
        ArrayDimensions=[3],
        Description=ua.LocalizedText("Sollwert", "de"),
    )
    expected = {
        "Name": "setpoint",
        "DataType": "i=11",
        "ValueRank": 1,
        "ArrayDimensions": [3],
        "Description": "Sollwert",
    }
    assert _exactly(to_value(decoded(argument))) == _exactly(expected)
    assert to_value(decoded([argument, argument], V.ExtensionObject)) == [expected, expected]


@dataclasses.dataclass
class _PressCycle:
    """What asyncua generates for a vendor structure once its type is loaded."""

    Count: ua.UInt32 = 0
    Peak: ua.Double = 0.0
    Started: datetime | None = None
    Tool: ua.String | None = None
    Limits: list[ua.Range] = dataclasses.field(default_factory=list)
    Mode: ua.ServerState = ua.ServerState.Running


def test_a_vendor_structure_becomes_a_map_of_plain_values() -> None:
    cycle = _PressCycle(7, 812.5, T_2024, None, [ua.Range(0.0, 900.0)], ua.ServerState.Suspended)
    expected = {
        "Count": 7,
        "Peak": 812.5,
        "Started": T_2024_NS,
        "Tool": None,
        "Limits": [{"Low": 0.0, "High": 900.0}],
        "Mode": 3,
    }
    assert _exactly(to_value(cycle)) == _exactly(expected)


UNKNOWN_STRUCTURE = ua.ExtensionObject(TypeId=ua.NodeId(5001, 2), Body=b"\x01\x02\x03")


def test_an_undecodable_structure_is_unsupported_and_names_its_type() -> None:
    value = decoded(UNKNOWN_STRUCTURE)
    assert isinstance(value, ua.ExtensionObject)
    with pytest.raises(Unsupported, match="ns=2;i=5001"):
        to_value(value)


@pytest.mark.parametrize(
    "value",
    [
        [UNKNOWN_STRUCTURE],
        _PressCycle(Tool=UNKNOWN_STRUCTURE),  # type: ignore[arg-type]
        ua.Variant(UNKNOWN_STRUCTURE),
        object(),
        {1, 2},
        (1, 2),
    ],
    ids=["in-array", "in-structure", "in-variant", "object", "set", "tuple"],
)
def test_anything_without_a_faithful_value_is_unsupported(value: Any) -> None:
    with pytest.raises(Unsupported):
        to_value(value)


# -- readings -------------------------------------------------------------------------


def _data_value(
    value: Any = 21.5,
    variant_type: ua.VariantType | None = V.Double,
    status: int | None = 0,
    source: datetime | None = T_2024,
) -> ua.DataValue:
    data = ua.DataValue(
        ua.Variant(value, variant_type),
        StatusCode=ua.StatusCode(status) if status is not None else None,
        SourceTimestamp=source,
        ServerTimestamp=datetime(2030, 1, 1, tzinfo=UTC),
    )
    return decoded_data_value(data)


def test_a_good_value_takes_its_time_from_the_source_timestamp() -> None:
    assert reading("press1.force", _data_value()) == Reading("press1.force", T_2024_NS, 21.5, 0)


def test_a_naive_source_timestamp_is_utc() -> None:
    data = ua.DataValue(ua.Variant(1, V.Int32), SourceTimestamp=T_2024.replace(tzinfo=None))
    assert reading("t", data).ts == T_2024_NS


@pytest.mark.parametrize(
    "data",
    [
        _data_value(source=None),
        _data_value(source=datetime(1601, 1, 1, tzinfo=UTC)),  # MinDateTime, as decoded
        _data_value(source=datetime(1601, 1, 1, 12, tzinfo=UTC)),
        ua.DataValue(ua.Variant(21.5, V.Double), SourceTimestamp=datetime(1601, 1, 1)),
    ],
    ids=["absent", "MinDateTime", "MinDateTime-noon", "MinDateTime-naive"],
)
def test_without_a_source_timestamp_the_time_is_when_it_arrived(data: ua.DataValue) -> None:
    before = time.time_ns()
    result = reading("t", data)
    after = time.time_ns()
    assert before <= result.ts <= after
    assert (result.value, result.quality) == (21.5, 0)


def test_a_source_timestamp_at_the_epoch_is_a_timestamp() -> None:
    """1970-01-01T00:00:00Z is what a controller with an unset clock sends: it is the
    source's time (0 ns), like 1 µs later would be, not a missing one."""
    assert reading("t", _data_value(source=datetime(1970, 1, 1, tzinfo=UTC))).ts == 0


def test_source_time_is_none_only_when_unset() -> None:
    assert source_time(None) is None
    assert source_time(datetime(1601, 1, 1, tzinfo=UTC)) is None
    assert source_time(datetime(1601, 1, 2, tzinfo=UTC)) == datetime_ns(datetime(1601, 1, 2, tzinfo=UTC))
    assert source_time(T_2024.replace(tzinfo=None)) == T_2024_NS


@pytest.mark.parametrize("status", [0x40900000, 0x40000000, 0x408F0000])
def test_an_uncertain_value_is_kept_with_its_quality(status: int) -> None:
    assert reading("t", _data_value(status=status)) == Reading("t", T_2024_NS, 21.5, status)


@pytest.mark.parametrize("status", [0x80050000, 0x80000000, 0x80340000, 0xC0000000])
def test_a_bad_value_is_dropped_and_its_quality_kept(status: int) -> None:
    assert reading("t", _data_value(status=status)) == Reading("t", T_2024_NS, None, status)


def test_a_missing_status_code_is_good() -> None:
    assert reading("t", ua.DataValue(ua.Variant(3, V.Int32), StatusCode=None, SourceTimestamp=T_2024)).quality == 0


def test_a_null_value_is_kept_as_null() -> None:
    assert reading("t", _data_value(None, V.String)) == Reading("t", T_2024_NS, None, 0)


def test_an_undecodable_structure_reads_bad_data_encoding_unsupported() -> None:
    result = reading("t", _data_value(UNKNOWN_STRUCTURE, V.ExtensionObject))
    assert result == Reading("t", T_2024_NS, None, BAD_DATA_ENCODING_UNSUPPORTED)
    assert Quality.BAD_DATA_ENCODING_UNSUPPORTED == BAD_DATA_ENCODING_UNSUPPORTED


def test_a_bad_status_wins_over_an_undecodable_value() -> None:
    assert reading("t", _data_value(UNKNOWN_STRUCTURE, V.ExtensionObject, status=0x80050000)).quality == 0x80050000


def test_bad_readings_share_one_time_and_carry_no_value() -> None:
    assert bad_readings(["a", "b"], 0x80050000, ts=5) == [
        Reading("a", 5, None, 0x80050000),
        Reading("b", 5, None, 0x80050000),
    ]
    before = time.time_ns()
    [only] = bad_readings(["a"], 0x800A0000)
    assert before <= only.ts <= time.time_ns()


def test_an_event_is_a_map_of_its_fields_with_null_for_what_cannot_be_shown() -> None:
    values = [ua.Variant(500, V.UInt16), ua.Variant(ua.LocalizedText("Overpressure")), UNKNOWN_STRUCTURE, None]
    fields = ["Severity", "Message", "Vendor", "Missing"]
    expected = {"Severity": 500, "Message": "Overpressure", "Vendor": None, "Missing": None}
    assert event_value(fields, values) == expected


# -- the contract: what the mapping produces, the leaf encoder takes --------------------


def _round_trips_through_a_leaf(value: Any, ts: int = T_2024_NS, quality: int = 0) -> None:
    leaf = decode_leaf(encode_leaf(42, ts, "press1.value", value, quality))
    assert leaf[:3] == (42, ts, "press1.value")
    assert leaf.quality == quality
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(leaf.value)
    else:
        assert _exactly(leaf.value) == _exactly(value)


DECODED_SAMPLES: list[tuple[str, Any]] = [
    ("bool", decoded(True, V.Boolean)),
    ("int64-min", decoded(-(2**63), V.Int64)),
    ("uint64-max", decoded(2**64 - 1, V.UInt64)),
    ("float", decoded(3.25, V.Float)),
    ("nan", decoded(math.nan, V.Double)),
    ("inf", decoded(-math.inf, V.Double)),
    ("string", decoded("Ölpumpe", V.String)),
    ("null-string", decoded(None, V.String)),
    ("bytes", decoded(b"\x00\x01", V.ByteString)),
    ("xml", decoded(ua.XmlElement("<a/>"), V.XmlElement)),
    ("datetime", decoded(T_2024, V.DateTime)),
    ("datetime-1601", decoded(datetime(1601, 1, 1, tzinfo=UTC), V.DateTime)),
    ("datetime-max", decoded(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), V.DateTime)),
    ("guid", decoded(GUID, V.Guid)),
    ("localized-text", decoded(ua.LocalizedText("x", "en"))),
    ("qualified-name", decoded(ua.QualifiedName("x", 2))),
    ("node-id", decoded(ua.NodeId("a;b=c", 2), V.NodeId)),
    ("status-code", decoded(ua.StatusCode(0xFFFFFFFF), V.StatusCode)),
    ("matrix", decoded([[1, 2], [3, 4]], V.UInt16)),
    ("variant-array", decoded([ua.Variant(1, V.Byte), ua.Variant(None, V.Null)], V.Variant)),
    ("structure", decoded(ua.Range(0.0, 1.0))),
    ("structures", decoded([ua.EUInformation(NamespaceUri="u", UnitId=4408652, DisplayName=ua.LocalizedText("°C"))])),
    ("invalid-utf8", invalid_utf8_string()),
]


@pytest.mark.parametrize("sample", [sample for _, sample in DECODED_SAMPLES], ids=[n for n, _ in DECODED_SAMPLES])
def test_every_value_produced_is_taken_by_the_leaf_encoder(sample: Any) -> None:
    try:
        value = to_value(sample)
    except Unsupported:
        return  # no value: the reading is Bad_DataEncodingUnsupported, with null
    _round_trips_through_a_leaf(value)


def test_every_reading_produced_is_taken_by_the_leaf_encoder() -> None:
    for data in [_data_value(), _data_value(status=0x80050000), _data_value(UNKNOWN_STRUCTURE, V.ExtensionObject)]:
        result = reading("t", data)
        _round_trips_through_a_leaf(result.value, result.ts, result.quality)


@pytest.mark.parametrize(
    "source",
    [datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2600, 1, 1, tzinfo=UTC)],
    ids=["MaxDateTime", "year-2600"],
)
def test_a_far_future_source_timestamp_still_makes_an_encodable_reading(source: datetime) -> None:
    """Beyond 2554-07-21 nanoseconds since 1970 no longer fit CBOR's 64 bits; the
    agent's fallback for unencodable readings keeps the ts, so the reading must not."""
    result = reading("t", _data_value(source=source))
    encode_leaf(1, result.ts, result.tag, result.value, result.quality)


_SCALAR_VARIANTS = st.one_of(
    st.tuples(st.booleans(), st.just(V.Boolean)),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.just(V.Int64)),
    st.tuples(st.integers(0, 2**64 - 1), st.just(V.UInt64)),
    st.tuples(st.integers(-128, 127), st.just(V.SByte)),
    st.tuples(st.floats(width=32, allow_nan=False), st.just(V.Float)),
    st.tuples(st.floats(allow_nan=False), st.just(V.Double)),  # NaN: in the samples above
    st.tuples(st.text(), st.just(V.String)),
    st.tuples(st.binary(), st.just(V.ByteString)),
    st.tuples(st.uuids(), st.just(V.Guid)),
    st.tuples(st.datetimes(min_value=datetime(1601, 1, 1), max_value=datetime(2500, 1, 1)), st.just(V.DateTime)),
    st.tuples(st.integers(0, 2**32 - 1).map(ua.StatusCode), st.just(V.StatusCode)),
    st.tuples(st.builds(ua.LocalizedText, st.text()), st.just(V.LocalizedText)),
    # asyncua encodes a QualifiedName's namespace index as Int16, so it cannot send more
    st.tuples(st.builds(ua.QualifiedName, st.text(min_size=1), st.integers(0, 2**15 - 1)), st.just(V.QualifiedName)),
)


@given(_SCALAR_VARIANTS, st.integers(0, 3))
def test_decoded_values_and_arrays_of_them_make_leaves(sample: tuple[Any, ua.VariantType], copies: int) -> None:
    value, variant_type = sample
    wire_value = value if copies == 0 else [value] * copies
    _round_trips_through_a_leaf(to_value(decoded(wire_value, variant_type)))


def test_an_event_map_makes_a_leaf() -> None:
    fields = ["Time", "Severity", "Message", "ActiveState/Id", "Vendor"]
    values = [
        ua.Variant(T_2024),
        ua.Variant(900, V.UInt16),
        ua.Variant(ua.LocalizedText("hot")),
        True,
        UNKNOWN_STRUCTURE,
    ]
    _round_trips_through_a_leaf(event_value(fields, values))
