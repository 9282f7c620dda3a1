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
    if any(tag in data for tag in _REFERENCE_TAG_BYTES):
        check_structure(data)  # cbor2 would resolve them into a graph: walk the bytes first
    try:
        value = cbor2.loads(data)
    except DECODE_ERRORS as exc:
        raise CborError(f"not well-formed CBOR: {exc}") from None
    value = _thaw(value)
    try:
        canonical = encode(value)
    except CborError as exc:
        raise CborError(f"not deterministic CBOR: {exc}") from None
    if canonical != data:
        # cbor2.loads stops after the first item, so trailing bytes show up here too,
        # beside non-shortest forms, unsorted or duplicate keys and indefinite lengths.
        raise CborError("not deterministic CBOR (RFC 8949 4.2.1): re-encoding differs")
    return value


# cbor2 resolves these tags (stringref 25 and 256, shareable 28, sharedref 29) while
# decoding, so a few bytes can describe a cyclic or exponentially shared structure. None
# is valid in edgeseal's formats; their byte patterns are rare, and only bytes showing
# one are walked by check_structure before cbor2 sees them.
_REFERENCE_TAG_BYTES = (b"\xd8\x19", b"\xd8\x1c", b"\xd8\x1d", b"\xd9\x01\x00")
MAX_DEPTH = 64
ALLOWED_TAGS = frozenset({18})  # COSE_Sign1, the only tag in edgeseal's formats


def check_structure(data: bytes) -> None:
    """Walk one CBOR item without building it: definite lengths only, nesting at most
    MAX_DEPTH, no tag but ALLOWED_TAGS, no trailing bytes. Raises CborError."""
    pending = [1]  # items still to read at each open level
    pos, end = 0, len(data)
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        if pos >= end:
            raise CborError("not well-formed CBOR: truncated")
        major, info = data[pos] >> 5, data[pos] & 31
        pos += 1
        if info >= 28:
            raise CborError("not deterministic CBOR: indefinite length or reserved value")
        size = 0 if info < 24 else 1 << (info - 24)
        argument = info if info < 24 else int.from_bytes(data[pos : pos + size], "big")
        pos += size
        if major in (2, 3):
            pos += argument
        elif major in (4, 5, 6):
            if major == 6 and argument not in ALLOWED_TAGS:
                raise CborError(f"tag {argument} is not allowed here")
            pending.append(argument * 2 if major == 5 else argument if major == 4 else 1)
            if len(pending) > MAX_DEPTH + 1:
                raise CborError(f"nested deeper than {MAX_DEPTH} levels")
    if pos != end:
        raise CborError("not well-formed CBOR: truncated or trailing bytes")


def _thaw(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if all(type(v) is bytes for v in value):
            return list(value)
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {_thaw_key(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _thaw(value.value))
    if isinstance(value, (cbor2.CBORSimpleValue, cbor2.undefined.__class__)):
        raise CborError("simple values other than false, true and null are not allowed")
    if type(value) not in _FAST_SCALARS:
        raise CborError(f"unexpected CBOR item {type(value).__name__}")
    return value


def _thaw_key(key: Any) -> Any:
    if isinstance(key, (str, int, bytes)) and not isinstance(key, bool):
        return key
    raise CborError(f"map key of type {type(key).__name__} is not allowed")
