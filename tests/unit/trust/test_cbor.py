import math
import struct

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.trust import cbor
from agent.trust.leaf import LeafError, check_leaves, decode_leaf, encode_leaf


def test_map_keys_sort_bytewise_not_length_first() -> None:
    # RFC 8949 4.2.1 orders by encoded bytes: 33 (0x1821) before -1 (0x20).
    keys = {1: 0, 4: 0, 15: 0, 33: 0, -1: 0}
    assert cbor.encode(keys).hex() == "a5010004000f001821002000"
    assert cbor.encode(keys) != cbor2.dumps(keys, canonical=True)


def test_text_keys_sort_by_encoded_bytes() -> None:
    assert list(cbor.decode(cbor.encode({"root": 1, "b": 2, "prev": 3, "v": 4}))) == ["b", "v", "prev", "root"]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.5, "f93e00"),
        (65504.0, "f97bff"),
        (100000.0, "fa47c35000"),
        (0.1, "fb3fb999999999999a"),
        (math.inf, "f97c00"),
        (-math.inf, "f9fc00"),
        (math.nan, "f97e00"),
        (5.960464477539063e-08, "f90001"),
    ],
)
def test_floats_take_their_shortest_exact_form(value: float, encoded: str) -> None:
    assert cbor.encode(value).hex() == encoded


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (2**32, "1b0000000100000000"),
        (-1, "20"),
        (-25, "3818"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-(2**64), "3bffffffffffffffff"),
    ],
)
def test_integers_take_their_shortest_form(value: int, encoded: str) -> None:
    assert cbor.encode(value).hex() == encoded


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("1801", "non-shortest integer"),
        ("fa3fc00000", "float32 where float16 keeps the value"),
        ("a2616201616101", "unsorted map keys"),
        ("a2616101616102", "duplicate map keys"),
        ("9f01ff", "indefinite-length array"),
        ("0101", "trailing bytes"),
        ("c11a514b67b0", "a date tag that decodes to another type"),
        ("f7", "undefined"),
        ("", "nothing"),
        ("5f4101ff", "indefinite byte string"),
    ],
)
def test_decode_rejects_non_deterministic_input(data: str, why: str) -> None:
    with pytest.raises(cbor.CborError):
        cbor.decode(bytes.fromhex(data))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5) | st.integers(-100, 100), inner, max_size=4)
    ),
    max_leaves=12,
)
leaf_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_round_trip_is_identity_on_bytes(value: object) -> None:
    data = cbor.encode(value)
    assert cbor.encode(cbor.decode(data)) == data


@given(st.integers(1, 2**63), st.integers(0, 2**63), st.text(min_size=1), scalars, st.integers(0, 2**32 - 1))
def test_leaf_fast_path_equals_reference_encoder(seq: int, ts: int, tag: str, value: object, quality: int) -> None:
    assert encode_leaf(seq, ts, tag, value, quality) == cbor.encode([seq, ts, tag, value, quality])


@given(st.floats(width=32, allow_nan=False))
def test_float32_values_never_take_eight_bytes(x: float) -> None:
    encoded = cbor.encode(x)
    assert len(encoded) <= 5
    assert struct.unpack(">f", encoded[1:].rjust(4, b"\0"))[0] == x or len(encoded) == 3


