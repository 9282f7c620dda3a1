"""Reading leaves and their salted Merkle leaf hashes (DESIGN 3.1).

Leaf bytes = deterministic CBOR [seq, ts, tag, value, quality]. Each batch has a random
32-byte salt_key; the salt of a reading is HMAC-SHA256(salt_key, seq as 8-byte
big-endian)[:16], and its Merkle leaf hash is SHA-256(0x00 || salt || leaf bytes), so a
disclosed reading's proof path does not let anyone brute-force its low-entropy
neighbours.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, NamedTuple

import cbor2

from agent.trust import cbor

SALT_KEY_SIZE = 32
# A batch of no readings (a gap or a drop record) salts nothing; its key is fixed so that no
# byte of a batch goes unchecked.
NO_READINGS_SALT_KEY = bytes(SALT_KEY_SIZE)
SALT_SIZE = 16
MAX_UINT32 = 0xFFFFFFFF
_SCALARS = (int, float, str, bytes, bool, type(None))
_MIN_INT, _MAX_INT = -(2**64), 2**64 - 1  # CBOR's integer range; cbor2 makes bignums beyond


class LeafError(ValueError):
    """Bytes that are not a well-formed reading leaf."""


class Leaf(NamedTuple):
    seq: int
    ts: int
    tag: str
    value: Any
    quality: int


def is_leaf_time(ts: Any) -> bool:
    """Whether `ts` fits a leaf: an integer within CBOR's range."""
    return type(ts) is int and _MIN_INT <= ts <= _MAX_INT


def encode_leaf(seq: int, ts: int, tag: str, value: Any, quality: int) -> bytes:
    """Raises CborError for a reading the format cannot hold, so no leaf is ever
    written that a verifier would reject."""
    if not (is_leaf_time(ts) and type(tag) is str and tag):
        raise cbor.CborError(f"a reading needs integer ns time and a tag name, found ts={ts!r}, tag={tag!r}")
    if not (isinstance(quality, int) and not isinstance(quality, bool) and 0 <= quality <= MAX_UINT32):
        raise cbor.CborError(f"quality must be a uint32 status code, found {quality!r}")
    if type(value) in _SCALARS and (type(value) is not int or _MIN_INT <= value <= _MAX_INT):
        return cbor2.dumps((seq, ts, tag, value, quality), canonical=True)
    if not _plain(value):
        raise cbor.CborError(f"value of type {type(value).__name__} is not plain data")
    return cbor.encode((seq, ts, tag, value, quality))


def decode_leaf(data: bytes) -> Leaf:
    """Strictly decode leaf bytes: deterministic CBOR, five fields of the right types."""
    item = _fast_decode(data)
    if item is None:
        try:
            item = cbor.decode(data)
        except cbor.CborError as exc:
            raise LeafError(str(exc)) from None
        if isinstance(item, list) and len(item) == 5 and not _plain(item[3]):
            raise LeafError("value must be bool, int, float, text, bytes, null, or arrays and text-keyed maps of them")
    return _checked(item)


def _plain(value: Any) -> bool:
    """Scalars, arrays and text-keyed maps of them (OPC UA arrays and events); no tags."""
    if type(value) in _SCALARS:
        return type(value) is not int or _MIN_INT <= value <= _MAX_INT
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def check_leaves(leaves: Sequence[bytes], first_seq: int) -> None:
    """Raise LeafError unless every leaf is a strict leaf and their seqs run first_seq,
    first_seq + 1, ... The verifier's hot path: one C decoder pass over the whole batch,
    then each leaf must be exactly the deterministic encoding of its item (which also
    pins every boundary); anything unusual goes through decode_leaf for its message."""
    try:
        items = cbor2.loads(cbor.array_head(len(leaves)) + b"".join(leaves))
    except cbor.DECODE_ERRORS:
        items = None
    if type(items) is not list or len(items) != len(leaves):
        items = [None] * len(leaves)
    dumps = cbor2.dumps
    for index, (item, raw) in enumerate(zip(items, leaves)):
        # _checked's rules plus the seq and range checks, inlined: a call per leaf costs
        # a quarter of verification throughput. A property test holds the two together.
        if not (
            type(item) is list
            and len(item) == 5
            and item[0] == first_seq + index
            and item[0] <= _MAX_INT
            and type(item[0]) is int
            and type(item[1]) is int
            and type(item[2]) is str
            and item[2]
            and type(item[4]) is int
            and 0 <= item[4] <= MAX_UINT32
            and type(item[3]) in _SCALARS
            and _MIN_INT <= item[1] <= _MAX_INT
            and (type(item[3]) is not int or _MIN_INT <= item[3] <= _MAX_INT)
            and not (item[4] & 0x80000000 and item[3] is not None)
            and dumps(item, canonical=True) == raw
        ):
            _explain(raw, index, first_seq + index)


