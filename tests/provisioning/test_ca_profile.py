"""The CA and device certificate profile, with real keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.errors import KeyError_, UsageError
from provisioning.ca import NO_EXPIRY, build_csr, issue_device_certificate


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def test_root_is_self_signed_ca_with_pathlen_1(ca):
    root = ca.root_cert
    root.verify_directly_issued_by(root)
    assert _ext(root, x509.BasicConstraints).critical
    assert _ext(root, x509.BasicConstraints).value.path_length == 1
    usage = _ext(root, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert _ext(root, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(root.public_key())


def test_issuing_ca_is_signed_by_root_with_pathlen_0(ca):
    issuing = ca.issuing_cert
    issuing.verify_directly_issued_by(ca.root_cert)
    assert _ext(issuing, x509.BasicConstraints).value.path_length == 0
    root_ski = _ext(ca.root_cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(issuing, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    assert isinstance(issuing.signature_hash_algorithm, hashes.SHA256)


def test_device_certificate_profile(ca, csr, device_key):
    cert = issue_device_certificate(ca, csr)

    cert.verify_directly_issued_by(ca.issuing_cert)
    assert cert.subject == csr.subject
    assert cert.public_key() == device_key.public_key()
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    issuing_ski = _ext(ca.issuing_cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == issuing_ski
    assert _ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc == NO_EXPIRY
    assert 0 < cert.serial_number < 2**159


def test_not_after_is_the_802_1ar_generalized_time(ca, csr):
    der = issue_device_certificate(ca, csr).public_bytes(serialization.Encoding.DER)
    assert b"\x18\x0f99991231235959Z" in der  # GeneralizedTime, 15 bytes


def test_issue_takes_an_issuer_pair_and_a_start_time(ca, csr):
    start = datetime(2030, 1, 1, tzinfo=UTC)
    cert = issue_device_certificate((ca.issuing_key, ca.issuing_cert), csr, not_before=start)
    assert cert.not_valid_before_utc == start
    assert cert.serial_number != issue_device_certificate(ca, csr).serial_number


def test_csr_subject_carries_device_id_and_model(csr):
    subject = csr.subject
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "GW-0001"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "GW-0001"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "EG-200"
    assert csr.is_signature_valid


def test_csr_without_model_has_no_ou(device_key):
    csr = build_csr(device_key, "GW-0002", None)
    assert not csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)


def test_csr_with_bad_signature_is_rejected(ca, csr, tamper):
    der = tamper(csr.public_bytes(serialization.Encoding.DER), b"GW-0001", b"GW-0666")
    forged = x509.load_der_x509_csr(der)
    with pytest.raises(KeyError_, match="signature does not verify"):
        issue_device_certificate(ca, forged)


def test_csr_without_serial_number_is_rejected(ca, device_key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GW-0001")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(device_key, hashes.SHA256())
    with pytest.raises(KeyError_, match="serialNumber"):
        issue_device_certificate(ca, csr)


def test_csr_with_p384_key_is_rejected(ca):
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "GW-0001")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    with pytest.raises(KeyError_, match="P-256"):
        issue_device_certificate(ca, csr)


@pytest.mark.parametrize("device_id", ["", "gw_0001", "gerät-1", "x" * 65])
def test_device_id_must_be_a_printable_string(device_key, device_id):
    with pytest.raises(UsageError, match="device id"):
        build_csr(device_key, device_id, None)


def test_build_csr_refuses_other_curves():
    with pytest.raises(KeyError_, match="P-256"):
        build_csr(ec.generate_private_key(ec.SECP384R1()), "GW-0001", None)


class NonExportableKey(ec.EllipticCurvePrivateKey):
    """Stands in for a TPM key as tpm2_pytss.cryptography wraps it: it signs, never exports."""

    def __init__(self) -> None:
        self._inner = ec.generate_private_key(ec.SECP256R1())
        self.signatures = 0

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self.signatures += 1
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return 256

    def exchange(self, *args):
        raise NotImplementedError

    def private_numbers(self):
        raise NotImplementedError("the key never leaves the TPM")

    def private_bytes(self, *args):
        raise NotImplementedError("the key never leaves the TPM")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def test_csr_can_be_signed_by_a_non_exportable_key(ca):
    key = NonExportableKey()
    csr = build_csr(key, "GW-0003", "EG-200")
    assert key.signatures == 1 and csr.is_signature_valid
    assert issue_device_certificate(ca, csr).public_key() == key.public_key()
