"""The OPC UA PKI directory (drivers/opcua/pki.py), on temporary directories: the client
certificate's profile and life cycle, and the trust decisions on server certificates."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drivers.opcua import pki
from drivers.opcua.pki import (
    Pki,
    PkiError,
    ServerCertificateOutOfDate,
    UntrustedServerCertificate,
    first_certificate,
    parse_thumbprint,
    thumbprint,
)

URI = "urn:gw1:edgeseal"
NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # one key: RSA generation is slow
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(
    common_name: str,
    *,
    key: rsa.RSAPrivateKey = KEY,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
    key_cert_sign: bool | None = None,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
) -> x509.Certificate:
    """A server (or CA) certificate, self-signed unless `issuer` is given; keyCertSign
    as `ca` unless `key_cert_sign` says otherwise."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    usage = dict.fromkeys(
        ("content_commitment", "key_agreement", "crl_sign", "encipher_only", "decipher_only", "data_encipherment"),
        False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=ca if key_cert_sign is None else key_cert_sign,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:{common_name}")]), False)
        .sign(signing_key, hashes.SHA256())
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def store(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "state" / "pki")


# -- the client certificate -----------------------------------------------------------


def test_client_certificate_profile(store: Pki) -> None:
    made = store.client_certificate(URI, hostname="gw1", now=NOW)
    cert = made.certificate
    assert made.new_because == "there was none"
    assert made.certificate_path == store.root / "own" / "certs" / "client.der"
    assert made.private_key_path == store.root / "own" / "private" / "client.pem"
    assert x509.load_der_x509_certificate(made.certificate_path.read_bytes()) == cert

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edgeseal@gw1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "edgeseal"
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [URI]
    assert san.get_values_for_type(x509.DNSName) == ["gw1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_encipherment
    assert usage.data_encipherment and usage.key_cert_sign
    assert not usage.crl_sign and not usage.key_agreement
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ]
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    assert cert.not_valid_after_utc - NOW >= 3650 * DAY - DAY
    assert cert.not_valid_before_utc <= NOW
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())


