"""Deterministic CBOR, RFC 8949 section 4.2.1 (core deterministic encoding).

Shortest integer and float forms that keep the value, definite lengths, and map keys
sorted bytewise by their encoded bytes. cbor2's `canonical=True` sorts length-first
(RFC 8949 4.2.3), which differs e.g. for integer keys {1, 4, 15, 33, -1}, so maps are
encoded here. Arrays without maps (every common reading leaf) may take cbor2's C encoder,
whose canonical forms for them are the same as ours (a property test holds them together).

Decoding is strict: `decode` refuses trailing bytes and anything whose deterministic
re-encoding differs from the input, so one value has exactly one accepted encoding.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import cbor2

MAX_UINT64 = 2**64 - 1


def is_uint(x: Any) -> bool:
    """An unsigned integer as decoded: int, not bool (a CBOR true is not 1)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class CborError(ValueError):
    """Bytes that are not one deterministically encoded CBOR item."""


# What cbor2 raises for malformed input, beside its own error.
DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError)


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    if n <= MAX_UINT64:
        return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")
    raise CborError(f"integer out of CBOR range: {n}")


def array_head(length: int) -> bytes:
    return _head(4, length)


def _float(x: float) -> bytes:
    if math.isnan(x):
        return b"\xf9\x7e\x00"
    for fmt, head in (("e", 0xF9), ("f", 0xFA)):
        try:
            packed = struct.pack(">" + fmt, x)
        except OverflowError:
            continue
        if struct.unpack(">" + fmt, packed)[0] == x:
            return bytes((head,)) + packed
    return b"\xfb" + struct.pack(">d", x)


def encode(obj: Any) -> bytes:
    """Encode `obj` deterministically. Accepts None, bool, int, float, str, bytes,
    list/tuple, Mapping and cbor2.CBORTag."""
    out = bytearray()
    _encode_into(out, obj)
    return bytes(out)


def _encode_into(out: bytearray, obj: Any) -> None:
    if obj is None:
        out += b"\xf6"
    elif obj is True:
        out += b"\xf5"
    elif obj is False:
        out += b"\xf4"
    elif isinstance(obj, int):
        out += _head(0, obj) if obj >= 0 else _head(1, -1 - obj)
    elif isinstance(obj, float):
        out += _float(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out += _head(3, len(raw)) + raw
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out += _head(2, len(obj)) + bytes(obj)
    elif isinstance(obj, (list, tuple)):
        if all(type(item) is bytes for item in obj):
            out += cbor2.dumps(obj, canonical=True)  # e.g. a batch's readings: C speed
            return
        out += _head(4, len(obj))
        for item in obj:
            _encode_into(out, item)
    elif isinstance(obj, Mapping):
        items = sorted((encode(k), encode(v)) for k, v in obj.items())
        out += _head(5, len(items))
        for key, value in items:
            out += key + value
    elif isinstance(obj, cbor2.CBORTag):
        out += _head(6, obj.tag)
        _encode_into(out, obj.value)
    else:
        raise CborError(f"cannot encode {type(obj).__name__} in CBOR")


_FAST_SCALARS = (int, float, str, bytes, bool, type(None))


def decode(data: bytes) -> Any:
    """Decode one deterministic CBOR item; reject anything else.

    Containers come back as lists and dicts (cbor2 may hand out tuples and frozendicts
    inside tags); tags as cbor2.CBORTag."""
    try:
        value = cbor2.loads(data)
    except DECODE_ERRORS as exc:
        raise CborError(f"not well-formed CBOR: {exc}") from None
    value = _thaw(value, set())
    try:
        canonical = encode(value)
    except CborError as exc:
        raise CborError(f"not deterministic CBOR: {exc}") from None
    if canonical != data:
        # cbor2.loads stops after the first item, so trailing bytes show up here too,
        # beside non-shortest forms, unsorted or duplicate keys and indefinite lengths.
        raise CborError("not deterministic CBOR (RFC 8949 4.2.1): re-encoding differs")
    return value


def _thaw(value: Any, seen: set[int]) -> Any:
    """Plain lists and dicts from what cbor2 built. cbor2 resolves shared-reference tags
    (28, 29) while decoding, so a few bytes can describe a cycle, or a structure shared so
    often that walking it takes exponential time; each container may therefore be met
    once. (A shared scalar is harmless: re-encoding shows the tag is gone.)"""
    if isinstance(value, (list, tuple, Mapping, cbor2.CBORTag)):
        if id(value) in seen and (not isinstance(value, (list, tuple, Mapping)) or len(value)):
            raise CborError("shared references (CBOR tags 28/29) are not allowed")
        seen.add(id(value))
    if isinstance(value, (list, tuple)):
        if all(type(v) is bytes for v in value):
            return list(value)
        return [_thaw(v, seen) for v in value]
    if isinstance(value, Mapping):
        return {_thaw_key(k): _thaw(v, seen) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _thaw(value.value, seen))
    if isinstance(value, (cbor2.CBORSimpleValue, cbor2.undefined.__class__)):
        raise CborError("simple values other than false, true and null are not allowed")
    if type(value) not in _FAST_SCALARS:
        raise CborError(f"unexpected CBOR item {type(value).__name__}")
    return value


def _thaw_key(key: Any) -> Any:
    if isinstance(key, (str, int, bytes)) and not isinstance(key, bool):
        return key
    raise CborError(f"map key of type {type(key).__name__} is not allowed")
