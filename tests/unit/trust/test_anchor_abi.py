"""The AnchorRegistry's ABI, spelled out in agent.trust.anchors, is what the compiled
contract's ABI says (checked with web3's own encoder and Keccak)."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak
from web3 import Web3

from agent.anchor.registry import artifact
from agent.trust.anchors import (
    ANCHOR_SELECTOR,
    ANCHORED_TOPIC,
    LATEST_SELECTOR,
    AnchorFormatError,
    anchor_calldata,
    anchored_topics,
    decode_anchored,
    decode_latest,
    latest_calldata,
)

KID, ROOT, SUBMITTER = os.urandom(32), os.urandom(32), os.urandom(20)


def registry():  # type: ignore[no-untyped-def]
    return Web3().eth.contract(address="0x" + "00" * 20, abi=artifact()["abi"])


def test_selectors_and_topic_are_the_keccak_of_the_signatures() -> None:
    assert ANCHOR_SELECTOR == keccak(text="anchor(bytes32,uint64,bytes32)")[:4]
    assert LATEST_SELECTOR == keccak(text="latest(address,bytes32)")[:4]
    assert ANCHORED_TOPIC == keccak(text="Anchored(address,bytes32,uint64,bytes32)")


@pytest.mark.parametrize("size", [1, 1000, 2**64 - 1])
def test_anchor_calldata_is_what_web3_encodes(size: int) -> None:
    expected = registry().encode_abi("anchor", [KID, size, ROOT])
    assert "0x" + anchor_calldata(KID, size, ROOT).hex() == expected


def test_latest_calldata_is_what_web3_encodes() -> None:
    address = Web3.to_checksum_address(SUBMITTER)
    assert "0x" + latest_calldata(SUBMITTER, KID).hex() == registry().encode_abi("latest", [address, KID])


@pytest.mark.parametrize("size", [0, 2**64])
def test_a_tree_size_outside_uint64_or_zero_is_refused(size: int) -> None:
    with pytest.raises(AnchorFormatError):
        anchor_calldata(KID, size, ROOT)


def test_an_anchored_log_decodes_and_strangers_do_not() -> None:
    topics = anchored_topics(KID, SUBMITTER)
    data = (7).to_bytes(32, "big") + ROOT
    event = decode_anchored([t for t in topics if t is not None], data)
    assert (event.submitter, event.key_id, event.tree_size, event.root) == (SUBMITTER, KID, 7, ROOT)
    assert anchored_topics(KID)[1] is None  # any submitter
    with pytest.raises(AnchorFormatError):
        decode_anchored([keccak(text="Other()"), topics[1], KID], data)  # type: ignore[list-item]
    with pytest.raises(AnchorFormatError):
        decode_anchored([ANCHORED_TOPIC, b"\x01" * 32, KID], data)  # not an address word
    with pytest.raises(AnchorFormatError):
        decode_anchored([ANCHORED_TOPIC, topics[1], KID], data[:-1])  # type: ignore[list-item]
    with pytest.raises(AnchorFormatError):
        decode_anchored([ANCHORED_TOPIC, topics[1], KID], (2**64).to_bytes(32, "big") + ROOT)  # type: ignore[list-item]


def test_the_latest_view_decodes() -> None:
    view = decode_latest((12).to_bytes(32, "big") + (345).to_bytes(32, "big"))
    assert (view.tree_size, view.block) == (12, 345)
    with pytest.raises(AnchorFormatError):
        decode_latest(b"\0" * 63)
