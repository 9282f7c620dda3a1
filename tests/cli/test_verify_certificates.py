"""`edgeseal verify` on certificates: an unknown CA, validity at seal time, the wrong key,
key usage and revocation (`--crl`).

Each case runs the command in-process on a sealed history and checks the exit code
(1 a finding, 2 unusable input) and the one-line message, in the text report and in
`--json`. Histories are sealed under certificates made here with cryptography's
builders, by a test CA whose keys the tests keep, so they can also sign CRLs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certificates
import pytest
from certificates import DEVICE_USAGE, NO_USAGE
from cli_runner import Result, in_process
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fixtures import SealedState, export, make_sealed_state, mutate_bundle, replace

from agent.keys.software import SoftwareSigner
from agent.trust import cose
from agent.trust.bundle import Batch, Bundle, decode_bundle
from agent.trust.payloads import SEAL_CONTENT_TYPE
from provisioning.ca import CertificateAuthority, build_csr, create_ca, issue_device_certificate
from provisioning.files import write_device_key, write_public

DEVICE = "GW-CERT-1"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


# -- running the command ---------------------------------------------------------------


class VerifyResult(Result):
    def findings(self) -> list[str]:
        return [line.removeprefix("  FINDING     ") for line in self.out.splitlines() if "FINDING" in line]


@pytest.fixture
def edgeseal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`edgeseal verify ... --jobs 1` in-process, from an empty directory; an exception
    escaping main() is what a user would see as a traceback."""
    monkeypatch.chdir(tmp_path)
    verify = in_process(capsys, "verify", "bundle.cbor", result=VerifyResult)

    def run(bundle: bytes, ca: Path, *options: str | Path) -> VerifyResult:
        Path("bundle.cbor").write_bytes(bundle)
        result = verify("--ca", ca, "--jobs", "1", *options)
        assert "Traceback" not in result.out + result.err, result.err
        return result

    return run


def assert_finding(edgeseal, bundle: bytes, ca: Path, where: str, *fragments: str, options: tuple = ()) -> None:
    """Exit 1 and exactly one finding at `where` that holds every fragment, in the text
    report and in --json alike."""
    text = edgeseal(bundle, ca, *options)
    assert text.code == 1, f"exit {text.code}:\n{text.out}{text.err}"
    assert "bundle.cbor: INVALID" in text.out
    lines = [f for f in text.findings() if f.startswith(f"{where}: ") and all(x in f for x in fragments)]
    assert len(lines) == 1, f"expected one {where}: ...{fragments}..., found {text.findings()}"
    report = json.loads(edgeseal(bundle, ca, *options, "--json").out)
    assert report["valid"] is False
    assert {"where": where, "message": lines[0].removeprefix(f"{where}: ")} in report["findings"]


def assert_unusable(result: VerifyResult, *names: str) -> None:
    assert result.code == 2, f"exit {result.code}:\n{result.out}{result.err}"
    assert not result.out, "an unusable input must not give a report"
    for name in names:
        assert name in result.err, f"{name!r} not in {result.err!r}"


# -- certificates and sealed histories -------------------------------------------------


