"""COSE_Sign1 (RFC 9052, CBOR tag 18) with ES256, signatures as raw r||s.

Building is split in two so a slow signer can be awaited in between: `to_be_signed`
gives the Sig_structure bytes, whose SHA-256 the device key signs, and `assemble`
makes the message. Verification checks exactly the bytes received.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.trust import cbor

COSE_SIGN1_TAG = 18
ALG_ES256 = -7
HDR_ALG, HDR_CONTENT_TYPE, HDR_KID, HDR_X5CHAIN = 1, 3, 4, 33
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2


class CoseError(ValueError):
    """A COSE_Sign1 that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class Sign1:
    protected_bytes: bytes
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes:
        return self.protected[HDR_KID]

    @property
    def content_type(self) -> str:
        return self.protected[HDR_CONTENT_TYPE]

    def x5chain(self) -> list[bytes]:
        return _chain_of(self.unprotected)


def protected_header(content_type: str, kid: bytes) -> bytes:
    return cbor.encode({HDR_ALG: ALG_ES256, HDR_CONTENT_TYPE: content_type, HDR_KID: kid})


def to_be_signed(protected: bytes, payload: bytes) -> bytes:
    """Sig_structure = ["Signature1", protected, external_aad = h'', payload]."""
    return cbor.encode(["Signature1", protected, b"", payload])


def digest_to_sign(protected: bytes, payload: bytes) -> bytes:
    return hashlib.sha256(to_be_signed(protected, payload)).digest()


def assemble(protected: bytes, payload: bytes, signature: bytes, x5chain: list[bytes] | None = None) -> bytes:
    """The COSE_Sign1 bytes; the signature is normalised to low s, the one form `decode`
    accepts (ECDSA's (r, n - s) verifies too, and would give a second encoding)."""
    if len(signature) != 64:
        raise CoseError("an ES256 signature is 64 bytes r||s")
    s = int.from_bytes(signature[32:], "big")
    if s > P256_HALF_ORDER:
        signature = signature[:32] + (P256_ORDER - s).to_bytes(32, "big")
    unprotected: dict[int, Any] = {}
    if x5chain:
        unprotected[HDR_X5CHAIN] = x5chain[0] if len(x5chain) == 1 else x5chain
    return cbor.encode(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, unprotected, payload, signature]))


def decode(data: bytes, content_type: str, *, x5chain_allowed: bool = False) -> Sign1:
    """Parse a COSE_Sign1 of the given content type, strictly (no signature check). The
    unprotected header is empty, or holds x5chain where `x5chain_allowed` (seals)."""
    try:
        item = cbor.decode(data)
    except cbor.CborError as exc:
        raise CoseError(str(exc)) from None
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise CoseError("not a tagged COSE_Sign1 (tag 18)")
    if not isinstance(item.value, list) or len(item.value) != 4:
        raise CoseError("COSE_Sign1 must be an array of 4 items")
    protected_bytes, unprotected, payload, signature = item.value
    if not all(isinstance(x, bytes) for x in (protected_bytes, payload, signature)):
        raise CoseError("protected header, payload and signature must be byte strings")
    protected = _protected(protected_bytes, content_type)
    _check_unprotected(unprotected, x5chain_allowed)
    if len(signature) != 64:
        raise CoseError(f"ES256 signature must be 64 bytes, found {len(signature)}")
    if int.from_bytes(signature[32:], "big") > P256_HALF_ORDER:
        raise CoseError("signature is not in low-s form")
    return Sign1(protected_bytes, protected, unprotected, payload, signature)


def _protected(data: bytes, content_type: str) -> dict[int, Any]:
    try:
        header = cbor.decode(data)
    except cbor.CborError as exc:
        raise CoseError(f"protected header: {exc}") from None
    if not isinstance(header, dict) or set(header) != {HDR_ALG, HDR_CONTENT_TYPE, HDR_KID}:
        raise CoseError("protected header must hold exactly alg (1), content type (3), kid (4)")
    if type(header[HDR_ALG]) is not int or header[HDR_ALG] != ALG_ES256:
        raise CoseError(f"alg must be ES256 (-7), found {header[HDR_ALG]!r}")
    if header[HDR_CONTENT_TYPE] != content_type:
        raise CoseError(f"content type must be {content_type!r}, found {header[HDR_CONTENT_TYPE]!r}")
    kid = header[HDR_KID]
    if not isinstance(kid, bytes) or len(kid) != 32:
        raise CoseError("kid must be a 32-byte SHA-256 of the device public key")
    return header


def _check_unprotected(header: Any, x5chain_allowed: bool) -> None:
    allowed = {HDR_X5CHAIN} if x5chain_allowed else set()
    if not isinstance(header, dict) or not set(header) <= allowed:
        raise CoseError("unprotected header " + ("may hold only x5chain (33)" if allowed else "must be empty"))
    chain = header.get(HDR_X5CHAIN, b"")
    if isinstance(chain, list) and len(chain) >= 2 and all(isinstance(c, bytes) for c in chain):
        return
    if not isinstance(chain, bytes):
        raise CoseError("x5chain must be one certificate, or an array of two or more (RFC 9360)")


def _chain_of(unprotected: dict[int, Any]) -> list[bytes]:
    chain = unprotected.get(HDR_X5CHAIN, [])
    return [chain] if isinstance(chain, bytes) else list(chain)


def verify_signature(msg: Sign1, public_key: ec.EllipticCurvePublicKey) -> None:
    r = int.from_bytes(msg.signature[:32], "big")
    s = int.from_bytes(msg.signature[32:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s),
            to_be_signed(msg.protected_bytes, msg.payload),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise CoseError("signature does not verify with the device key") from None
