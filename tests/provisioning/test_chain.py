"""describe_chain and chain_problems over real certificates."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from agent.keys.signer import key_id
from provisioning.ca import create_ca, issue_device_certificate
from provisioning.chain import chain_problems, describe_chain


def test_description_names_subjects_and_key_ids(ca, csr, device_key):
    cert = issue_device_certificate(ca, csr)
    text = "\n".join(describe_chain([cert, ca.issuing_cert]))
    assert "certificate 0: CN=GW-0001,serialNumber=GW-0001,OU=EG-200" in text
    assert "certificate 1: CN=edgeseal device issuing CA,O=Test Factory" in text
    assert key_id(device_key.public_key()).hex() in text
    assert cert.fingerprint(hashes.SHA256()).hex() in text
    assert ".. 9999-12-31T23:59:59Z" in text


def test_good_chain_has_no_problems(ca, csr):
    cert = issue_device_certificate(ca, csr)
    assert chain_problems([cert, ca.issuing_cert], ca.root_cert) == []
    assert chain_problems([cert, ca.issuing_cert, ca.root_cert], ca.root_cert) == []


def test_chain_to_another_root_is_reported(ca, csr):
    cert = issue_device_certificate(ca, csr)
    other = create_ca("Someone Else")
    problems = chain_problems([cert, ca.issuing_cert], other.root_cert)
    assert problems and all(p.startswith("certificate 1:") for p in problems)


def test_tampered_certificate_is_reported(ca, csr, tamper):
    der = issue_device_certificate(ca, csr).public_bytes(serialization.Encoding.DER)
    forged = x509.load_der_x509_certificate(tamper(der, b"GW-0001", b"GW-0666"))
    [problem] = chain_problems([forged, ca.issuing_cert], ca.root_cert)
    assert problem.startswith("certificate 0: ")
    issuer = "'CN=edgeseal device issuing CA,O=Test Factory'"
    assert problem.endswith(f"its signature does not verify with the key of {issuer}")


def test_issuer_that_is_not_a_ca_is_reported(ca, csr):
    device = issue_device_certificate(ca, csr)
    problems = chain_problems([device, device], ca.root_cert)
    assert any(p.startswith("certificate 0: ") and p.endswith("is not a CA") for p in problems)


def test_certificate_outside_its_validity_is_reported(ca, csr):
    cert = issue_device_certificate(ca, csr, not_before=datetime(2040, 1, 1, tzinfo=UTC))
    now = datetime(2039, 12, 31, tzinfo=UTC)
    assert chain_problems([cert, ca.issuing_cert], ca.root_cert, now=now) == [
        "certificate 0: not valid at 2039-12-31T00:00:00Z"
    ]


def test_empty_chain_is_a_problem(ca):
    assert chain_problems([], ca.root_cert) == ["the chain holds no certificate"]