def test_client_key_is_private_and_belongs_to_the_certificate(store: Pki) -> None:
    made = store.client_certificate(URI, hostname="gw1", now=NOW)
    key = serialization.load_pem_private_key(made.private_key_path.read_bytes(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*spki) == made.certificate.public_key().public_bytes(*spki)
    assert stat.S_IMODE(made.private_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.private_key_path.parent.stat().st_mode) == 0o700
    assert [p.name for p in made.private_key_path.parent.iterdir()] == ["client.pem"]  # no temporary left


def test_existing_private_directory_is_tightened(store: Pki) -> None:
    (store.root / "own" / "private").mkdir(parents=True, mode=0o755)
    os.chmod(store.root / "own" / "private", 0o755)
    store.client_certificate(URI, hostname="gw1", now=NOW)
    assert stat.S_IMODE((store.root / "own" / "private").stat().st_mode) == 0o700


def test_client_certificate_is_reused(store: Pki) -> None:
    first = store.client_certificate(URI, hostname="gw1", now=NOW)
    again = store.client_certificate(URI, hostname="gw1", now=NOW + 400 * DAY)
    assert again.new_because is None
    assert again.certificate == first.certificate


def test_new_application_uri_makes_a_new_certificate(store: Pki) -> None:
    first = store.client_certificate(URI, hostname="gw1", now=NOW)
    renewed = store.client_certificate("urn:gw1:edgeseal:line2", hostname="gw1", now=NOW)
    assert renewed.certificate != first.certificate
    assert renewed.new_because == f"the application URI changed from {URI} to urn:gw1:edgeseal:line2"
    assert pki.application_uri(renewed.certificate) == "urn:gw1:edgeseal:line2"


@pytest.mark.parametrize(
    "damage, because",
    [
        (lambda s: s.own_key_path.unlink(), "is missing or is not the certificate's key"),
        (lambda s: s.own_key_path.write_bytes(b"garbage"), "is missing or is not the certificate's key"),
        (lambda s: s.own_certificate_path.write_bytes(b"garbage"), "is not a DER certificate"),
    ],
    ids=["key missing", "key unreadable", "certificate unreadable"],
)
def test_unusable_pair_is_replaced(store: Pki, damage, because: str) -> None:
    first = store.client_certificate(URI, hostname="gw1", now=NOW)
    damage(store)
    renewed = store.client_certificate(URI, hostname="gw1", now=NOW)
    assert because in (renewed.new_because or "")
    assert renewed.certificate != first.certificate
    assert store.client_certificate(URI, hostname="gw1", now=NOW).new_because is None


def test_key_of_another_certificate_is_replaced(store: Pki, tmp_path: Path) -> None:
    store.client_certificate(URI, hostname="gw1", now=NOW)
    other = Pki(tmp_path / "other")
    other.client_certificate(URI, hostname="gw1", now=NOW)
    store.own_key_path.write_bytes(other.own_key_path.read_bytes())
    assert "not the certificate's key" in (store.client_certificate(URI, hostname="gw1", now=NOW).new_because or "")


def test_expired_client_certificate_is_replaced(store: Pki) -> None:
    store.client_certificate(URI, hostname="gw1", now=NOW)
    renewed = store.client_certificate(URI, hostname="gw1", now=NOW + 3651 * DAY)
    assert (renewed.new_because or "").startswith("the old one is expired on")


# -- thumbprints ------------------------------------------------------------------------


def test_thumbprint_is_sha1_of_the_der_in_upper_case_hex() -> None:
    cert = certificate("plc1")
    assert thumbprint(cert) == hashlib.sha1(der(cert)).hexdigest().upper()
    info = pki.CertificateInfo.of(cert)
    assert info.sha256 == ":".join(f"{byte:02X}" for byte in hashlib.sha256(der(cert)).digest())


@pytest.mark.parametrize("text", ["ab" * 20, "AB:" * 19 + "AB", " " + "AB" * 20 + "\n", "ab" * 32])
def test_thumbprint_as_tools_print_it(text: str) -> None:
    assert parse_thumbprint(text) == text.replace(":", "").strip().upper()


@pytest.mark.parametrize("text", ["", "AB" * 19, "AB" * 21, "XY" * 20, "../etc/passwd"])
def test_not_a_thumbprint(text: str) -> None:
    with pytest.raises(PkiError, match="expected a SHA-1 thumbprint"):
        parse_thumbprint(text)


def test_first_certificate_of_a_chain() -> None:
    leaf, ca = certificate("plc1"), certificate("ca", ca=True, key=OTHER_KEY)
    assert first_certificate(der(leaf) + der(ca)) == der(leaf)
    assert first_certificate(der(leaf)) == der(leaf)
    short = bytes([0x30, 3, 1, 2, 3])
    assert first_certificate(short + b"rest") == short
    with pytest.raises(PkiError):
        first_certificate(b"\x04\x01x")


# -- checking server certificates -------------------------------------------------------


def test_unknown_server_is_rejected_with_the_command_that_trusts_it(store: Pki) -> None:
    server = certificate("PLC 7/line:2")
    with pytest.raises(UntrustedServerCertificate) as refused:
        store.check_server_certificate(server, now=NOW)
    message = str(refused.value)
    saved = store.root / "rejected" / "certs" / f"PLC-7-line-2_{thumbprint(server)}.der"
    assert "CN=PLC 7/line:2" in message
    assert f"SHA-1 thumbprint {thumbprint(server)}" in message
    assert f"edgeseal opcua trust --state-dir {store.root.parent} {thumbprint(server)}" in message
    assert str(saved) in message
    assert "\n" not in message
    assert saved.read_bytes() == der(server)
    assert refused.value.rejected_path == saved


def test_trust_by_thumbprint_moves_it_from_rejected_to_trusted(store: Pki) -> None:
    server = certificate("plc1")
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(server, now=NOW)
    result = store.trust_thumbprint(thumbprint(server).lower())
    assert not result.already_trusted
    assert result.certificate.path == store.trusted_dir / f"plc1_{thumbprint(server)}.der"
    assert list(store.rejected_dir.iterdir()) == []
    assert store.check_server_certificate(server, now=NOW).thumbprint == thumbprint(server)
    assert store.trust_thumbprint(thumbprint(server)).already_trusted


def test_trust_by_sha256(store: Pki) -> None:
    server = certificate("plc1")
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(server, now=NOW)
    store.trust_thumbprint(pki.CertificateInfo.of(server).sha256)
    store.check_server_certificate(server, now=NOW)


def test_unknown_thumbprint_names_what_rejected_holds(store: Pki) -> None:
    server = certificate("plc1")
    with pytest.raises(PkiError, match="it is empty"):
        store.trust_thumbprint("AB" * 20)
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(server, now=NOW)
    with pytest.raises(PkiError, match=f"no certificate with thumbprint {'AB' * 20} in .*{thumbprint(server)}"):
        store.trust_thumbprint("AB" * 20)


def test_another_certificate_with_the_same_name_is_not_trusted(store: Pki) -> None:
    store.trust(certificate("plc1"))
    impostor = certificate("plc1", key=OTHER_KEY)
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(impostor, now=NOW)


@pytest.mark.parametrize(
    "not_before, not_after, why",
    [
        (NOW - 30 * DAY, NOW - DAY, "expired on 2026-01-14 12:00 UTC (valid 2025-12-16 12:00 UTC to 2026-01-14"),
        (NOW + DAY, NOW + 30 * DAY, "not valid before 2026-01-16 12:00 UTC (now 2026-01-15 12:00 UTC)"),
    ],
    ids=["expired", "not yet valid"],
)
def test_trusted_certificate_out_of_date_is_refused_with_its_dates(
    store: Pki, not_before: dt.datetime, not_after: dt.datetime, why: str
) -> None:
    server = certificate("plc1", not_before=not_before, not_after=not_after)
    store.trust(server)
    with pytest.raises(ServerCertificateOutOfDate) as refused:
        store.check_server_certificate(server, now=NOW)
    assert why in str(refused.value)
    assert thumbprint(server) in str(refused.value)
    assert list(store.rejected_dir.iterdir()) == []


def test_certificate_issued_by_a_trusted_ca(store: Pki) -> None:
    ca = certificate("plant CA", key=OTHER_KEY, ca=True)
    server = certificate("plc1", issuer=(ca, OTHER_KEY))
    store.trust(ca)
    assert store.check_server_certificate(server, now=NOW).subject == "CN=plc1"


def test_is_trusted_has_no_side_effects(store: Pki) -> None:
    ca = certificate("plant CA", key=OTHER_KEY, ca=True)
    server, stranger = certificate("plc1", issuer=(ca, OTHER_KEY)), certificate("plc2")
    store.trust(ca)
    assert store.is_trusted(ca) and store.is_trusted(server)
    assert not store.is_trusted(stranger)
    assert list(store.rejected_dir.iterdir()) == []


@pytest.mark.parametrize(
    "ca, key_cert_sign",
    [(False, False), (False, True), (True, False)],
    # application certificates sign themselves (keyCertSign) without being CAs
    ids=["plain certificate", "self-signed application certificate", "CA without keyCertSign"],
)
def test_issuer_must_be_a_ca(store: Pki, ca: bool, key_cert_sign: bool) -> None:
    not_a_ca = certificate("plant CA", key=OTHER_KEY, ca=ca, key_cert_sign=key_cert_sign)
    store.trust(not_a_ca)
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(certificate("plc1", issuer=(not_a_ca, OTHER_KEY)), now=NOW)


def test_issuer_name_without_its_signature_is_not_trusted(store: Pki) -> None:
    ca = certificate("plant CA", key=OTHER_KEY, ca=True)
    store.trust(ca)
    forged = certificate("plc1", issuer=(ca, KEY))  # names the CA, signed by another key
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(forged, now=NOW)


def test_expired_ca_is_refused_with_its_dates(store: Pki) -> None:
    ca = certificate("plant CA", key=OTHER_KEY, ca=True, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    store.trust(ca)
    with pytest.raises(ServerCertificateOutOfDate, match="its issuer CN=plant CA .* is expired on 2026-01-14"):
        store.check_server_certificate(certificate("plc1", issuer=(ca, OTHER_KEY)), now=NOW)


def test_rejected_certificates_are_bounded(store: Pki) -> None:
    for n in range(pki.KEEP_REJECTED + 3):
        with pytest.raises(UntrustedServerCertificate):
            store.check_server_certificate(certificate(f"plc{n}"), now=NOW)
    kept = sorted(p.name.split("_")[0] for p in store.rejected_dir.iterdir())
    assert len(kept) == pki.KEEP_REJECTED
    assert f"plc{pki.KEEP_REJECTED + 2}" in kept


# -- trusting files and listing -----------------------------------------------------------


def test_trust_der_and_pem_files(store: Pki, tmp_path: Path) -> None:
    one, two, three = certificate("plc1"), certificate("plc2"), certificate("plc3", key=OTHER_KEY)
    (tmp_path / "one.der").write_bytes(der(one))
    (tmp_path / "two.pem").write_bytes(pem(two) + pem(three))
    assert [r.certificate.subject for r in store.trust_file(tmp_path / "one.der")] == ["CN=plc1"]
    assert [r.certificate.subject for r in store.trust_file(tmp_path / "two.pem")] == ["CN=plc2", "CN=plc3"]
    for cert in (one, two, three):
        store.check_server_certificate(cert, now=NOW)
    assert all(p.suffix == ".der" for p in store.trusted_dir.iterdir())


@pytest.mark.parametrize(
    "content, message",
    [(None, "cannot read: No such file or directory"), (b"hello", "not a DER or PEM certificate")],
    ids=["missing", "not a certificate"],
)
def test_trust_unusable_file(store: Pki, tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "server.der"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PkiError, match=message) as refused:
        store.trust_file(path)
    assert str(path) in str(refused.value)


def test_listing(store: Pki) -> None:
    assert store.listing() == pki.Listing(None, [], [], [])
    own = store.client_certificate(URI, hostname="gw1", now=NOW).certificate
    trusted, rejected = certificate("plc1"), certificate("plc2", key=OTHER_KEY)
    store.trust(trusted)
    with pytest.raises(UntrustedServerCertificate):
        store.check_server_certificate(rejected, now=NOW)
    (store.trusted_dir / "notes.txt").write_text("not a certificate")
    listing = store.listing()
    assert listing.own is not None and listing.own.thumbprint == thumbprint(own)
    assert listing.own.application_uri == URI
    assert [c.thumbprint for c in listing.trusted] == [thumbprint(trusted)]
    assert [c.thumbprint for c in listing.rejected] == [thumbprint(rejected)]
    assert listing.unreadable == [store.trusted_dir / "notes.txt"]
    as_json = listing.trusted[0].as_json()
    assert as_json["not_before"] == (NOW - DAY).isoformat()
    assert as_json["path"] == str(store.trusted_dir / f"plc1_{thumbprint(trusted)}.der")
