from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.trust.certs import ChainError, _content_start, _der_element, parse_der_chain, verify_chain
from provisioning.ca import build_csr, create_ca, issue_device_certificate


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def ca():  # type: ignore[no-untyped-def]
    return create_ca("Test Factory")


def test_a_chain_to_the_root_names_the_device(ca) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_device_certificate(ca, build_csr(key, "GW-7", None))
    identity = verify_chain(
        parse_der_chain([_der(cert), _der(ca.issuing_cert)]), [ca.root_cert], [cert.not_valid_before_utc]
    )
    assert identity.device_id == "GW-7"


def test_a_ca_certificate_is_not_a_device(ca) -> None:  # type: ignore[no-untyped-def]
    chain = parse_der_chain([_der(ca.issuing_cert)])
    with pytest.raises(ChainError, match="CA certificate, not a device"):
        verify_chain(chain, [ca.root_cert], [ca.issuing_cert.not_valid_before_utc])


def test_an_empty_signature_bit_string_is_malformed_not_a_crash(ca) -> None:  # type: ignore[no-untyped-def]
    der = _der(ca.issuing_cert)
    start = _content_start(der, 0)
    after_algorithm = _der_element(der, _der_element(der, start)[1])[1]
    inner = der[start:after_algorithm] + b"\x03\x00"  # the signature: a BIT STRING of no bytes
    crafted = b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
    with pytest.raises(ChainError, match="malformed"):
        parse_der_chain([crafted])


def test_validity_is_checked_at_every_given_time_for_the_root_too(ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_device_certificate(ca, build_csr(key, "GW-8", None))
    before_root = ca.root_cert.not_valid_before_utc - dt.timedelta(days=1)
    with pytest.raises(ChainError, match="not valid at"):
        verify_chain([cert, ca.issuing_cert], [ca.root_cert], [cert.not_valid_before_utc, before_root])
