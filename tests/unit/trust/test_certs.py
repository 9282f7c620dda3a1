import datetime as dt
from pathlib import Path

import pytest
from certificates import DEVICE_USAGE, NO_USAGE, device_certificate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.trust.certs import ChainError, _content_start, _der_element, parse_der_chain, verify_chain
from provisioning.ca import CertificateAuthority, build_csr, create_ca, issue_device_certificate


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
    with pytest.raises(ChainError, match="was not yet valid when data was signed at"):
        verify_chain([cert, ca.issuing_cert], [ca.root_cert], [cert.not_valid_before_utc, before_root])


def test_the_identity_holds_the_path_to_the_root(ca) -> None:  # type: ignore[no-untyped-def]
    cert = issue_device_certificate(ca, build_csr(ec.generate_private_key(ec.SECP256R1()), "GW-9", None))
    identity = verify_chain([cert, ca.issuing_cert], [ca.root_cert], [cert.not_valid_before_utc])
    assert identity.path == (cert, ca.issuing_cert, ca.root_cert)


def test_an_expired_certificate_says_when_it_expired(ca) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    start = ca.issuing_cert.not_valid_before_utc
    cert = _device_certificate(ca, key, usage=DEVICE_USAGE, not_after=start + dt.timedelta(hours=1))
    late = start + dt.timedelta(days=2)
    with pytest.raises(ChainError) as raised:
        verify_chain([cert, ca.issuing_cert], [ca.root_cert], [start, late])
    assert str(raised.value) == (
        f"'CN=GW-10,2.5.4.5=GW-10' had expired when data was signed at {late.isoformat()} "
        f"(notAfter {(start + dt.timedelta(hours=1)).isoformat()})"
    )


USAGE = "the device certificate's keyUsage"
KEY_USAGES = {
    "none": (None, "the device certificate has no keyUsage extension: it must allow digitalSignature"),
    "key agreement only": (
        {**NO_USAGE, "key_agreement": True},
        f"{USAGE} lacks digitalSignature: its key may not sign seals",
    ),
    "and keyCertSign": (
        {**DEVICE_USAGE, "key_cert_sign": True},
        f"{USAGE} allows keyCertSign: a CA's usage, not a device's",
    ),
    "and cRLSign": ({**DEVICE_USAGE, "crl_sign": True}, f"{USAGE} allows cRLSign: a CA's usage, not a device's"),
    "and both": (
        {**DEVICE_USAGE, "key_cert_sign": True, "crl_sign": True},
        f"{USAGE} allows keyCertSign and cRLSign: a CA's usage, not a device's",
    ),
}


@pytest.mark.parametrize("case", KEY_USAGES)
def test_the_device_key_must_be_for_signatures_only(ca, case: str) -> None:  # type: ignore[no-untyped-def]
    usage, message = KEY_USAGES[case]
    cert = _device_certificate(ca, ec.generate_private_key(ec.SECP256R1()), usage=usage)
    with pytest.raises(ChainError) as raised:
        verify_chain([cert, ca.issuing_cert], [ca.root_cert], [cert.not_valid_before_utc])
    assert str(raised.value) == message


def test_digital_signature_with_other_end_entity_usages_is_accepted(ca) -> None:  # type: ignore[no-untyped-def]
    usage = {**NO_USAGE, "digital_signature": True, "key_agreement": True, "content_commitment": True}
    cert = _device_certificate(ca, ec.generate_private_key(ec.SECP256R1()), usage=usage)
    assert verify_chain([cert, ca.issuing_cert], [ca.root_cert], [cert.not_valid_before_utc]).device_id == "GW-10"


def _device_certificate(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    *,
    usage: dict[str, bool] | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Device "GW-10" as provisioning would issue it, but with `usage` (None: no keyUsage)
    and `not_after` (default: the profile's, the issuing CA's)."""
    start, end = ca.issuing_cert.not_valid_before_utc, not_after or ca.issuing_cert.not_valid_after_utc
    return device_certificate(ca, key, "GW-10", usage=usage, not_before=start, not_after=end)
