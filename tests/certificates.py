"""Certificates the provisioning profile would never issue, for the verifier's negative
tests: a device certificate with any key usage and validity.

A plain module beside tests/conftest.py, imported by the tests that need it:

    from certificates import DEVICE_USAGE, device_certificate
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.ca import CertificateAuthority

NO_USAGE = dict.fromkeys(
    (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)
DEVICE_USAGE = {**NO_USAGE, "digital_signature": True}


def device_certificate(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    device_id: str,
    *,
    usage: dict[str, bool] | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """Device `device_id` issued by `ca`'s issuing CA, with `usage` (None: no keyUsage
    extension) and the validity given."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.SERIAL_NUMBER, device_id), x509.NameAttribute(NameOID.COMMON_NAME, device_id)]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    return builder.sign(ca.issuing_key, hashes.SHA256())