@given(
    st.integers(1, 2**40),
    st.lists(
        st.tuples(
            st.integers(0, 2**63), st.text(min_size=1, max_size=8), leaf_values, st.sampled_from([0, 0x40900000])
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_batch_leaf_check_accepts_exactly_consecutive_strict_leaves(s0: int, rows: list[tuple]) -> None:
    leaves = [cbor.encode([s0 + i, *row]) for i, row in enumerate(rows)]
    check_leaves(leaves, s0)
    with pytest.raises(LeafError):
        check_leaves(leaves, s0 + 1)


def test_batch_leaf_check_rejects_shifted_boundaries_and_non_shortest_forms() -> None:
    a, b = encode_leaf(1, 5, "t", 1.5, 0), encode_leaf(2, 5, "t", 2.5, 0)
    with pytest.raises(LeafError):
        check_leaves([a[:-1], a[-1:] + b], 1)
    with pytest.raises(LeafError, match="reading 1"):
        check_leaves([a, b[:-3] + bytes.fromhex("fa40200000")], 1)  # 2.5 as float32
    with pytest.raises(LeafError, match="Bad quality"):
        check_leaves([encode_leaf(1, 5, "t", 1.5, 0x80050000)], 1)


def test_leaf_values_are_plain_data_without_tags() -> None:
    from agent.trust.leaf import decode_leaf

    assert decode_leaf(cbor.encode([1, 2, "t", {"a": [1, 2.5, None]}, 0])).value == {"a": [1, 2.5, None]}
    with pytest.raises(LeafError, match="value must be"):
        decode_leaf(cbor.encode([1, 2, "t", cbor2.CBORTag(40000, 5), 0]))
    with pytest.raises(LeafError, match="datetime"):
        decode_leaf(cbor.encode([1, 2, "t", cbor2.CBORTag(1, 5), 0]))
    with pytest.raises(LeafError, match="value must be"):
        decode_leaf(cbor.encode([1, 2, "t", {1: 2}, 0]))


@pytest.mark.parametrize(
    "leaf",
    [
        [1, 2, "t", 2**70, 0],  # a bignum (tag 2) value
        [1, 2**70, "t", 1, 0],  # a bignum time
        [2**64, 2, "t", 1, 0],  # a bignum seq
    ],
)
def test_bignums_are_not_leaves(leaf: list) -> None:
    data = cbor2.dumps(leaf, canonical=True)
    with pytest.raises(LeafError):
        decode_leaf(data)
    with pytest.raises(LeafError):
        check_leaves([data], leaf[0])


@pytest.mark.parametrize(
    "fields",
    [
        (1, 2.5, "t", 1, 0),
        (1, 2, "", 1, 0),
        (1, 2, "t", 1, -1),
        (1, 2, "t", 2**64, 0),
        (1, 2, "t", {3}, 0),
        (1, 2, "t", {1: 2}, 0),
    ],
)
def test_encode_leaf_refuses_what_a_verifier_would_reject(fields: tuple) -> None:
    with pytest.raises(cbor.CborError):
        encode_leaf(*fields)


@pytest.mark.parametrize(
    "data",
    [
        "d81c81d81d00",  # a shareable array holding a reference to itself: a cycle
        "d81c82d81d00d81d00",  # shared references: exponential when walked
        "81" * 500 + "00",  # nested deeper than cbor2 (400) or any edgeseal structure allows
    ],
)
def test_reference_tags_cycles_and_deep_nesting_are_refused_promptly(data: str) -> None:
    raw = bytes.fromhex(data)
    with pytest.raises(cbor.CborError):
        cbor.decode(raw)
    with pytest.raises(LeafError):
        decode_leaf(raw)


def test_a_leaf_whose_fields_share_references_is_refused() -> None:
    # [seq, ts, tag, value, quality] with a shareable list as seq and references after it
    raw = bytes.fromhex("85d81c8101d81d00d81d0001d81d00")
    with pytest.raises(LeafError):
        decode_leaf(raw)
    with pytest.raises(LeafError):
        check_leaves([raw], 1)


def test_a_batch_message_decodes_to_what_was_encoded() -> None:
    from agent.trust.bundle import Batch, BundleFormatError, decode_batch

    batch = Batch(b"seal bytes", bytes(32), [encode_leaf(1, 2, "t", 1.5, 0)])
    assert decode_batch(batch.encode()) == batch
    with pytest.raises(BundleFormatError, match="salt_key"):
        decode_batch(Batch(b"seal", bytes(16), []).encode())