def _explain(raw: bytes, index: int, expected_seq: int) -> None:
    """The slow, precise path: raises for a bad leaf, accepts a good unusual one."""
    try:
        leaf = decode_leaf(raw)
    except LeafError as exc:
        raise LeafError(f"reading {index}: {exc}") from None
    if leaf.seq != expected_seq:
        raise LeafError(f"reading {index}: seq {leaf.seq}, expected {expected_seq}")


def _checked(item: Any) -> Leaf:
    if not isinstance(item, list) or len(item) != 5:
        raise LeafError("a leaf is an array of 5 items [seq, ts, tag, value, quality]")
    seq, ts, tag, value, quality = item
    if (
        type(seq) is int
        and seq >= 1
        and type(ts) is int
        and type(tag) is str
        and tag
        and type(quality) is int
        and 0 <= quality <= MAX_UINT32
        and not (quality & 0x80000000 and value is not None)
    ):
        return Leaf(seq, ts, tag, value, quality)
    raise LeafError(_what_is_wrong(seq, ts, tag, value, quality))


def _what_is_wrong(seq: Any, ts: Any, tag: Any, value: Any, quality: Any) -> str:
    if not cbor.is_uint(seq) or seq < 1:
        return f"seq must be an unsigned integer >= 1, found {seq!r}"
    if not isinstance(ts, int) or isinstance(ts, bool):
        return f"ts must be integer nanoseconds, found {ts!r}"
    if not isinstance(tag, str) or not tag:
        return f"tag must be non-empty text, found {tag!r}"
    if not cbor.is_uint(quality) or quality > MAX_UINT32:
        return f"quality must be a uint32 status code, found {quality!r}"
    return "a reading with Bad quality must carry a null value"


def _fast_decode(data: bytes) -> list[Any] | None:
    """The common leaf (a scalar value) through cbor2's C codec; None means "use the
    general strict decoder" (containers, tags, anything unusual)."""
    try:
        item = cbor2.loads(data)
    except cbor.DECODE_ERRORS:
        return None  # the strict path reports it
    if type(item) is not list or len(item) != 5 or any(type(x) not in _SCALARS for x in item):
        return None  # containers (maybe shared references) are for the strict path
    if any(type(x) is int and not _MIN_INT <= x <= _MAX_INT for x in item):
        return None  # a bignum: the strict path rejects it
    if cbor2.dumps(item, canonical=True) != data:
        raise LeafError("leaf is not deterministic CBOR (RFC 8949 4.2.1)")
    return item


def salt(salt_key: bytes, seq: int) -> bytes:
    if len(salt_key) != SALT_KEY_SIZE:
        raise ValueError("a salt key is 32 bytes")
    return hmac.digest(salt_key, seq.to_bytes(8, "big"), "sha256")[:SALT_SIZE]


def salted_leaf_hash(salt_value: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + salt_value + leaf).digest()


def leaf_hashes(salt_key: bytes, first_seq: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Merkle leaf hashes of consecutive readings starting at `first_seq`.

    The hot path of sealing: HMAC is computed from precomputed inner and outer SHA-256
    states (RFC 2104 with a key shorter than the block), which is the same function as
    hmac.digest at a third of its cost for 8-byte messages."""
    inner, outer = _hmac_states(salt_key)
    sha256 = hashlib.sha256
    out = []
    for seq, leaf in zip(range(first_seq, first_seq + len(leaves)), leaves):
        i = inner.copy()
        i.update(seq.to_bytes(8, "big"))
        o = outer.copy()
        o.update(i.digest())
        out.append(sha256(b"\x00" + o.digest()[:SALT_SIZE] + leaf).digest())
    return out


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    if len(key) != SALT_KEY_SIZE:
        raise ValueError("a salt key is 32 bytes")
    block = key.ljust(64, b"\x00")  # shorter than SHA-256's 64-byte block: zero-padded
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer
