"""edgeseal-provision end to end, in-process, with real files."""

from __future__ import annotations

import asyncio
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.keys.software import SoftwareSigner
from provisioning.cli import PASSPHRASE_ENV


@dataclass
class Factory:
    ca_dir: Path
    key: Path
    csr: Path
    cert: Path
    chain: Path


@pytest.fixture
def factory(tmp_path, run) -> Factory:
    """The whole factory flow with a software key (so a development CA); each step must succeed."""
    f = Factory(
        tmp_path / "ca",
        tmp_path / "device-key.pem",
        tmp_path / "device.csr",
        tmp_path / "device.pem",
        tmp_path / "device-chain.pem",
    )
    assert run("ca", "init", "--dir", f.ca_dir, "--org", "Test Factory", "--development").code == 0
    assert run("key", "create", "--software", "-o", f.key).code == 0
    assert run("csr", "--key", f.key, "--device-id", "GW-0001", "--model", "EG-200", "-o", f.csr).code == 0
    assert run("ca", "issue", "--dir", f.ca_dir, "--csr", f.csr, "-o", f.cert, "--chain-out", f.chain).code == 0
    return f


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_chain_verifies(factory, run):
    result = run("inspect", factory.chain, "--ca", factory.ca_dir / "root.pem")
    assert result.code == 0, result.err
    assert "certificate 0: CN=GW-0001,serialNumber=GW-0001,OU=EG-200" in result.out
    assert "chains to" in result.out


def test_issued_chain_is_what_the_agent_loads(factory):
    signer = SoftwareSigner.from_files(factory.key, factory.chain)  # checks the key matches
    assert len(signer.certificate_chain) == 2
    assert len(asyncio.run(signer.sign_digest(bytes(32)))) == 64


def test_cert_out_is_the_device_certificate(factory):
    cert = x509.load_pem_x509_certificate(factory.cert.read_bytes())
    assert cert == x509.load_pem_x509_certificates(factory.chain.read_bytes())[0]


def test_inspect_without_ca_only_describes(factory, run):
    result = run("inspect", factory.cert)
    assert result.code == 0 and "certificate 0:" in result.out and "chains to" not in result.out


def test_tampered_certificate_fails_inspect(factory, run, tamper):
    certs = x509.load_pem_x509_certificates(factory.chain.read_bytes())
    der = tamper(certs[0].public_bytes(serialization.Encoding.DER), b"GW-0001", b"GW-0666")
    forged = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    factory.chain.write_bytes(forged + certs[1].public_bytes(serialization.Encoding.PEM))
    result = run("inspect", factory.chain, "--ca", factory.ca_dir / "root.pem")
    assert result.code == 1
    assert "certificate 0: " in result.err and "its signature does not verify" in result.err


def test_chain_to_another_root_fails_inspect(factory, run, tmp_path):
    assert run("ca", "init", "--dir", tmp_path / "other", "--org", "Other").code == 0
    result = run("inspect", factory.chain, "--ca", tmp_path / "other" / "root.pem")
    assert result.code == 1 and "does not chain to" in result.err


def test_software_key_is_0600(factory):
    assert _mode(factory.key) == 0o600


def test_world_readable_key_is_refused(factory, run, tmp_path):
    factory.key.chmod(0o644)
    result = run("csr", "--key", factory.key, "--device-id", "GW-0001", "-o", tmp_path / "x.csr")
    assert result.code == 2
    assert "chmod 600" in result.err and "Traceback" not in result.err


def test_key_is_not_overwritten_without_force(factory, run):
    before = factory.key.read_bytes()
    result = run("key", "create", "--software", "-o", factory.key)
    assert result.code == 1 and "--force" in result.err
    assert factory.key.read_bytes() == before


def test_forced_key_replaces_a_readable_file_with_a_private_one(factory, run):
    factory.key.chmod(0o644)
    assert run("key", "create", "--software", "-o", factory.key, "--force").code == 0
    assert _mode(factory.key) == 0o600


def test_ca_init_refuses_existing_ca_and_force_replaces_it(factory, run):
    root = factory.ca_dir / "root.pem"
    before = root.read_bytes()
    result = run("ca", "init", "--dir", factory.ca_dir, "--org", "Again")
    assert result.code == 1 and "already exists" in result.err
    assert root.read_bytes() == before
    assert run("ca", "init", "--dir", factory.ca_dir, "--org", "Again", "--force").code == 0
    assert root.read_bytes() != before


def test_wrong_passphrase_exits_2_without_traceback(factory, run, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "not-the-right-passphrase")
    result = run("ca", "issue", "--dir", factory.ca_dir, "--csr", factory.csr, "-o", factory.cert)
    assert result.code == 2
    assert result.err.startswith("edgeseal-provision: ")
    assert "wrong passphrase" in result.err and "Traceback" not in result.err


