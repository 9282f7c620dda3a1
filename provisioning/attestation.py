"""Does the evidence prove that the CSR's key lives in a TPM? The CA's check (TCG IDevID
enrollment), pure: bytes and certificates in, a `VerifiedEvidence` or a precise error out.

What a passing check proves, link by link:
(a) the EK certificate chains to a TPM vendor root the factory trusts: a genuine TPM's EK;
(b) `ek_public` is that certificate's key, a restricted decryption key (fixedTPM, fixedParent);
(c) the attestation key (AK) is a restricted signer, so it signs only TPM-made statements;
(d) the AK signed a TPM2_Certify statement (magic TPM_GENERATED) whose qualifying data is
    SHA-256 of this CSR and whose certified name is the name of `key_public`, a primary key
    of the endorsement hierarchy;
(e) `key_public` is the CSR's key, with fixedTPM, fixedParent and sensitiveDataOrigin.
What it does not prove: that the AK lives in the same TPM as the EK. The credential
challenge (provisioning.challenge) proves that: only the TPM holding both can answer it.

Trust in TPM vendors: every self-signed certificate given with --tpm-ca is a trusted root;
the others are intermediates, usable only on a path that ends at one of those roots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tpm2_pytss import TPM2_ALG, TPM2_ST, TPMA_OBJECT, TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE, TSS2_Exception
from tpm2_pytss.cryptography import public_to_key

from agent.errors import VerificationFailed
from agent.keys.tpm.templates import key_problems
from agent.trust.certs import ChainError, is_ca, parse_der_chain
from provisioning.evidence import Evidence, MalformedEnrollmentFile

TPM_GENERATED = 0xFF544347  # TPMS_ATTEST.magic of every statement the TPM itself made
SHA256_NAME_ALG = TPM2_ALG.SHA256.to_bytes(2, "big")
_ENDORSEMENT = 0x4000000B  # TPM_RH_ENDORSEMENT, the "parent" of an endorsement primary key
_EK_ATTRIBUTES = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
_MAX_PATH = 5  # EK certificate, a few vendor intermediates, a root

T = TypeVar("T", TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE)


class EvidenceRejected(VerificationFailed):
    """Well-formed evidence that does not prove what the CA needs (exit 1)."""


@dataclass(frozen=True)
class VerifiedEvidence:
    ek_certificate: x509.Certificate
    ek_public: TPMT_PUBLIC
    ak_name: bytes  # what the credential is bound to
    key_name: bytes


def verify_evidence(
    evidence: Evidence,
    csr: x509.CertificateSigningRequest,
    trusted: Sequence[x509.Certificate],
    *,
    now: datetime | None = None,
) -> VerifiedEvidence:
    """Every check above, or EvidenceRejected (MalformedEnrollmentFile for bytes that are
    not the TPM structures they claim to be)."""
    ek_public = _unmarshal(TPMT_PUBLIC, evidence.ek_public, "ek_public")
    ak_public = _unmarshal(TPMT_PUBLIC, evidence.ak_public, "ak_public")
    key_public = _unmarshal(TPMT_PUBLIC, evidence.key_public, "key_public")
    attest = _unmarshal(TPMS_ATTEST, evidence.attest, "attest")
    signature = _unmarshal(TPMT_SIGNATURE, evidence.signature, "signature")

    ek_certificate = _trusted_ek_certificate(evidence.ek_cert, trusted, now or datetime.now(UTC))
    _check_ek(ek_public, ek_certificate)
    _check_ak(ak_public)
    _check_signature(signature, evidence.attest, ak_public)
    _check_device_key(key_public, csr)
    key_name = tpm_name(key_public, evidence.key_public, "the device key")
    _check_certify(attest, hashlib.sha256(csr_der(csr)).digest(), key_name)
    return VerifiedEvidence(ek_certificate, ek_public, tpm_name(ak_public, evidence.ak_public, "the AK"), key_name)


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's DER as received (cryptography keeps the original encoding)."""
    return csr.public_bytes(Encoding.DER)


def tpm_name(public: TPMT_PUBLIC, marshalled: bytes, what: str) -> bytes:
    """A TPM object's name: nameAlg (2 bytes) || SHA-256(TPMT_PUBLIC as marshalled)."""
    if public.nameAlg != TPM2_ALG.SHA256:
        raise EvidenceRejected(f"{what}'s name algorithm is {public.nameAlg}, not SHA-256")
    return SHA256_NAME_ALG + hashlib.sha256(marshalled).digest()


def _unmarshal(kind: type[T], data: bytes, field: str) -> T:
    try:
        value, used = kind.unmarshal(data)
    except TSS2_Exception as exc:
        raise MalformedEnrollmentFile(f"evidence field {field}: not a {kind.__name__} ({exc})") from None
    if used != len(data):
        raise MalformedEnrollmentFile(f"evidence field {field}: {len(data) - used} bytes after the {kind.__name__}")
    return value


