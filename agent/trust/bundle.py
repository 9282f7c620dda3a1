"""Batch messages (DESIGN 3.3) and bundles (3.6): the containers of sealed data; and the
certificate message that goes with batch messages over MQTT.

A full batch carries every reading of a batch and its salt_key. A selective batch, used
in a selective bundle, carries only the disclosed readings, each with its own salt and
its inclusion proof in the batch tree, never the salt_key. Proofs have RFC 9942 shapes:
inclusion [tree_size, leaf_index, [path...]], consistency [size1, size2, [path...]].

`decode_*` functions parse structure strictly and raise BundleFormatError; whether the
content proves anything is the verifier's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.trust import cbor
from agent.trust.leaf import SALT_KEY_SIZE, SALT_SIZE

BUNDLE_VERSION = 1
BUNDLE_KEYS = {"v", "certs", "batches", "checkpoints", "log_proofs", "consistency", "anchors"}
ANCHOR_KEYS = {"checkpoint", "chain_id", "contract", "tx", "block", "block_hash", "confirmations"}


class BundleFormatError(ValueError):
    """A bundle or batch whose fields are not of the specified shape."""


class NotABundle(BundleFormatError):
    """Bytes that are not a deterministic CBOR bundle at all (garbage, truncated)."""


@dataclass(frozen=True)
class InclusionProof:
    tree_size: int
    leaf_index: int
    path: list[bytes]

    def to_cbor(self) -> list[Any]:
        return [self.tree_size, self.leaf_index, self.path]


@dataclass(frozen=True)
class ConsistencyProof:
    size1: int
    size2: int
    path: list[bytes]

    def to_cbor(self) -> list[Any]:
        return [self.size1, self.size2, self.path]


@dataclass(frozen=True)
class Batch:
    """A full batch message: the seal, the salt key and every reading's leaf bytes."""

    seal: bytes
    salt_key: bytes
    readings: list[bytes]

    def to_cbor(self) -> dict[str, Any]:
        return {"seal": self.seal, "salt_key": self.salt_key, "readings": self.readings}

    def encode(self) -> bytes:
        return cbor.encode(self.to_cbor())


@dataclass(frozen=True)
class Disclosed:
    salt: bytes
    leaf: bytes
    proof: InclusionProof

    def to_cbor(self) -> dict[str, Any]:
        return {"salt": self.salt, "leaf": self.leaf, "proof": self.proof.to_cbor()}


@dataclass(frozen=True)
class SelectiveBatch:
    seal: bytes
    disclosed: list[Disclosed]

    def to_cbor(self) -> dict[str, Any]:
        return {"seal": self.seal, "disclosed": [d.to_cbor() for d in self.disclosed]}


@dataclass(frozen=True)
class Anchor:
    checkpoint: bytes
    chain_id: int
    contract: bytes
    tx: bytes
    block: int
    block_hash: bytes
    confirmations: int

    def to_cbor(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ANCHOR_KEYS}

    def encode(self) -> bytes:
        """The anchor record as the buffer stores it and a bundle carries it."""
        return cbor.encode(self.to_cbor())


@dataclass(frozen=True)
class Bundle:
    certs: list[bytes]
    batches: list[Batch] | list[SelectiveBatch]
    checkpoints: list[bytes]
    log_proofs: list[InclusionProof]
    consistency: list[ConsistencyProof]
    anchors: list[Anchor] = field(default_factory=list)

    @property
    def selective(self) -> bool:
        return any(isinstance(b, SelectiveBatch) for b in self.batches)

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "v": BUNDLE_VERSION,
                "certs": self.certs,
                "batches": [b.to_cbor() for b in self.batches],
                "checkpoints": self.checkpoints,
                "log_proofs": [p.to_cbor() for p in self.log_proofs],
                "consistency": [p.to_cbor() for p in self.consistency],
                "anchors": [a.to_cbor() for a in self.anchors],
            }
        )


def decode_bundle(data: bytes) -> Bundle:
    try:
        m = cbor.decode(data)
    except cbor.CborError as exc:
        raise NotABundle(f"bundle: {exc}") from None
    if not isinstance(m, dict) or type(m.get("v")) is not int or m["v"] != BUNDLE_VERSION:
        raise NotABundle(f"not an edgeseal bundle of version {BUNDLE_VERSION}")
    _exact_keys(m, BUNDLE_KEYS, "bundle")
    batches = _list(m, "batches", "bundle")
    full = [x for x in batches if isinstance(x, dict) and "salt_key" in x]
    if full and len(full) != len(batches):
        raise BundleFormatError("bundle: mixes full and selective batches")
    decode = _batch if full else _selective_batch
    return Bundle(
        certs=[_bytes(c, f"certs[{i}]") for i, c in enumerate(_list(m, "certs", "bundle"))],
        batches=[decode(x, f"batches[{i}]") for i, x in enumerate(batches)],
        checkpoints=[_bytes(c, f"checkpoints[{i}]") for i, c in enumerate(_list(m, "checkpoints", "bundle"))],
        log_proofs=[_inclusion(p, f"log_proofs[{i}]") for i, p in enumerate(_list(m, "log_proofs", "bundle"))],
        consistency=[_consistency(p, f"consistency[{i}]") for i, p in enumerate(_list(m, "consistency", "bundle"))],
        anchors=[_anchor(a, f"anchors[{i}]") for i, a in enumerate(_list(m, "anchors", "bundle"))],
    )


