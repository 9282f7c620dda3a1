"""agent.trust.revocation: reading CRLs, and which CRL speaks for which certificate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.trust.revocation import CrlCheck, CrlError, check_revocation, load_crl
from provisioning.ca import CertificateAuthority, build_csr, create_ca, issue_device_certificate

T = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("Test Factory")


@pytest.fixture(scope="module")
def path(ca: CertificateAuthority) -> tuple[x509.Certificate, ...]:
    device = issue_device_certificate(ca, build_csr(ec.generate_private_key(ec.SECP256R1()), "GW-1"))
    return device, ca.issuing_cert, ca.root_cert


def crl(
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[tuple[int, dt.datetime]] = (),
    *,
    issued: dt.datetime = T,
    critical: Sequence[x509.ExtensionType] = (),
    entry_extension: x509.ExtensionType | None = None,
) -> x509.CertificateRevocationList:
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer).last_update(issued)
    builder = builder.next_update(issued + 24 * HOUR)
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if entry_extension is not None:
            entry = entry.add_extension(entry_extension, critical=True)
        builder = builder.add_revoked_certificate(entry.build())
    for extension in critical:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def issuing_crl(
    ca: CertificateAuthority,
    *revoked: tuple[int, dt.datetime],
    issued: dt.datetime = T,
    critical: Sequence[x509.ExtensionType] = (),
    entry_extension: x509.ExtensionType | None = None,
) -> bytes:
    """The issuing CA's CRL, as DER."""
    made = crl(
        ca.issuing_cert.subject,
        ca.issuing_key,
        revoked,
        issued=issued,
        critical=critical,
        entry_extension=entry_extension,
    )
    return made.public_bytes(serialization.Encoding.DER)


# -- load_crl ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_a_crl_loads_from_pem_or_der(ca: CertificateAuthority, encoding: serialization.Encoding) -> None:
    made = crl(ca.issuing_cert.subject, ca.issuing_key, [(7, T)])
    loaded = load_crl(made.public_bytes(encoding))
    assert loaded.issuer == ca.issuing_cert.subject and [e.serial_number for e in loaded] == [7]


def test_a_pem_file_must_hold_exactly_one_crl(ca: CertificateAuthority) -> None:
    pem = crl(ca.issuing_cert.subject, ca.issuing_key).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CrlError, match="expected one PEM block '-----BEGIN X509 CRL-----', found 2"):
        load_crl(pem + pem)
    with pytest.raises(CrlError, match="found 0"):
        load_crl(ca.root_cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("data", [b"", b"\x30\x03\x02\x01\x01", b"revoked: none\n"], ids=["empty", "der", "text"])
def test_what_is_not_a_crl_is_refused(data: bytes) -> None:
    with pytest.raises(CrlError, match="neither a PEM nor a DER X.509 CRL"):
        load_crl(data)


def test_a_certificate_in_der_is_not_a_crl(ca: CertificateAuthority) -> None:
    with pytest.raises(CrlError, match="neither a PEM nor a DER X.509 CRL"):
        load_crl(ca.root_cert.public_bytes(serialization.Encoding.DER))


def test_a_crl_with_a_critical_extension_is_refused(ca: CertificateAuthority) -> None:
    """RFC 5280 5: delta CRLs and scoped or indirect CRLs mean something edgeseal does not
    evaluate, so they are refused rather than half-understood."""
    scoped = x509.IssuingDistributionPoint(None, None, True, False, None, False, False)
    with pytest.raises(CrlError, match=r"critical extension\(s\) DeltaCRLIndicator, IssuingDistributionPoint"):
        load_crl(issuing_crl(ca, critical=[x509.DeltaCRLIndicator(3), scoped]))


def test_an_indirect_crl_entry_is_refused(ca: CertificateAuthority) -> None:
    other = x509.CertificateIssuer([x509.DirectoryName(ca.root_cert.subject)])
    with pytest.raises(CrlError, match=r"critical extension\(s\) CertificateIssuer"):
        load_crl(issuing_crl(ca, (5, T), entry_extension=other))


# -- check_revocation ---------------------------------------------------------------------


def test_without_crls_nothing_is_checked(path: tuple[x509.Certificate, ...]) -> None:
    checks = check_revocation(path, [])
    assert [(c.subject, c.this_update, c.revoked) for c in checks] == [
        (path[0].subject.rfc4514_string(), None, False),
        (path[1].subject.rfc4514_string(), None, False),
    ]


def test_a_listed_device_certificate_is_revoked(ca: CertificateAuthority, path: tuple[x509.Certificate, ...]) -> None:
    device = path[0]
    listing = load_crl(issuing_crl(ca, (device.serial_number, T)))
    checks = check_revocation(path, [listing])
    assert checks[0] == CrlCheck(
        device.subject.rfc4514_string(), device.serial_number, ca.issuing_cert.subject.rfc4514_string(), T, T, None
    )
    assert not checks[1].revoked and checks[1].this_update is None
    assert checks[0].finding() == (
        f"{device.subject.rfc4514_string()!r} (serial {device.serial_number:x}) is revoked: the CRL of "
        f"{ca.issuing_cert.subject.rfc4514_string()!r} lists it as revoked on 2024-05-01T00:00:00+00:00"
    )
    newer = load_crl(issuing_crl(ca, (device.serial_number, T - HOUR), issued=T + HOUR))
    both = check_revocation(path, [listing, newer])[0]
    assert (both.revoked_at, both.this_update) == (T - HOUR, T + HOUR), "the earliest listing, the newest CRL"


def test_the_reason_is_named(ca: CertificateAuthority, path: tuple[x509.Certificate, ...]) -> None:
    made = x509.CertificateRevocationListBuilder().issuer_name(ca.issuing_cert.subject).last_update(T)
    entry = x509.RevokedCertificateBuilder().serial_number(path[0].serial_number).revocation_date(T)
    entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags.superseded), critical=False)
    made = made.next_update(T + HOUR).add_revoked_certificate(entry.build()).sign(ca.issuing_key, hashes.SHA256())
    check = check_revocation(path, [made])[0]
    assert check.reason == "superseded" and check.finding().endswith(
        "revoked on 2024-05-01T00:00:00+00:00 (superseded)"
    )


