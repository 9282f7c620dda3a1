"""Signed payloads: the seal of a batch (DESIGN 3.2) and the checkpoint of the device
seal log (3.4). Each encodes to deterministic CBOR and decodes strictly: exactly the
specified keys, each of its type."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from agent.trust import cbor, cose

SEAL_CONTENT_TYPE = "application/edgeseal-seal+cbor"
CHECKPOINT_CONTENT_TYPE = "application/edgeseal-checkpoint+cbor"
VERSION = 1
ZERO_HASH = bytes(32)


def seal_digest(cose_bytes: bytes) -> bytes:
    """What the next seal's `prev` holds: SHA-256 of this seal's exact COSE bytes."""
    return hashlib.sha256(cose_bytes).digest()


class PayloadError(ValueError):
    """A payload that is not the specified map."""


@dataclass(frozen=True)
class Gap:
    """Readings first..last (inclusive seqs) will never be delivered, for `why`: dropped
    before sealing (the gap ends right before its batch), or sealed earlier and dropped
    from a full buffer before delivery (a drop record: a seal of no readings whose gap
    lies wholly before its s0)."""

    first: int
    last: int
    why: str

    def to_cbor(self) -> dict[str, Any]:
        return {"from": self.first, "to": self.last, "why": self.why}


@dataclass(frozen=True)
class SealPayload:
    dev: str
    boot: int
    b: int
    s0: int
    n: int
    root: bytes
    prev: bytes
    t: int
    gap: Gap | None = None

    @property
    def last_seq(self) -> int:
        return self.s0 + self.n - 1

    @property
    def drop_record(self) -> bool:
        """Whether this seal records sealed batches dropped before delivery."""
        return self.gap is not None and self.gap.last + 1 < self.s0

    @property
    def first_seq(self) -> int:
        """Where this seal's account of seqs starts: its gap (lost before sealing), else s0."""
        return self.gap.first if self.gap is not None and not self.drop_record else self.s0

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "v": VERSION,
            "dev": self.dev,
            "boot": self.boot,
            "b": self.b,
            "s0": self.s0,
            "n": self.n,
            "root": self.root,
            "prev": self.prev,
            "t": self.t,
        }
        if self.gap is not None:
            body["gap"] = self.gap.to_cbor()
        return cbor.encode(body)

    @classmethod
    def decode(cls, data: bytes) -> SealPayload:
        m = _decode_map(data, {"v", "dev", "boot", "b", "s0", "n", "root", "prev", "t"}, {"gap"})
        gap = _gap(m["gap"]) if "gap" in m else None
        p = cls(
            dev=_text(m, "dev"),
            boot=_uint(m, "boot", 1),
            b=_uint(m, "b", 1),
            s0=_uint(m, "s0", 1),
            n=_uint(m, "n", 0),
            root=_hash(m, "root"),
            prev=_hash(m, "prev"),
            t=_uint(m, "t", 0),
            gap=gap,
        )
        if p.n == 0 and gap is None:
            raise PayloadError("a seal of no readings must record a gap")
        if gap is not None and gap.last + 1 != p.s0 and not (p.n == 0 and gap.last < p.s0):
            raise PayloadError(
                "a gap must end right before the batch's first seq, or, in a seal of no readings, lie before it"
            )
        return p


@dataclass(frozen=True)
class CheckpointPayload:
    dev: str
    size: int
    root: bytes
    t: int

    def encode(self) -> bytes:
        return cbor.encode({"v": VERSION, "dev": self.dev, "size": self.size, "root": self.root, "t": self.t})

    @classmethod
    def decode(cls, data: bytes) -> CheckpointPayload:
        m = _decode_map(data, {"v", "dev", "size", "root", "t"}, set())
        return cls(dev=_text(m, "dev"), size=_uint(m, "size", 1), root=_hash(m, "root"), t=_uint(m, "t", 0))


def _decode_map(data: bytes, required: set[str], optional: set[str]) -> dict[str, Any]:
    try:
        m = cbor.decode(data)
    except cbor.CborError as exc:
        raise PayloadError(str(exc)) from None
    if not isinstance(m, dict):
        raise PayloadError("payload must be a CBOR map")
    missing, unknown = required - m.keys(), m.keys() - required - optional
    if missing:
        raise PayloadError(f"payload lacks {sorted(missing)}")
    if unknown:
        raise PayloadError(f"payload has unknown fields {sorted(map(str, unknown))}")
    if type(m["v"]) is not int or m["v"] != VERSION:
        raise PayloadError(f"unsupported payload version {m['v']!r}")
    return m


def _uint(m: dict[str, Any], key: str, minimum: int) -> int:
    x = m[key]
    if not cbor.is_uint(x) or x < minimum:
        raise PayloadError(f"{key!r} must be an integer >= {minimum}, found {x!r}")
    return x


def _text(m: dict[str, Any], key: str) -> str:
    if not isinstance(m[key], str) or not m[key]:
        raise PayloadError(f"{key!r} must be non-empty text")
    return m[key]


def _hash(m: dict[str, Any], key: str) -> bytes:
    if not isinstance(m[key], bytes) or len(m[key]) != 32:
        raise PayloadError(f"{key!r} must be a 32-byte hash")
    return m[key]


def _gap(g: Any) -> Gap:
    if not isinstance(g, dict) or set(g) != {"from", "to", "why"}:
        raise PayloadError("'gap' must be a map of exactly from, to, why")
    first, last, why = g["from"], g["to"], g["why"]
    if not (cbor.is_uint(first) and cbor.is_uint(last) and 1 <= first <= last):
        raise PayloadError("gap 'from'..'to' must be seqs with 1 <= from <= to")
    if not isinstance(why, str) or not why:
        raise PayloadError("gap 'why' must be non-empty text")
    return Gap(first, last, why)


def open_seal(data: bytes) -> tuple[cose.Sign1, SealPayload]:
    """A seal's COSE_Sign1 and payload, parsed strictly (signature not checked)."""
    msg = cose.decode(data, SEAL_CONTENT_TYPE, x5chain_allowed=True)
    return msg, SealPayload.decode(msg.payload)


def open_checkpoint(data: bytes) -> tuple[cose.Sign1, CheckpointPayload]:
    """A checkpoint's COSE_Sign1 and payload, parsed strictly (signature not checked)."""
    msg = cose.decode(data, CHECKPOINT_CONTENT_TYPE)
    return msg, CheckpointPayload.decode(msg.payload)