def decode_batch(data: bytes) -> Batch:
    """A batch message as published over MQTT."""
    try:
        m = cbor.decode(data)
    except cbor.CborError as exc:
        raise BundleFormatError(f"batch: {exc}") from None
    return _batch(m, "batch")


def decode_anchor(data: bytes) -> Anchor:
    """One anchor record (DESIGN 3.5) on its own."""
    try:
        m = cbor.decode(data)
    except cbor.CborError as exc:
        raise BundleFormatError(f"anchor record: {exc}") from None
    return _anchor(m, "anchor record")


def decode_certificates(data: bytes) -> list[bytes]:
    """The certificate message (retained on PREFIX/cert): a CBOR array of DER
    certificates, the device's first, then intermediates; never the root."""
    try:
        m = cbor.decode(data)
    except cbor.CborError as exc:
        raise BundleFormatError(f"certificates: {exc}") from None
    if not isinstance(m, list) or not m:
        raise BundleFormatError("certificates: expected a non-empty array of DER certificates")
    return [_bytes(c, f"certificates[{i}]") for i, c in enumerate(m)]


def _batch(m: Any, where: str) -> Batch:
    _exact_keys(m, {"seal", "salt_key", "readings"}, where)
    salt_key = _bytes(m["salt_key"], f"{where}.salt_key", SALT_KEY_SIZE)
    readings = [_bytes(r, f"{where}.readings[{i}]") for i, r in enumerate(_list(m, "readings", where))]
    return Batch(_bytes(m["seal"], f"{where}.seal"), salt_key, readings)


def _selective_batch(m: Any, where: str) -> SelectiveBatch:
    _exact_keys(m, {"seal", "disclosed"}, where)
    disclosed = []
    for i, d in enumerate(_list(m, "disclosed", where)):
        at = f"{where}.disclosed[{i}]"
        _exact_keys(d, {"salt", "leaf", "proof"}, at)
        disclosed.append(
            Disclosed(
                _bytes(d["salt"], f"{at}.salt", SALT_SIZE),
                _bytes(d["leaf"], f"{at}.leaf"),
                _inclusion(d["proof"], f"{at}.proof"),
            )
        )
    return SelectiveBatch(_bytes(m["seal"], f"{where}.seal"), disclosed)


def _anchor(m: Any, where: str) -> Anchor:
    _exact_keys(m, ANCHOR_KEYS, where)
    return Anchor(
        checkpoint=_bytes(m["checkpoint"], f"{where}.checkpoint"),
        chain_id=_uint(m["chain_id"], f"{where}.chain_id"),
        contract=_bytes(m["contract"], f"{where}.contract", 20),
        tx=_bytes(m["tx"], f"{where}.tx", 32),
        block=_uint(m["block"], f"{where}.block"),
        block_hash=_bytes(m["block_hash"], f"{where}.block_hash", 32),
        confirmations=_uint(m["confirmations"], f"{where}.confirmations"),
    )


def _inclusion(p: Any, where: str) -> InclusionProof:
    size, index, path = _proof_triple(p, where)
    return InclusionProof(size, index, path)


def _consistency(p: Any, where: str) -> ConsistencyProof:
    size1, size2, path = _proof_triple(p, where)
    return ConsistencyProof(size1, size2, path)


def _proof_triple(p: Any, where: str) -> tuple[int, int, list[bytes]]:
    if not isinstance(p, list) or len(p) != 3 or not isinstance(p[2], list):
        raise BundleFormatError(f"{where}: expected [int, int, [hash...]]")
    path = [_bytes(h, f"{where} path[{i}]", 32) for i, h in enumerate(p[2])]
    return _uint(p[0], f"{where}[0]"), _uint(p[1], f"{where}[1]"), path


def _exact_keys(m: Any, keys: set[str], where: str) -> None:
    if not isinstance(m, dict):
        raise BundleFormatError(f"{where}: expected a map")
    missing, unknown = keys - m.keys(), m.keys() - keys
    if missing:
        raise BundleFormatError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise BundleFormatError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")


def _list(m: dict[str, Any], key: str, where: str) -> list[Any]:
    if not isinstance(m[key], list):
        raise BundleFormatError(f"{where}.{key}: expected an array")
    return m[key]


def _bytes(x: Any, where: str, size: int | None = None) -> bytes:
    if not isinstance(x, bytes):
        raise BundleFormatError(f"{where}: expected a byte string")
    if size is not None and len(x) != size:
        raise BundleFormatError(f"{where}: expected {size} bytes, found {len(x)}")
    return x


def _uint(x: Any, where: str) -> int:
    if not cbor.is_uint(x):
        raise BundleFormatError(f"{where}: expected an unsigned integer")
    return x