def test_a_listing_stays_a_revocation_when_a_newer_crl_drops_it(
    ca: CertificateAuthority, path: tuple[x509.Certificate, ...]
) -> None:
    """Strict: any CRL given that lists the certificate revokes it."""
    old = load_crl(issuing_crl(ca, (path[0].serial_number, T)))
    new = load_crl(issuing_crl(ca, issued=T + HOUR))
    assert check_revocation(path, [new, old])[0].revoked


def test_a_crl_speaks_only_for_its_issuers_certificates(
    ca: CertificateAuthority, path: tuple[x509.Certificate, ...]
) -> None:
    """The root did not issue the device certificate: its CRL listing that serial number
    is about some other certificate of the root's."""
    device, issuing, root = path
    root_crl = crl(root.subject, ca.root_key, [(device.serial_number, T)])
    checks = check_revocation(path, [root_crl])
    assert not checks[0].revoked and checks[0].this_update is None
    assert not checks[1].revoked and checks[1].this_update == T
    revoked_issuing = check_revocation(path, [crl(root.subject, ca.root_key, [(issuing.serial_number, T)])])
    assert [c.revoked for c in revoked_issuing] == [False, True]


def test_a_crl_of_no_ca_in_the_path_is_unusable(path: tuple[x509.Certificate, ...]) -> None:
    other = create_ca("Other Factory")
    with pytest.raises(CrlError, match="which is no CA of the device's certificate chain"):
        check_revocation(path, [crl(other.issuing_cert.subject, other.issuing_key)])


def test_a_crl_in_a_cas_name_but_not_signed_by_it_is_unusable(path: tuple[x509.Certificate, ...]) -> None:
    for ca_cert in path[1:]:
        forged = crl(ca_cert.subject, ec.generate_private_key(ec.SECP256R1()), [(path[0].serial_number, T)])
        with pytest.raises(CrlError, match="its signature does not verify with that CA's key"):
            check_revocation(path, [forged])


def test_the_index_names_the_unusable_crl(ca: CertificateAuthority, path: tuple[x509.Certificate, ...]) -> None:
    other = create_ca("Other Factory")
    crls = [crl(ca.issuing_cert.subject, ca.issuing_key), crl(other.root_cert.subject, other.root_key)]
    with pytest.raises(CrlError) as raised:
        check_revocation(path, crls)
    assert raised.value.index == 1


def test_the_device_is_no_crl_issuer(path: tuple[x509.Certificate, ...]) -> None:
    by_device = crl(path[0].subject, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CrlError, match="no CA of the device's certificate chain"):
        check_revocation(path, [by_device])


def test_a_ca_whose_key_usage_lacks_crl_sign_issues_no_crl(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(False, False, False, False, False, True, False, False, False)  # keyCertSign only
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "no CRLs here")])
    issuing = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.root_cert.not_valid_before_utc)
        .not_valid_after(ca.root_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(ca.root_key, hashes.SHA256())
    )
    device = issue_device_certificate((key, issuing), build_csr(ec.generate_private_key(ec.SECP256R1()), "GW-2"))
    with pytest.raises(CrlError, match="issued by 'CN=no CRLs here', whose keyUsage does not allow cRLSign"):
        check_revocation([device, issuing, ca.root_cert], [crl(name, key, [(device.serial_number, T)])])