def device_certificate(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey,
    *,
    usage: dict[str, bool] | None = DEVICE_USAGE,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
) -> x509.Certificate:
    """This file's device, valid from yesterday for a year unless told otherwise."""
    return certificates.device_certificate(ca, key, DEVICE, usage=usage, not_before=not_before, not_after=not_after)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def sealed_under(
    directory: Path, ca: CertificateAuthority, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> SealedState:
    """A history sealed now by `key` under `cert`. The identity files go where the
    fixtures' demo identity would be; make_demo_identity reuses an identity it finds."""
    directory.mkdir(parents=True)
    write_device_key(directory / "device-key.pem", key)
    write_public(directory / "device-chain.pem", pem(cert) + pem(ca.issuing_cert))
    write_public(directory / "ca.pem", pem(ca.root_cert))
    (directory / "demo-ca").mkdir()
    return make_sealed_state(directory, device_id=DEVICE, batches_per_checkpoint=1, checkpoints_per_boot=2)


@dataclass(frozen=True)
class Device:
    ca: CertificateAuthority
    cert: x509.Certificate
    state: SealedState
    bundle: bytes


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("Test Factory")


@pytest.fixture(scope="module")
def device(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> Device:
    """A genuine device: provisioning's own certificate, two batches, two checkpoints."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_device_certificate(ca, build_csr(key, DEVICE), not_before=NOW - DAY)
    state = sealed_under(tmp_path_factory.mktemp("device") / "id", ca, key, cert)
    return Device(ca, cert, state, export(state))


def sealed_bundle(tmp_path: Path, ca: CertificateAuthority, **certificate: Any) -> bytes:
    """A history sealed under a device certificate made with `certificate`'s options."""
    key = ec.generate_private_key(ec.SECP256R1())
    return export(sealed_under(tmp_path / "id", ca, key, device_certificate(ca, key, **certificate)))


def test_the_genuine_device_verifies(edgeseal, device: Device) -> None:
    """The baseline for every case below."""
    result = edgeseal(device.bundle, device.state.ca_path)
    assert result.code == 0 and "bundle.cbor: VALID" in result.out, result.out + result.err
    assert "  revocation  not checked (no CRL given)" in result.out


# -- unknown CA -------------------------------------------------------------------------


@pytest.mark.parametrize("organization", ["Other Factory", "Test Factory"], ids=["other names", "same names"])
def test_a_chain_to_another_root_is_an_unknown_ca(edgeseal, device: Device, tmp_path: Path, organization: str) -> None:
    """Another CA's root, whether its names differ or are the very same (other keys)."""
    other = tmp_path / "other-root.pem"
    other.write_bytes(pem(create_ca(organization).root_cert))
    issuing = device.ca.issuing_cert.subject.rfc4514_string()
    assert_finding(edgeseal, device.bundle, other, "certs", f"no trusted root issued {issuing!r}")


# -- validity at seal time ----------------------------------------------------------------


def test_a_certificate_expired_when_the_data_was_signed(edgeseal, ca: CertificateAuthority, tmp_path: Path) -> None:
    bundle = sealed_bundle(tmp_path, ca, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    expected = "had expired when data was signed at", f"(notAfter {NOW - DAY:%Y-%m-%d}"
    # each run of seals and each checkpoint signed outside the validity is a finding of its own
    assert_finding(edgeseal, bundle, tmp_path / "id" / "ca.pem", "batches[0..1]", "b=1..2:", *expected)
    assert_finding(edgeseal, bundle, tmp_path / "id" / "ca.pem", "checkpoints[0]", *expected)


def test_a_certificate_not_yet_valid_when_the_data_was_signed(
    edgeseal, ca: CertificateAuthority, tmp_path: Path
) -> None:
    bundle = sealed_bundle(tmp_path, ca, not_before=NOW + DAY)
    expected = "was not yet valid when data was signed at", f"(notBefore {NOW + DAY:%Y-%m-%d}"
    assert_finding(edgeseal, bundle, tmp_path / "id" / "ca.pem", "batches[0..1]", "b=1..2:", *expected)
    assert_finding(edgeseal, bundle, tmp_path / "id" / "ca.pem", "checkpoints[0]", *expected)


# -- the wrong key ------------------------------------------------------------------------


def test_a_certificate_for_another_key_does_not_cover_the_seals(edgeseal, device: Device) -> None:
    """The CA certified this device id for another key too: the seals' kid is not that key's."""
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = device_certificate(device.ca, other_key).public_bytes(serialization.Encoding.DER)
    bundle = mutate_bundle(device.bundle, lambda b: replace(b, certs=[other, *b.certs[1:]]))
    ca = device.state.ca_path
    assert_finding(edgeseal, bundle, ca, "batches[0].seal (b=1)", "kid is not the device certificate's key id")
    assert_finding(edgeseal, bundle, ca, "checkpoints[0] (size=1)", "kid is not the device certificate's key id")


def test_a_seal_signed_by_another_key_under_the_device_kid(edgeseal, device: Device) -> None:
    msg = cose.decode(decode_bundle(device.bundle).batches[1].seal, SEAL_CONTENT_TYPE, x5chain_allowed=True)
    impostor = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()), [])
    signature = asyncio.run(impostor.sign_digest(cose.digest_to_sign(msg.protected_bytes, msg.payload)))
    forged = cose.assemble(msg.protected_bytes, msg.payload, signature)

    def swap(b: Bundle) -> Bundle:
        batch = b.batches[1]
        return replace(b, batches=[b.batches[0], Batch(forged, batch.salt_key, batch.readings)])

    bundle = mutate_bundle(device.bundle, swap)
    ca = device.state.ca_path
    assert_finding(edgeseal, bundle, ca, "batches[1].seal (b=2)", "signature does not verify with the device key")


# -- key usage ----------------------------------------------------------------------------

KEY_USAGE_CASES = {
    "no keyUsage extension": (None, "the device certificate has no keyUsage extension: it must allow digitalSignature"),
    "keyUsage without digitalSignature": (
        {**NO_USAGE, "key_agreement": True},
        "the device certificate's keyUsage lacks digitalSignature: its key may not sign seals",
    ),
    "keyUsage of a CA as well": (
        {**NO_USAGE, "digital_signature": True, "key_cert_sign": True},
        "the device certificate's keyUsage allows keyCertSign: a CA's usage, not a device's",
    ),
}


@pytest.mark.parametrize("case", KEY_USAGE_CASES)
def test_the_device_certificate_must_allow_digital_signature(
    edgeseal, ca: CertificateAuthority, tmp_path: Path, case: str
) -> None:
    usage, message = KEY_USAGE_CASES[case]
    bundle = sealed_bundle(tmp_path, ca, usage=usage)
    assert_finding(edgeseal, bundle, tmp_path / "id" / "ca.pem", "certs", message)


# -- revocation -------------------------------------------------------------------------


def crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[tuple[int, dt.datetime]] = (),
    *,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.CertificateRevocationList:
    """A CRL of `issuer`, signed with `key`, listing `revoked` (serial number, date) for
    key compromise; `extensions` are added as critical."""
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
    builder = builder.last_update(NOW).next_update(NOW + 7 * DAY)
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256())