def _trusted_ek_certificate(der: bytes, trusted: Sequence[x509.Certificate], now: datetime) -> x509.Certificate:
    try:
        (certificate,) = parse_der_chain([der])  # every field parsed now, not lazily later
    except ChainError as exc:
        raise MalformedEnrollmentFile(f"evidence field ek_cert: {exc}") from None
    # Every issuer comes from `trusted`, and the walk ends only at a self-signed one: a root.
    path = [certificate, _issuer_of(certificate, trusted, "the EK certificate")]
    while not _self_signed(path[-1]):
        if len(path) >= _MAX_PATH:
            raise EvidenceRejected(f"the EK certificate's path is longer than {_MAX_PATH} certificates")
        path.append(_issuer_of(path[-1], trusted, None))
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise EvidenceRejected(
                f"{_name(cert)!r} (on the EK certificate's path) is not valid at {now:%Y-%m-%dT%H:%M:%SZ}"
            )
    return certificate


def _issuer_of(cert: x509.Certificate, trusted: Sequence[x509.Certificate], what: str | None) -> x509.Certificate:
    what = what or f"the TPM vendor CA {_name(cert)!r}"
    named = [candidate for candidate in trusted if candidate.subject == cert.issuer and is_ca(candidate)]
    for candidate in named:
        try:
            cert.verify_directly_issued_by(candidate)
        except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
            continue
        return candidate
    issuer = cert.issuer.rfc4514_string()
    if named:
        raise EvidenceRejected(
            f"{what} was not issued by a trusted TPM vendor CA (issuer {issuer!r}): its signature does not"
            " verify with the key of the --tpm-ca certificate of that name"
        )
    raise EvidenceRejected(
        f"{what} was not issued by a trusted TPM vendor CA (issuer {issuer!r}, not among the --tpm-ca"
        " certificates; give the vendor's root and, if it is not in the TPM, its intermediate)"
    )


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _check_ek(ek_public: TPMT_PUBLIC, certificate: x509.Certificate) -> None:
    try:
        key = public_to_key(ek_public)
    except ValueError as exc:
        raise EvidenceRejected(f"ek_public is not a usable public key: {exc}") from None
    if _spki(key) != _spki(certificate.public_key()):
        raise EvidenceRejected("ek_public is not the key of the EK certificate")
    missing = _EK_ATTRIBUTES & ~ek_public.objectAttributes
    if missing or ek_public.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT:
        raise EvidenceRejected(
            f"the EK is not a restricted decryption key (fixedTPM, fixedParent, restricted, decrypt, no sign);"
            f" its attributes are {ek_public.objectAttributes}"
        )


def _check_ak(ak_public: TPMT_PUBLIC) -> None:
    problems = key_problems(ak_public, restricted=True)
    if problems:
        raise EvidenceRejected("the attestation key is not a restricted TPM signing key: " + "; ".join(problems))


def _check_signature(signature: TPMT_SIGNATURE, attest: bytes, ak_public: TPMT_PUBLIC) -> None:
    if signature.sigAlg != TPM2_ALG.ECDSA or signature.signature.ecdsa.hash != TPM2_ALG.SHA256:
        raise EvidenceRejected(f"the attestation signature is {signature.sigAlg}, not ECDSA-SHA256")
    ecdsa = signature.signature.ecdsa
    r, s = (int.from_bytes(bytes(part), "big") for part in (ecdsa.signatureR, ecdsa.signatureS))
    key = public_to_key(ak_public)
    assert isinstance(key, ec.EllipticCurvePublicKey)  # _check_ak checked the type
    try:
        key.verify(encode_dss_signature(r, s), attest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EvidenceRejected(
            "the attestation key's signature over attest does not verify: the evidence was altered"
        ) from None


def _check_device_key(key_public: TPMT_PUBLIC, csr: x509.CertificateSigningRequest) -> None:
    problems = key_problems(key_public)
    if problems:
        raise EvidenceRejected("key_public is not an edgeseal device key: " + "; ".join(problems))
    if _spki(public_to_key(key_public)) != _spki(csr.public_key()):
        raise EvidenceRejected("the CSR is not for the TPM key in the evidence (key_public): another key signed it")


def _check_certify(attest: TPMS_ATTEST, csr_digest: bytes, key_name: bytes) -> None:
    if attest.magic != TPM_GENERATED:
        raise EvidenceRejected(f"attest was not made by a TPM (magic 0x{attest.magic:08x}, expected 0xff544347)")
    if attest.type != TPM2_ST.ATTEST_CERTIFY:
        raise EvidenceRejected(f"attest is not a TPM2_Certify statement (type {attest.type})")
    if bytes(attest.extraData) != csr_digest:
        raise EvidenceRejected("attest was made for another CSR: its qualifying data is not SHA-256 of this CSR")
    certified = attest.attested.certify
    if bytes(certified.name) != key_name:
        raise EvidenceRejected("attest certifies another key: its certified name is not the name of key_public")
    # The qualified name chains the key to its hierarchy: H(handle of TPM_RH_ENDORSEMENT || name).
    expected = SHA256_NAME_ALG + hashlib.sha256(_ENDORSEMENT.to_bytes(4, "big") + key_name).digest()
    if bytes(certified.qualifiedName) != expected:
        raise EvidenceRejected(
            "the device key is not a primary key of the endorsement hierarchy (its qualified name differs):"
            " it would not survive an owner clear"
        )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()
