"""The AnchorRegistry's wire formats (DESIGN 3.5), pure: the call that anchors a
checkpoint, the `latest` view's call and answer, and the `Anchored` log a verifier
looks for. Bytes in, bytes or typed values out; no chain access.

The ABI encoding of these three static signatures is spelled out here rather than taken
from an ABI library, so a verifier needs nothing of Ethereum's tooling to check a log:
each argument is one 32-byte word, left-padded. The selectors and the event topic are
Keccak-256 hashes of the signatures; a test recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass

# keccak256("anchor(bytes32,uint64,bytes32)")[:4]
ANCHOR_SELECTOR = bytes.fromhex("70c127c6")
# keccak256("latest(address,bytes32)")[:4]
LATEST_SELECTOR = bytes.fromhex("68205bc3")
# keccak256("Anchored(address,bytes32,uint64,bytes32)")
ANCHORED_TOPIC = bytes.fromhex("3d0c97912257c6ad70e8f6fc81ae518ad3e14734d308b512c2729cc637a4b0b1")

WORD = 32
MAX_TREE_SIZE = 2**64 - 1  # uint64 in the contract


class AnchorFormatError(ValueError):
    """Bytes that are not what the AnchorRegistry's ABI says."""


@dataclass(frozen=True)
class AnchoredEvent:
    """One `Anchored` log: `submitter` anchored the log of device `key_id` at `tree_size`."""

    submitter: bytes  # 20-byte address
    key_id: bytes
    tree_size: int
    root: bytes


@dataclass(frozen=True)
class OnChainCheckpoint:
    """The `latest` view's answer: (0, 0) when nothing is anchored yet."""

    tree_size: int
    block: int


def anchor_calldata(key_id: bytes, tree_size: int, root: bytes) -> bytes:
    """The input of a transaction calling anchor(key_id, tree_size, root)."""
    if not 0 < tree_size <= MAX_TREE_SIZE:
        raise AnchorFormatError(f"tree size must be 1..2**64-1, found {tree_size}")
    return ANCHOR_SELECTOR + _word32(key_id, "key id") + tree_size.to_bytes(WORD, "big") + _word32(root, "root")


def latest_calldata(submitter: bytes, key_id: bytes) -> bytes:
    """The input of an eth_call of latest(submitter, key_id)."""
    return LATEST_SELECTOR + _address_word(submitter) + _word32(key_id, "key id")


def decode_latest(result: bytes) -> OnChainCheckpoint:
    if len(result) != 2 * WORD:
        raise AnchorFormatError(f"latest() returns two words, found {len(result)} bytes")
    size, block = (_uint64(result[i : i + WORD], "latest()") for i in (0, WORD))
    return OnChainCheckpoint(size, block)


def anchored_topics(key_id: bytes, submitter: bytes | None = None) -> list[bytes | None]:
    """The eth_getLogs topic filter for this device's Anchored logs (by one submitter or any)."""
    return [ANCHORED_TOPIC, None if submitter is None else _address_word(submitter), _word32(key_id, "key id")]


def decode_anchored(topics: list[bytes], data: bytes) -> AnchoredEvent:
    """An `Anchored` log from its topics and data; AnchorFormatError if it is not one."""
    if len(topics) != 3 or topics[0] != ANCHORED_TOPIC:
        raise AnchorFormatError("not an Anchored log")
    submitter_word, key_id = topics[1], topics[2]
    if len(submitter_word) != WORD or any(submitter_word[:12]) or len(key_id) != WORD:
        raise AnchorFormatError("Anchored log: malformed indexed fields")
    if len(data) != 2 * WORD:
        raise AnchorFormatError(f"Anchored log: data of two words expected, found {len(data)} bytes")
    return AnchoredEvent(submitter_word[12:], key_id, _uint64(data[:WORD], "Anchored treeSize"), data[WORD:])


def _uint64(word: bytes, where: str) -> int:
    value = int.from_bytes(word, "big")
    if value > MAX_TREE_SIZE:
        raise AnchorFormatError(f"{where}: not a uint64")
    return value


def _word32(value: bytes, what: str) -> bytes:
    if len(value) != WORD:
        raise AnchorFormatError(f"{what} must be 32 bytes, found {len(value)}")
    return value


def _address_word(address: bytes) -> bytes:
    if len(address) != 20:
        raise AnchorFormatError(f"an address is 20 bytes, found {len(address)}")
    return bytes(12) + address
