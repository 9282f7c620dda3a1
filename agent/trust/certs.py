"""Device certificate chains: does this chain lead from the device key to a trusted root?

An explicit walk rather than a web-PKI path builder: device certificates carry no DNS
names, and IEEE 802.1AR device identities are valid "forever" (notAfter 9999), so the
checks are issuance, CA flags, the signing key's curve and usage, and the device id (the
subject's serialNumber, which every seal names as "dev"), evaluated at the times the data
was signed. Revocation is agent.trust.revocation's, over the path found here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class ChainError(ValueError):
    """A certificate chain that does not lead to a trusted root."""


@dataclass(frozen=True)
class DeviceIdentity:
    certificate: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    device_id: str
    subject: str
    root_subject: str
    path: tuple[x509.Certificate, ...]  # the device certificate, intermediates, then the root


# The device id: in every seal as "dev" and in the device certificate's serialNumber,
# an X.520 PrintableString (no "_"); kept to characters safe in file names and topics.
DEVICE_ID_PATTERN = r"[A-Za-z0-9.:-]{1,64}"
DEVICE_ID_RULE = "1-64 letters, digits and . : -"


def device_id_of(named: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    """The device id: the subject's single serialNumber attribute (IEEE 802.1AR)."""
    values = named.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    return str(values[0].value) if len(values) == 1 and values[0].value else None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """kid: SHA-256 of the public key's SubjectPublicKeyInfo DER (DESIGN 3.2)."""
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def parse_der_chain(ders: list[bytes]) -> list[x509.Certificate]:
    return [_parse(i, der) for i, der in enumerate(ders)]


def _parse(index: int, der: bytes) -> x509.Certificate:
    """Parse every field now: cryptography parses lazily, and a damaged field would
    otherwise raise later, from wherever it is first read."""
    _check_signature_bits(index, der)
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.version, cert.subject, cert.issuer, cert.extensions, cert.serial_number)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_hash_algorithm)
        cert.public_key()
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise ChainError(f"certificate {index} is malformed: {exc}") from None
    return cert


def _check_signature_bits(index: int, der: bytes) -> None:
    """The signature BIT STRING must declare 0 unused bits. Parsers ignore that byte, so
    without this check a certificate would have two encodings that both verify."""
    try:
        outer, end = _der_element(der, 0)
        if outer != 0x30 or end != len(der):
            raise ValueError("not one DER SEQUENCE")
        offset = _content_start(der, 0)
        for _ in range(2):  # tbsCertificate, signatureAlgorithm
            offset = _der_element(der, offset)[1]
        tag, end = _der_element(der, offset)
        content = _content_start(der, offset)
        unused_bits = der[content] if content < end else None
    except (ValueError, IndexError) as exc:
        raise ChainError(f"certificate {index} is malformed: {exc}") from None
    if tag != 0x03 or end != len(der) or unused_bits != 0:
        raise ChainError(f"certificate {index} is malformed: signature is not a whole-byte BIT STRING")


def _content_start(der: bytes, offset: int) -> int:
    first = der[offset + 1]
    return offset + 2 + (first & 0x7F if first & 0x80 else 0)


def _der_element(der: bytes, offset: int) -> tuple[int, int]:
    """(tag, end offset) of the DER element at `offset`."""
    first = der[offset + 1]
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[offset + 2 : offset + 2 + count], "big")
    else:
        length = first
    end = _content_start(der, offset) + length
    if end > len(der):
        raise ValueError("DER element runs past the end")
    return der[offset], end


def verify_chain(
    chain: list[x509.Certificate], roots: list[x509.Certificate], times: list[dt.datetime]
) -> DeviceIdentity:
    """chain = device certificate, then intermediates; every certificate, the root
    included, must be valid at each of `times` (when the data was signed)."""
    if not chain:
        raise ChainError("no device certificate")
    device = chain[0]
    key = device.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ChainError("the device certificate's key is not EC P-256")
    if is_ca(device):
        raise ChainError("the first certificate is a CA certificate, not a device certificate")
    _check_device_key_usage(device)
    device_id = device_id_of(device)
    if device_id is None:
        raise ChainError("the device certificate names no device (one serialNumber attribute)")
    if any(cert.subject == cert.issuer for cert in chain):
        raise ChainError("the chain holds a self-issued (root) certificate; roots come from --ca only")
    for child, issuer in zip(chain, chain[1:]):
        check_issued(child, issuer)
    root = _issuing_root(chain[-1], roots)
    check_valid_at((*chain, root), times)
    return DeviceIdentity(
        device, key, device_id, device.subject.rfc4514_string(), root.subject.rfc4514_string(), (*chain, root)
    )


def _check_device_key_usage(device: x509.Certificate) -> None:
    """The device key signs seals and checkpoints, nothing else: its certificate must allow
    digitalSignature (RFC 5280 4.2.1.3) and none of a CA's usages."""
    try:
        usage = device.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ChainError("the device certificate has no keyUsage extension: it must allow digitalSignature") from None
    if not usage.digital_signature:
        raise ChainError("the device certificate's keyUsage lacks digitalSignature: its key may not sign seals")
    ca_usages = [name for name, on in (("keyCertSign", usage.key_cert_sign), ("cRLSign", usage.crl_sign)) if on]
    if ca_usages:
        raise ChainError(
            f"the device certificate's keyUsage allows {' and '.join(ca_usages)}: a CA's usage, not a device's"
        )


def _issuing_root(top: x509.Certificate, roots: list[x509.Certificate]) -> x509.Certificate:
    for root in roots:
        if root.subject == top.issuer:
            try:
                check_issued(top, root)
            except ChainError:
                continue
            return root
    raise ChainError(
        f"no trusted root issued {top.subject.rfc4514_string()!r} (issuer {top.issuer.rfc4514_string()!r})"
    )


def check_valid_at(path: Sequence[x509.Certificate], times: Sequence[dt.datetime]) -> None:
    """Every certificate of `path` was valid at each of `times`; raises ChainError naming
    the first that was not. The stream checker calls it per seal, on a chain it verified
    without times (`verify_chain(..., [])`) when the certificate arrived."""
    for cert in path:
        for at in times:
            _check_validity(cert, at)


def valid_throughout(chain: list[x509.Certificate], times: list[dt.datetime]) -> bool:
    return all(cert.not_valid_before_utc <= at <= cert.not_valid_after_utc for cert in chain for at in times)


def check_issued(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """`issuer` is a CA and signed `child`."""
    child_name, issuer_name = child.subject.rfc4514_string(), issuer.subject.rfc4514_string()
    if not is_ca(issuer):
        raise ChainError(f"{child_name!r}: its issuer {issuer_name!r} is not a CA")
    try:
        child.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise ChainError(f"{child_name!r}: its signature does not verify with the key of {issuer_name!r}") from None
    except (ValueError, TypeError) as exc:
        raise ChainError(f"{child_name!r}: not issued by {issuer_name!r}: {exc}") from None


def _check_validity(cert: x509.Certificate, at: dt.datetime) -> None:
    name = cert.subject.rfc4514_string()
    if at < cert.not_valid_before_utc:
        raise ChainError(
            f"{name!r} was not yet valid when data was signed at {at.isoformat()} "
            f"(notBefore {cert.not_valid_before_utc.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise ChainError(
            f"{name!r} had expired when data was signed at {at.isoformat()} "
            f"(notAfter {cert.not_valid_after_utc.isoformat()})"
        )