def test_verbose_shows_the_traceback(factory, run, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "not-the-right-passphrase")
    result = run("ca", "issue", "--dir", factory.ca_dir, "--csr", factory.csr, "-o", factory.cert, "--verbose")
    assert result.code == 2 and "Traceback" in result.err


def test_passphrase_from_file_or_another_variable(factory, run, tmp_path, monkeypatch, passphrase):
    secret = tmp_path / "passphrase"
    secret.write_text(f"{passphrase}\n")  # the trailing newline is not part of it
    monkeypatch.delenv(PASSPHRASE_ENV)
    args = ("ca", "issue", "--dir", factory.ca_dir, "--csr", factory.csr, "-o", tmp_path / "c.pem")
    assert run(*args, "--passphrase-file", secret).code == 0
    monkeypatch.setenv("FACTORY_SECRET", passphrase)
    assert run(*args, "--passphrase-env", "FACTORY_SECRET").code == 0


def test_missing_passphrase_is_bad_usage(run, tmp_path, monkeypatch):
    monkeypatch.delenv(PASSPHRASE_ENV)
    result = run("ca", "init", "--dir", tmp_path / "ca", "--org", "Test Factory")
    assert result.code == 2 and f"set {PASSPHRASE_ENV}" in result.err
    assert not (tmp_path / "ca").exists()


def test_short_passphrase_is_bad_usage(run, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "1234")
    result = run("ca", "init", "--dir", tmp_path / "ca", "--org", "Test Factory")
    assert result.code == 2 and "at least 16" in result.err


def test_csr_with_bad_signature_is_refused(factory, run, tamper):
    csr = x509.load_pem_x509_csr(factory.csr.read_bytes())
    factory.csr.write_bytes(tamper(csr.public_bytes(serialization.Encoding.DER), b"GW-0001", b"GW-0666"))
    result = run("ca", "issue", "--dir", factory.ca_dir, "--csr", factory.csr, "-o", factory.cert)
    assert result.code == 2 and "signature does not verify" in result.err


def test_unreadable_csr_is_refused(factory, run):
    factory.csr.write_text("not a csr")
    result = run("ca", "issue", "--dir", factory.ca_dir, "--csr", factory.csr, "-o", factory.cert)
    assert result.code == 2 and "not a PEM or DER certificate signing request" in result.err


def test_bad_device_id_is_bad_usage(factory, run, tmp_path):
    result = run("csr", "--key", factory.key, "--device-id", "gw_0001", "-o", tmp_path / "x.csr")
    assert result.code == 2 and "device id" in result.err


@pytest.mark.parametrize(
    "argv, message",
    [
        ((), "required: COMMAND"),
        (("bogus",), "invalid choice"),
        (("ca", "init", "--org", "X"), "required: --dir"),
        (("key", "create", "-o", "k.pem"), "--software"),
        (("inspect",), "a chain file (CHAIN) or the TPM key (--tpm)"),
        (("inspect", "c.pem", "--tpm"), "one of the two"),
        (("csr", "--tpm", "--key", "k.pem", "--device-id", "GW-1", "-o", "x"), "not allowed with"),
        (("tpm", "keygen", "--device-id", "GW-1", "--tcti", "/dev/tpm0"), "--tcti: expected device:PATH"),
        (("tpm", "keygen", "--device-id", "GW-1", "--handle", "0x81010001"), "TCG-reserved RSA EK"),
        (("tpm", "keygen", "--device-id", "GW-1", "--handle", "eighty"), "--handle: expected an owner persistent"),
        (("tpm", "keygen", "--device-id", "gw_1"), "--device-id: expected 1-64 letters"),
        (
            ("ca", "issue", "--dir", "d", "--csr", "c", "-o", "o", "--passphrase-file", "f", "--passphrase-env", "V"),
            "not allowed with",
        ),
    ],
)
def test_bad_usage_exits_2(run, argv, message):
    result = run(*argv)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_missing_input_file_exits_2(run, tmp_path):
    result = run("inspect", tmp_path / "absent.pem")
    assert result.code == 2 and "absent.pem" in result.err


def test_help_exits_0(run):
    result = run("key", "create", "--help")
    assert result.code == 0 and "tpm keygen" in result.out


@pytest.mark.parametrize(
    "command",
    [("tpm", "keygen"), ("tpm", "attest"), ("tpm", "activate"), ("ca", "challenge"), ("install",), ("enroll",)]
    + [("secret", "seal"), ("chain-key", "create"), ("chain-key", "show")],
)
def test_every_command_has_help(run, command):
    result = run(*command, "--help")
    assert result.code == 0 and "usage: edgeseal-provision" in result.out
