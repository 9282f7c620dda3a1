"""OPC UA values onto reading values (DESIGN 3.1): what a Variant holds becomes bool,
int, float, text, bytes, null, or arrays and text-keyed maps of them.

    Boolean                      bool
    SByte .. UInt64, enums       int
    Float, Double                float
    String, XmlElement           text
    DateTime                     int, nanoseconds since the Unix epoch (UTC)
    ByteString                   bytes
    Guid                         text (8-4-4-4-12)
    LocalizedText                its text
    QualifiedName                text NS:Name
    NodeId, ExpandedNodeId       text (the string form)
    StatusCode                   int (uint32)
    arrays, matrices             arrays (of arrays)
    decoded structures           maps of their fields

A structure the client could not decode (an ExtensionObject of an unknown type) has no
faithful value: its reading is Bad_DataEncodingUnsupported rather than a guess.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua

from drivers.api import Quality, Reading, Value, is_bad

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_TIME = datetime(1601, 1, 2, tzinfo=UTC)  # OPC UA's MinDateTime (and the day after) means "not set"
_MIN_INT, _MAX_INT = -(2**64), 2**64 - 1  # CBOR's integers: what a reading holds


class Unsupported(ValueError):
    """A value with no faithful reading value."""


def to_value(value: Any) -> Value:
    """A Variant's Python value as a reading value; raises Unsupported."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, datetime):
        return datetime_ns(value)
    if isinstance(value, list):
        return [to_value(item) for item in value]
    return _special(value)


def _special(value: Any) -> Value:
    if isinstance(value, ua.LocalizedText):
        return None if value.Text is None else _text(value.Text)
    if isinstance(value, ua.QualifiedName):
        return _text(f"{value.NamespaceIndex}:{value.Name or ''}")  # a null name (None) is no name
    if isinstance(value, (ua.NodeId, ua.ExpandedNodeId)):
        return _text(value.to_string())
    if isinstance(value, ua.XmlElement):  # a null XmlElement (length -1) holds None
        return None if value.Value is None else _text(value.Value)
    if isinstance(value, ua.StatusCode):
        return int(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_value(value.value)
    if isinstance(value, ua.Variant):
        return to_value(value.Value)
    if isinstance(value, ua.ExtensionObject):
        raise Unsupported(f"a structure of unknown type {value.TypeId.to_string()}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # fields with init=False are asyncua's own (the Encoding mask), not the structure's
        return {f.name: to_value(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    raise Unsupported(f"a value of type {type(value).__name__}")


def _integer(value: int) -> int:
    """A plain int (from an IntEnum or asyncua's integer subclasses) within what a reading
    holds: no OPC UA integer is wider than 64 bits, but a structure's field may hold any
    Python int."""
    if not _MIN_INT <= value <= _MAX_INT:
        raise Unsupported(f"an integer wider than 64 bits: {value}")
    return int(value)


def _text(value: str) -> str:
    """Text as it is, unless it cannot be UTF-8: asyncua keeps the invalid bytes of a
    String as lone surrogates, which no reading can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Unsupported("text that is not valid UTF-8") from None
    return value


def datetime_ns(moment: datetime) -> int:
    """Exact integer nanoseconds since the Unix epoch; a naive datetime is UTC (asyncua's
    habit). Raises Unsupported beyond what a reading holds (CBOR's 64-bit integers:
    about the years 1385 to 2554), e.g. OPC UA's MaxDateTime, 9999-12-31."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta: timedelta = moment - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    if not _MIN_INT <= ns <= _MAX_INT:
        raise Unsupported(f"a date outside what a reading holds: {moment.isoformat()}")
    return ns


def source_time(moment: datetime | None) -> int | None:
    """A timestamp of the server in ns, or None when it is not set: absent, OPC UA's
    MinDateTime (1601), or a date no reading holds (MaxDateTime, 9999)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment < _NO_TIME:
        return None
    try:
        return datetime_ns(moment)
    except Unsupported:
        return None


def arrival_time(moment: datetime | None) -> int:
    """The reading time of a server timestamp: its own when set, else now."""
    ts = source_time(moment)
    return time.time_ns() if ts is None else ts


def reading(tag: str, data: ua.DataValue) -> Reading:
    """One DataValue as a reading: its SourceTimestamp (else the time it arrived), its
    StatusCode as the quality, and no value unless the quality allows one."""
    ts = arrival_time(data.SourceTimestamp)
    quality = data.StatusCode.value if data.StatusCode is not None else Quality.GOOD
    if is_bad(quality):  # a Bad value is not to be used, so none is kept
        return Reading(tag, ts, None, quality)
    variant = data.Value
    try:
        value = to_value(variant.Value if variant is not None else None)
    except Unsupported:
        return Reading(tag, ts, None, Quality.BAD_DATA_ENCODING_UNSUPPORTED)
    return Reading(tag, ts, value, quality)


def bad_readings(tags: Sequence[str], quality: int, ts: int | None = None) -> list[Reading]:
    ts = time.time_ns() if ts is None else ts
    return [Reading(tag, ts, None, quality) for tag in tags]


def event_value(fields: Sequence[str], values: Sequence[Any]) -> dict[str, Value]:
    """An event as one map of its selected fields; a field the event does not have, or
    cannot be represented, is null."""
    event: dict[str, Value] = {}
    for name, variant in zip(fields, values):
        try:
            event[name] = to_value(variant.Value if isinstance(variant, ua.Variant) else variant)
        except Unsupported:
            event[name] = None
    return event
