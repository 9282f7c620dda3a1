"""Shared helpers: a CA, the CLI run in-process, byte-level tampering, and TPM vendors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning.ca import CertificateAuthority, build_csr, create_ca
from provisioning.cli import PASSPHRASE_ENV, main
from provisioning.swtpm import SoftwareTpm, SwtpmFiles, manufacture

PASSPHRASE = "a-long-enough-test-passphrase"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run edgeseal-provision in-process with the CA passphrase in its default variable."""
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)

    def _run(*argv: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


@pytest.fixture
def passphrase() -> str:
    return PASSPHRASE


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return create_ca("Test Factory")


@pytest.fixture
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def csr(device_key: ec.EllipticCurvePrivateKey):
    return build_csr(device_key, "GW-0001", "EG-200")


def _tamper(der: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and old in der
    return der.replace(old, new, 1)


@pytest.fixture
def tamper():
    """Change one occurrence of some bytes, keeping the DER well-formed (same length)."""
    return _tamper


@pytest.fixture(scope="session")
def other_vendor_tpm(tmp_path_factory: pytest.TempPathFactory) -> SwtpmFiles:
    """A second manufactured TPM: its own EKs, certified by another "TPM vendor" CA
    (same names as the first one's, other keys). Clone it to run it."""
    return manufacture(tmp_path_factory.mktemp("other-vendor"))


@pytest.fixture
def vendor_bundle(swtpm: SoftwareTpm, tmp_path) -> Path:
    """The `swtpm` fixture's vendor root and EK-issuing intermediate in one PEM file."""
    bundle = tmp_path / "tpm-vendor.pem"
    bundle.write_bytes(swtpm.files.vendor_root_cert.read_bytes() + swtpm.files.ek_issuer_cert.read_bytes())
    return bundle
