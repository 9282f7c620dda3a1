"""Device certificate chains: does this chain lead from the device key to a trusted root?

An explicit walk rather than a web-PKI path builder: device certificates carry no DNS
names, and IEEE 802.1AR device identities are valid "forever" (notAfter 9999), so the
checks are issuance, CA flags and the signing key's curve, evaluated at the data's time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class ChainError(ValueError):
    """A certificate chain that does not lead to a trusted root."""


@dataclass(frozen=True)
class DeviceIdentity:
    certificate: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    subject: str
    root_subject: str


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """kid: SHA-256 of the public key's SubjectPublicKeyInfo DER (DESIGN 3.2)."""
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def parse_der_chain(ders: list[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError as exc:
        raise ChainError(f"not a DER certificate: {exc}") from None


def verify_chain(
    chain: list[x509.Certificate], roots: list[x509.Certificate], at: dt.datetime
) -> DeviceIdentity:
    """chain = device certificate, then intermediates; `at` is when the data was signed."""
    if not chain:
        raise ChainError("no device certificate")
    device = chain[0]
    key = device.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ChainError("the device certificate's key is not EC P-256")
    for cert in chain:
        _check_validity(cert, at)
    for child, issuer in zip(chain, chain[1:]):
        _check_issued(child, issuer)
    top = chain[-1]
    for root in roots:
        if root.subject == top.issuer:
            try:
                _check_issued(top, root)
            except ChainError:
                continue
            return DeviceIdentity(device, key, device.subject.rfc4514_string(), root.subject.rfc4514_string())
    raise ChainError(f"no trusted root issued {top.subject.rfc4514_string()!r} (issuer {top.issuer.rfc4514_string()!r})")


def _check_issued(child: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ChainError(f"{issuer.subject.rfc4514_string()!r} is not a CA certificate")
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ChainError(
            f"{child.subject.rfc4514_string()!r} is not issued by {issuer.subject.rfc4514_string()!r}: {exc or 'bad signature'}"
        ) from None


def _check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise ChainError(
            f"{cert.subject.rfc4514_string()!r} is not valid at {at.isoformat()} "
            f"({cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})"
        )
