"""The manufacturer CA and the device certificate profile: P-256, ECDSA-SHA256 throughout.

Pure functions over `cryptography` objects; files are `ca_store`'s job. Private keys are
used only through `sign()` and `public_key()`, so a TPM-resident key wrapped as an
`EllipticCurvePrivateKey` (tpm2_pytss.cryptography) signs a CSR exactly like a software key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import KeyError_, UsageError
from agent.trust.certs import DEVICE_ID_PATTERN, DEVICE_ID_RULE, device_id_of

# IEEE 802.1AR: a device identity lasts as long as the device, so an IDevID has no
# well-defined expiry and uses this GeneralizedTime value. The CAs use it too: a chain is
# only as valid as its shortest-lived certificate.
NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_MAX_NAME = 64  # X.520 upper bound of the names used here

_CA_USAGE = dict(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_DEVICE_USAGE = {**_CA_USAGE, "digital_signature": True, "key_cert_sign": False, "crl_sign": False}


@dataclass(frozen=True)
class CertificateAuthority:
    root_key: ec.EllipticCurvePrivateKey
    root_cert: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing_cert: x509.Certificate


def create_ca(organization: str, *, common_name_prefix: str = "edgeseal device") -> CertificateAuthority:
    """A self-signed root (pathlen 1) and an issuing CA (pathlen 0) signed by it.

    Two levels so the root key can stay offline: daily issuing needs only the issuing key.
    """
    _check_name("organization", organization)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _ca_name(organization, f"{common_name_prefix} root CA")
    root_cert = _ca_certificate(root_name, root_key, root_name, root_key, path_length=1)
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing_name = _ca_name(organization, f"{common_name_prefix} issuing CA")
    issuing_cert = _ca_certificate(issuing_name, issuing_key, root_name, root_key, path_length=0)
    return CertificateAuthority(root_key, root_cert, issuing_key, issuing_cert)


def issue_device_certificate(
    ca: CertificateAuthority | tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    csr: x509.CertificateSigningRequest,
    *,
    not_before: datetime | None = None,
) -> x509.Certificate:
    """The device's identity certificate (IDevID profile) for a checked CSR."""
    issuing_key, issuing_cert = (ca.issuing_key, ca.issuing_cert) if isinstance(ca, CertificateAuthority) else ca
    check_csr(csr)
    public_key = csr.public_key()
    builder = (
        _builder(csr.subject, issuing_cert.subject, public_key, not_before)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_DEVICE_USAGE), critical=True)
        .add_extension(_authority_key_identifier(issuing_cert), critical=False)
    )
    return builder.sign(issuing_key, hashes.SHA256())


def build_csr(
    private_key: ec.EllipticCurvePrivateKey,
    device_id: str,
    model: str | None = None,
    *,
    organization: str | None = None,
) -> x509.CertificateSigningRequest:
    """CSR with subject [O=<organization>,] [OU=<model>,] serialNumber=<device_id>, CN=<device_id>.

    serialNumber is the attribute X.520 defines for a device's serial, and verifiers read
    the device id from it; CN repeats it for tools that show only CN. The model goes in a
    plain OU, which every tool displays and no profile gives another meaning.
    """
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise KeyError_(f"the device key must be EC P-256, not {private_key.curve.name}")
    if not re.fullmatch(DEVICE_ID_PATTERN, device_id):
        raise UsageError(f"device id {device_id!r}: use {DEVICE_ID_RULE} (the agent's device.id rule)")
    # Most general first, as X.501 orders a name: O, OU, then the device itself.
    attributes = []
    for label, oid, value in (
        ("organization", NameOID.ORGANIZATION_NAME, organization),
        ("model", NameOID.ORGANIZATIONAL_UNIT_NAME, model),
    ):
        if value is not None:
            _check_name(label, value)
            attributes.append(x509.NameAttribute(oid, value))
    attributes += [
        x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id),
        x509.NameAttribute(NameOID.COMMON_NAME, device_id),
    ]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    return builder.sign(private_key, hashes.SHA256())


def check_csr(csr: x509.CertificateSigningRequest) -> None:
    """What the CA requires of any CSR: a valid signature, a P-256 key, one device id."""
    if not csr.is_signature_valid:
        raise KeyError_("the CSR's signature does not verify: it was altered or not signed by its key")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise KeyError_("the CSR's key is not EC P-256; device keys must be P-256")
    if device_id_of(csr) is None:
        raise KeyError_("the CSR's subject has no single serialNumber attribute (the device id)")


def _ca_name(organization: str, common_name: str) -> x509.Name:
    _check_name("common name", common_name)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    path_length: int,
) -> x509.Certificate:
    builder = (
        _builder(subject, issuer, key.public_key(), None)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(**_CA_USAGE), critical=True)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, not_before: datetime | None
) -> x509.CertificateBuilder:
    start = not_before or datetime.now(UTC).replace(microsecond=0)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())  # 159 random bits: positive, fits 20 bytes
        .not_valid_before(start)
        .not_valid_after(NO_EXPIRY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _check_name(label: str, value: str) -> None:
    if not value or len(value) > _MAX_NAME:
        raise UsageError(f"{label} {value!r}: must be 1 to {_MAX_NAME} characters")
