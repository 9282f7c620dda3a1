"""The enrollment files that travel between the device's TPM and the CA.

    device.attest     {"v": 1, "ek_cert", "ek_public", "ak_public", "key_public", "attest", "signature"}
    device.challenge  {"v": 1, "credential", "secret"}

Deterministic CBOR maps (agent.trust.cbor) whose values are byte strings: the EK
certificate (DER) and TPM structures exactly as the TPM marshals them (TPMT_PUBLIC,
TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET). What the TPM
signed is kept byte for byte, so nothing is re-encoded to verify. Pure: bytes in, bytes out.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any, TypeVar

from agent.errors import EdgesealError
from agent.trust import cbor

VERSION = 1


class MalformedEnrollmentFile(EdgesealError):
    """Not an evidence or challenge file at all (exit 2): unlike evidence that fails a check."""


@dataclass(frozen=True)
class Evidence:
    ek_cert: bytes  # the EK certificate, DER
    ek_public: bytes  # the EK's TPMT_PUBLIC
    ak_public: bytes  # the attestation key's TPMT_PUBLIC
    key_public: bytes  # the device key's TPMT_PUBLIC
    attest: bytes  # TPMS_ATTEST of TPM2_Certify(device key, by the AK)
    signature: bytes  # the AK's TPMT_SIGNATURE over `attest`


@dataclass(frozen=True)
class Challenge:
    credential: bytes  # TPM2B_ID_OBJECT
    secret: bytes  # TPM2B_ENCRYPTED_SECRET: the seed, encrypted to the EK


Record = TypeVar("Record", Evidence, Challenge)


def encode(record: Evidence | Challenge) -> bytes:
    return cbor.encode({"v": VERSION, **{f.name: value for f, value in zip(fields(record), astuple(record))}})


def decode_evidence(data: bytes) -> Evidence:
    return _decode(Evidence, data, "evidence (tpm attest output)")


def decode_challenge(data: bytes) -> Challenge:
    return _decode(Challenge, data, "challenge (ca challenge output)")


def _decode(kind: type[Record], data: bytes, what: str) -> Record:
    try:
        value: Any = cbor.decode(data)
    except cbor.CborError as exc:
        raise MalformedEnrollmentFile(f"not {what}: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedEnrollmentFile(f"not {what}: expected a CBOR map, found {type(value).__name__}")
    if value.get("v") != VERSION:
        raise MalformedEnrollmentFile(f'not {what}: expected "v": {VERSION}, found {value.get("v")!r}')
    names = {f.name for f in fields(kind)}
    found = set(value) - {"v"}
    if found != names:
        raise MalformedEnrollmentFile(
            f"not {what}: expected the fields {sorted(names)}, found {sorted(map(str, found))}"
        )
    wrong = sorted(name for name in names if not isinstance(value[name], bytes) or not value[name])
    if wrong:
        raise MalformedEnrollmentFile(f"not {what}: {', '.join(wrong)} must be non-empty byte strings")
    return kind(**{name: value[name] for name in names})
