"""Inputs for the fuzzing promises over the trust formats: random CBOR items (as our
deterministic encoder and as cbor2 writes them, with the tags, bignums, simple values
and shared references a hostile peer may send) and byte-level mutations of genuine data."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import strategies as st

from agent.trust import cbor

# Text keys the formats use, so random maps reach past "unknown field" sometimes.
FORMAT_KEYS = [
    "v", "certs", "batches", "checkpoints", "log_proofs", "consistency", "anchors", "seal", "salt_key",
    "readings", "disclosed", "salt", "leaf", "proof", "checkpoint", "chain_id", "contract", "tx", "block",
    "block_hash", "confirmations", "dev", "boot", "b", "s0", "n", "root", "prev", "t", "gap", "from", "to",
    "why", "size",
]  # fmt: skip

EDGE_INTS = st.sampled_from([0, 1, 2, 3, 23, 24, 255, 256, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -1, -(2**64)])
CBOR_INTS = st.integers(-(2**64), 2**64 - 1) | EDGE_INTS
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    CBOR_INTS,
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.sampled_from(FORMAT_KEYS),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(FORMAT_KEYS) | st.text(max_size=4) | st.integers(-30, 40) | st.binary(max_size=4)
    tags = st.sampled_from([0, 1, 2, 3, 18, 24, 28, 29, 55799]) | st.integers(0, 2**64 - 1)
    return st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
        st.builds(cbor2.CBORTag, tags, inner),
    )


# What our deterministic encoder takes: it is how a well-formed but wrong message looks.
CBOR_VALUES = st.recursive(SCALARS, _containers, max_leaves=20)
# Values without tags, which the formats' decoders take as data: the contents of fields.
PLAIN_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
)
# True about one time in ten or less (integers(0, 9) == 0 is far likelier: hypothesis
# favours bounds, and the first of what it samples).
RARELY = st.sampled_from([*[False] * 9, True])


@st.composite
def cbor_items(draw: st.DrawFn) -> bytes:
    """One CBOR item: deterministic, or as cbor2 writes it (non-shortest floats, values
    cbor2 adds of its own: bignums, undefined, simple values, sets, shared references)."""
    value = draw(CBOR_VALUES)
    if draw(st.booleans()):
        return cbor.encode(value)
    foreign = st.sampled_from([cbor2.undefined, cbor2.CBORSimpleValue(99), frozenset({1, 2}), 2**70, -(2**70)])
    value = [value, draw(foreign)] if draw(st.booleans()) else value
    shared = [value, value] if draw(st.booleans()) else value  # the same object twice: tags 28/29
    return cbor2.dumps(shared, value_sharing=draw(st.booleans()), canonical=draw(st.booleans()))


@st.composite
def mutated(draw: st.DrawFn, data: bytes, donors: tuple[bytes, ...] = ()) -> bytes:
    """`data` after 1 to 4 byte-level changes: a bit flipped, a byte set, bytes inserted,
    a range deleted or repeated, the end cut off, or a range of a donor spliced in."""
    for _ in range(draw(st.integers(1, 4))):
        data = _change(draw, data, donors)
    return data


def _change(draw: st.DrawFn, data: bytes, donors: tuple[bytes, ...]) -> bytes:
    if not data:
        return draw(st.binary(min_size=1, max_size=8))
    at = draw(st.integers(0, len(data) - 1))
    end = draw(st.integers(at, min(len(data), at + 64)))
    action = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "cut", "splice"]))
    if action == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if action == "set":
        return (
            data[:at]
            + bytes([draw(st.sampled_from([0x00, 0xFF, 0x18, 0x1B, 0x40, 0x5F, 0x80, 0xA0, 0xF7]))])
            + data[at + 1 :]
        )
    if action == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if action == "delete":
        return data[:at] + data[max(end, at + 1) :]
    if action == "repeat":
        return data[:end] + data[at:end] + data[end:]
    if action == "cut":
        return data[:at]
    donor = draw(st.sampled_from(donors)) if donors else data
    start = draw(st.integers(0, len(donor) - 1))
    return data[:at] + donor[start : start + end - at] + data[end:]