def write_crl(
    name: str,
    revocations: x509.CertificateRevocationList,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> Path:
    Path(name).write_bytes(revocations.public_bytes(encoding))
    return Path(name)


def issuing_crl(device: Device, *revoked: tuple[int, dt.datetime]) -> x509.CertificateRevocationList:
    return crl(device.ca.issuing_cert, device.ca.issuing_key, revoked)


def serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_a_revoked_device_certificate_is_a_finding(edgeseal, device: Device, encoding: serialization.Encoding) -> None:
    """Revoked after the data was signed, and still a finding: a seal's time is the
    device's own claim, which a stolen key can make as it likes."""
    revoked_at = NOW + dt.timedelta(hours=1)
    path = write_crl("issuing.crl", issuing_crl(device, (device.cert.serial_number, revoked_at)), encoding)
    subject = device.cert.subject.rfc4514_string()
    expected = (
        f"{subject!r} (serial {serial(device.cert)}) is revoked: the CRL of "
        f"{device.ca.issuing_cert.subject.rfc4514_string()!r} lists it as revoked on {revoked_at.isoformat()}"
        " (keyCompromise)"
    )
    assert_finding(edgeseal, device.bundle, device.state.ca_path, "certs", expected, options=("--crl", path))
    report = json.loads(edgeseal(device.bundle, device.state.ca_path, "--crl", path, "--json").out)
    assert [(c["serial"], c["revoked"], c["revoked_at"]) for c in report["revocation"]] == [
        (serial(device.cert), True, revoked_at.isoformat()),
        (serial(device.ca.issuing_cert), False, None),
    ]


def test_a_revoked_issuing_ca_is_a_finding(edgeseal, device: Device) -> None:
    issuing = device.ca.issuing_cert
    revoked_at = NOW - DAY
    path = write_crl("root.crl", crl(device.ca.root_cert, device.ca.root_key, [(issuing.serial_number, revoked_at)]))
    expected = f"{issuing.subject.rfc4514_string()!r} (serial {serial(issuing)}) is revoked"
    assert_finding(
        edgeseal,
        device.bundle,
        device.state.ca_path,
        "certs",
        expected,
        revoked_at.isoformat(),
        options=("--crl", path),
    )


def test_certificates_the_crls_do_not_list_verify(edgeseal, device: Device) -> None:
    """A CRL speaks for its issuer's certificates only: the root's listing the device's
    serial number says nothing about a certificate the root did not issue."""
    other_serial = device.cert.serial_number + 1
    issuing = write_crl("issuing.crl", issuing_crl(device, (other_serial, NOW)))
    root = write_crl("root.crl", crl(device.ca.root_cert, device.ca.root_key, [(device.cert.serial_number, NOW)]))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", issuing, "--crl", root)
    assert result.code == 0 and "bundle.cbor: VALID" in result.out, result.out + result.err
    issuing_name = device.ca.issuing_cert.subject.rfc4514_string()
    assert f"{device.cert.subject.rfc4514_string()}: not revoked (CRL of {issuing_name}, issued {NOW.isoformat()})" in (
        result.out
    )


def test_a_certificate_without_a_crl_of_its_issuer_is_reported_unchecked(edgeseal, device: Device) -> None:
    path = write_crl("issuing.crl", issuing_crl(device))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", path)
    assert result.code == 0, result.out + result.err
    root = device.ca.root_cert.subject.rfc4514_string()
    assert f"{device.ca.issuing_cert.subject.rfc4514_string()}: not checked (no CRL of {root} given)" in result.out


def test_a_crl_of_a_ca_outside_the_chain_is_unusable(edgeseal, device: Device) -> None:
    other = create_ca("Other Factory")
    path = write_crl("other.crl", crl(other.issuing_cert, other.issuing_key, [(device.cert.serial_number, NOW)]))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", path)
    assert_unusable(result, "other.crl: unusable CRL: issued by", "which is no CA of the device's certificate chain")


def test_a_crl_in_the_issuing_cas_name_but_signed_by_another_key_is_unusable(edgeseal, device: Device) -> None:
    """Another CA with the very same names: the name matches, the signature does not."""
    twin = create_ca("Test Factory")
    assert twin.issuing_cert.subject == device.ca.issuing_cert.subject
    path = write_crl("twin.crl", crl(twin.issuing_cert, twin.issuing_key, [(device.cert.serial_number, NOW)]))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", path)
    assert_unusable(result, "twin.crl: unusable CRL:", "its signature does not verify with that CA's key")


def test_a_crl_signed_by_the_issuing_ca_under_another_name_is_unusable(edgeseal, device: Device) -> None:
    renamed = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the issuing CA")])
    signed = x509.CertificateRevocationListBuilder().issuer_name(renamed).last_update(NOW).next_update(NOW + DAY)
    path = write_crl("renamed.crl", signed.sign(device.ca.issuing_key, hashes.SHA256()))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", path)
    assert_unusable(result, "renamed.crl: unusable CRL: issued by 'CN=not the issuing CA'")


def test_a_delta_crl_is_unusable(edgeseal, device: Device) -> None:
    delta = crl(device.ca.issuing_cert, device.ca.issuing_key, extensions=[x509.DeltaCRLIndicator(1)])
    path = write_crl("delta.crl", delta)
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", path)
    assert_unusable(result, "delta.crl: not a usable CRL: has critical extension(s) DeltaCRLIndicator")


CRL_FILES = {
    "empty": (b"", "neither a PEM nor a DER X.509 CRL"),
    "text": (b"nothing is revoked\n", "neither a PEM nor a DER X.509 CRL"),
    "truncated PEM": (b"-----BEGIN X509 CRL-----\nMIIB\n", "neither a PEM nor a DER X.509 CRL"),
    "bad base64": (b"-----BEGIN X509 CRL-----\nAAAA!!!!\n-----END X509 CRL-----\n", "neither a PEM nor a DER"),
}


@pytest.mark.parametrize("name", CRL_FILES)
def test_a_file_that_is_not_a_crl_is_unusable(edgeseal, device: Device, name: str) -> None:
    data, message = CRL_FILES[name]
    Path("bad.crl").write_bytes(data)
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", "bad.crl")
    assert_unusable(result, "bad.crl: not a usable CRL:", message)


def test_a_certificate_given_as_a_crl_is_unusable(edgeseal, device: Device) -> None:
    Path("cert.pem").write_bytes(pem(device.cert))
    result = edgeseal(device.bundle, device.state.ca_path, "--crl", "cert.pem")
    assert_unusable(result, "cert.pem: not a usable CRL: expected one PEM block '-----BEGIN X509 CRL-----', found 0")


def test_a_truncated_der_crl_is_unusable(edgeseal, device: Device) -> None:
    der = issuing_crl(device, (device.cert.serial_number, NOW)).public_bytes(serialization.Encoding.DER)
    Path("cut.crl").write_bytes(der[: len(der) // 2])
    assert_unusable(edgeseal(device.bundle, device.state.ca_path, "--crl", "cut.crl"), "cut.crl: not a usable CRL")


@pytest.mark.parametrize(("name", "make"), [("missing.crl", None), ("crls", Path.mkdir)])
def test_a_crl_that_cannot_be_read_is_unusable(
    edgeseal, device: Device, name: str, make: Callable[[Path], None] | None
) -> None:
    if make:
        make(Path(name))
    assert_unusable(edgeseal(device.bundle, device.state.ca_path, "--crl", name), f"{name}: cannot read")
