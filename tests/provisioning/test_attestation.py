"""The CA's evidence check (provisioning.attestation), pure, over evidence captured once
from a real software TPM: what passes, and each link of the proof failing on its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from tpm2_pytss import TPMA_OBJECT, TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE

from agent.config.model import DEFAULT_HANDLE
from agent.keys.tpm.esys import connected
from agent.keys.tpm.tcti import parse_tcti
from provisioning.attestation import EvidenceRejected, verify_evidence
from provisioning.ca import build_csr
from provisioning.evidence import Evidence, MalformedEnrollmentFile
from provisioning.swtpm import SoftwareTpm, SwtpmFiles, clone
from provisioning.tpm_identity import gather_evidence, keygen, make_csr


@dataclass(frozen=True)
class Captured:
    csr: x509.CertificateSigningRequest
    other_csr: x509.CertificateSigningRequest  # the same TPM key, another subject
    evidence: Evidence
    root: x509.Certificate  # the TPM vendor's root
    issuer: x509.Certificate  # its intermediate, which issued the EK certificate

    @property
    def vendor(self) -> list[x509.Certificate]:
        return [self.root, self.issuer]


@pytest.fixture(scope="module")
def captured(swtpm_template: SwtpmFiles, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    files = clone(swtpm_template, tmp_path_factory.mktemp("attestation") / "tpm")
    with SoftwareTpm(files) as tpm, connected(parse_tcti(tpm.tcti)) as esapi:
        keygen(esapi, DEFAULT_HANDLE, "GW-0001", force=False)
        csr = make_csr(esapi, DEFAULT_HANDLE, "GW-0001", "EG-200")
        other_csr = make_csr(esapi, DEFAULT_HANDLE, "GW-0001", "EG-300")
        found = gather_evidence(esapi, DEFAULT_HANDLE, csr)
    return Captured(csr, other_csr, found, _load(files.vendor_root_cert), _load(files.ek_issuer_cert))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _rejected(evidence: Evidence, csr, trusted, match: str) -> None:
    with pytest.raises(EvidenceRejected, match=match):
        verify_evidence(evidence, csr, trusted)


def _with_public(data: bytes, change: Callable[[TPMT_PUBLIC], None]) -> bytes:
    public, _ = TPMT_PUBLIC.unmarshal(data)
    change(public)
    return public.marshal()


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _ca(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None):
    """A CA certificate named CN=`name` (self-signed unless `issuer` is given) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def _resigned(evidence: Evidence, change: Callable[[TPMS_ATTEST], None]) -> Evidence:
    """`attest` changed by `change` and signed by a software key posing as the AK: what an
    attacker without a TPM could send. It reaches the content checks of attest."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()

    def pose(public: TPMT_PUBLIC) -> None:
        public.unique.ecc.x, public.unique.ecc.y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")

    attest, _ = TPMS_ATTEST.unmarshal(evidence.attest)
    change(attest)
    data = attest.marshal()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    signature, _ = TPMT_SIGNATURE.unmarshal(evidence.signature)
    signature.signature.ecdsa.signatureR, signature.signature.ecdsa.signatureS = (
        r.to_bytes(32, "big"),
        s.to_bytes(32, "big"),
    )
    return replace(
        evidence, ak_public=_with_public(evidence.ak_public, pose), attest=data, signature=signature.marshal()
    )


def test_genuine_evidence_verifies(captured: Captured) -> None:
    verified = verify_evidence(captured.evidence, captured.csr, captured.vendor)
    assert verified.ek_certificate.issuer.rfc4514_string() == "CN=swtpm-localca"
    assert verified.ak_name[:2] == verified.key_name[:2] == b"\x00\x0b" and len(verified.ak_name) == 34
    assert (
        verify_evidence(captured.evidence, captured.csr, [captured.issuer, captured.root]).ak_name == verified.ak_name
    )


def test_the_vendor_root_alone_is_not_enough_when_an_intermediate_issued_the_ek(captured: Captured) -> None:
    _rejected(
        captured.evidence, captured.csr, [captured.root],
        r"the EK certificate was not issued by a trusted TPM vendor CA \(issuer 'CN=swtpm-localca', not among",
    )  # fmt: skip


def test_an_intermediate_alone_is_not_a_trust_anchor(captured: Captured) -> None:
    _rejected(
        captured.evidence, captured.csr, [captured.issuer],
        r"the TPM vendor CA 'CN=swtpm-localca' was not issued by a trusted TPM vendor CA"
        r" \(issuer 'CN=swtpm-localca-rootca'",
    )  # fmt: skip


def test_another_vendor_with_the_same_names_is_refused(captured: Captured) -> None:
    root, root_key = _ca("swtpm-localca-rootca")
    issuer, _ = _ca("swtpm-localca", (root.subject, root_key))
    _rejected(captured.evidence, captured.csr, [root, issuer], "its signature does not verify with the key")


def test_an_untrusted_vendor_is_refused(captured: Captured) -> None:
    root, _ = _ca("Some Other TPM Vendor Root")
    _rejected(captured.evidence, captured.csr, [root], "not issued by a trusted TPM vendor CA")


def test_a_vendor_path_outside_its_validity_is_refused(captured: Captured) -> None:
    with pytest.raises(EvidenceRejected, match="is not valid at 2000-01-01T00:00:00Z"):
        verify_evidence(captured.evidence, captured.csr, captured.vendor, now=datetime(2000, 1, 1, tzinfo=UTC))


def test_ek_public_of_another_key_is_refused(captured: Captured) -> None:
    def other_modulus(public: TPMT_PUBLIC) -> None:
        public.unique.rsa = _flip_last(bytes(public.unique.rsa))

    evidence = replace(captured.evidence, ek_public=_with_public(captured.evidence.ek_public, other_modulus))
    _rejected(evidence, captured.csr, captured.vendor, "ek_public is not the key of the EK certificate")


def test_an_ek_that_is_not_a_restricted_decryption_key_is_refused(captured: Captured) -> None:
    def unrestricted(public: TPMT_PUBLIC) -> None:
        public.objectAttributes &= ~TPMA_OBJECT.RESTRICTED

    evidence = replace(captured.evidence, ek_public=_with_public(captured.evidence.ek_public, unrestricted))
    _rejected(evidence, captured.csr, captured.vendor, "the EK is not a restricted decryption key")


def test_an_ak_that_is_not_restricted_is_refused(captured: Captured) -> None:
    def unrestricted(public: TPMT_PUBLIC) -> None:
        public.objectAttributes &= ~TPMA_OBJECT.RESTRICTED

    evidence = replace(captured.evidence, ak_public=_with_public(captured.evidence.ak_public, unrestricted))
    _rejected(evidence, captured.csr, captured.vendor, "the attestation key is not a restricted TPM signing key")


@pytest.mark.parametrize("field", ["attest", "signature"])
def test_tampered_attest_or_signature_is_refused(captured: Captured, field: str) -> None:
    evidence = replace(captured.evidence, **{field: _flip_last(getattr(captured.evidence, field))})
    _rejected(
        evidence, captured.csr, captured.vendor, "signature over attest does not verify: the evidence was altered"
    )


def test_the_csr_of_another_key_is_refused(captured: Captured) -> None:
    software_csr = build_csr(ec.generate_private_key(ec.SECP256R1()), "GW-0001", "EG-200")
    _rejected(captured.evidence, software_csr, captured.vendor, "the CSR is not for the TPM key in the evidence")


def test_another_csr_of_the_same_key_is_refused(captured: Captured) -> None:
    _rejected(captured.evidence, captured.other_csr, captured.vendor, "attest was made for another CSR")


def test_a_key_public_that_is_not_a_device_key_is_refused(captured: Captured) -> None:
    evidence = replace(captured.evidence, key_public=captured.evidence.ak_public)
    _rejected(evidence, captured.csr, captured.vendor, "key_public is not an edgeseal device key: attributes include")


def test_a_software_ak_passes_the_evidence_check_which_is_why_the_ca_challenges(captured: Captured) -> None:
    """The limit of the pure check: nothing in the evidence ties the AK to the EK's TPM.
    The credential challenge does (test_tpm_enrollment_cli: activation on another TPM)."""
    verify_evidence(_resigned(captured.evidence, lambda attest: None), captured.csr, captured.vendor)


def test_a_statement_the_tpm_did_not_make_is_refused(captured: Captured) -> None:
    def forged(attest: TPMS_ATTEST) -> None:
        attest.magic = 0x12345678

    _rejected(_resigned(captured.evidence, forged), captured.csr, captured.vendor, "attest was not made by a TPM")


def test_a_statement_about_another_key_is_refused(captured: Captured) -> None:
    def other_name(attest: TPMS_ATTEST) -> None:
        attest.attested.certify.name = _flip_last(bytes(attest.attested.certify.name))

    evidence = _resigned(captured.evidence, other_name)
    _rejected(evidence, captured.csr, captured.vendor, "attest certifies another key")


def test_a_key_outside_the_endorsement_hierarchy_is_refused(captured: Captured) -> None:
    def other_hierarchy(attest: TPMS_ATTEST) -> None:
        certify = attest.attested.certify
        certify.qualifiedName = _flip_last(bytes(certify.qualifiedName))

    evidence = _resigned(captured.evidence, other_hierarchy)
    _rejected(evidence, captured.csr, captured.vendor, "not a primary key of the endorsement hierarchy")


@pytest.mark.parametrize("field", ["ek_public", "ak_public", "key_public", "attest", "signature"])
def test_bytes_that_are_no_tpm_structure_are_malformed(captured: Captured, field: str) -> None:
    evidence = replace(captured.evidence, **{field: getattr(captured.evidence, field) + b"\0"})
    with pytest.raises(MalformedEnrollmentFile, match=f"evidence field {field}: 1 bytes after"):
        verify_evidence(evidence, captured.csr, captured.vendor)
    with pytest.raises(MalformedEnrollmentFile, match=f"evidence field {field}: not a"):
        verify_evidence(replace(evidence, **{field: b"\xff"}), captured.csr, captured.vendor)


def test_an_ek_certificate_that_is_not_der_is_malformed(captured: Captured) -> None:
    with pytest.raises(MalformedEnrollmentFile, match="ek_cert: certificate 0 is malformed"):
        verify_evidence(replace(captured.evidence, ek_cert=b"\x30\x03abc"), captured.csr, captured.vendor)
