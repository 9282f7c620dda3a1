"""`edgeseal opcua trust` and `edgeseal opcua certs`, in-process: a certificate the driver
refused is trusted by the thumbprint its message gave, files are trusted, a server's
certificate is trusted only when confirmed, and every bad input is one line on stderr
with exit 2 (1 when a server cannot be read or does not present what was expected)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import in_process, one_line_error
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from opcua_servers import OpcUaServer, ServerFarm, ServerSpec, make_certificate

from drivers.opcua.pki import Pki, UntrustedServerCertificate, thumbprint

ROOT = Path(__file__).resolve().parents[2]
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def edgeseal(capsys: pytest.CaptureFixture[str]):
    """`edgeseal ...` in-process; an exception escaping main() is a traceback."""
    return in_process(capsys)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def server_certificate(common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:{common_name}")]), False)
        .sign(KEY, hashes.SHA256())
    )


def refused_by_driver(state: Path, cert: x509.Certificate) -> str:
    """What the driver does with an unknown server: returns the command its message gives."""
    with pytest.raises(UntrustedServerCertificate) as refused:
        Pki(state / "pki").check_server_certificate(cert)
    return refused.value.command


# -- trusting ---------------------------------------------------------------------------


def test_the_command_in_the_refusal_trusts_the_server(edgeseal, state: Path) -> None:
    cert = server_certificate("plc1")
    command = refused_by_driver(state, cert)
    assert command.startswith("edgeseal opcua trust ")
    result = edgeseal(*command.split()[1:])
    assert result.code == 0, result
    assert result.out.startswith("trusted:\n  CN=plc1\n")
    assert thumbprint(cert) in result.out
    Pki(state / "pki").check_server_certificate(cert)
    assert list((state / "pki" / "rejected" / "certs").iterdir()) == []

    again = edgeseal(*command.split()[1:])
    assert again.code == 0 and again.out.startswith("already trusted:")


def test_trust_files(edgeseal, state: Path, tmp_path: Path) -> None:
    one, two = server_certificate("plc1"), server_certificate("plc2")
    (tmp_path / "plc1.der").write_bytes(one.public_bytes(serialization.Encoding.DER))
    (tmp_path / "plcs.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (one, two)))
    first = edgeseal("opcua", "trust", "--state-dir", state, tmp_path / "plc1.der")
    assert first.code == 0 and first.out.count("trusted:") == 1
    both = edgeseal("opcua", "trust", "--state-dir", state, tmp_path / "plcs.pem")
    assert both.code == 0
    assert both.out.count("already trusted:") == 1 and both.out.count("\ntrusted:") == 1
    for cert in (one, two):
        Pki(state / "pki").check_server_certificate(cert)


# -- trusting a server by its URL ---------------------------------------------------------


@pytest.fixture
def secured(opcua_servers: ServerFarm, tmp_path: Path) -> tuple[OpcUaServer, x509.Certificate]:
    files = make_certificate(tmp_path)
    spec = ServerSpec(
        security=("NoSecurity", "Basic256Sha256_SignAndEncrypt", "Aes256Sha256RsaPss_Sign"),
        certificate=str(files.certificate),
        private_key=str(files.private_key),
    )
    return opcua_servers.start(spec), x509.load_der_x509_certificate(files.certificate.read_bytes())


def test_server_certificate_is_shown_then_trusted_when_confirmed(edgeseal, state: Path, secured) -> None:
    server, cert = secured
    shown = edgeseal("opcua", "trust", "--state-dir", state, server.url)
    assert shown.code == 1, shown
    assert shown.out.startswith(f"{server.url} presents:\n  CN=edgeseal test server\n")
    assert shown.out.count("SHA-1 thumbprint") == 1  # one certificate for all its endpoints
    assert f"SHA-1 thumbprint  {thumbprint(cert)}" in shown.out
    assert Pki(state / "pki").listing().trusted == []
    confirm = [line.strip() for line in shown.out.splitlines() if line.strip().startswith("edgeseal opcua trust")]
    assert confirm == [f"edgeseal opcua trust --state-dir {state} {server.url} --thumbprint {thumbprint(cert)}"]

    trusted = edgeseal(*confirm[0].split()[1:])
    assert trusted.code == 0, trusted
    assert "\ntrusted:\n  CN=edgeseal test server" in trusted.out
    Pki(state / "pki").check_server_certificate(cert)

    again = edgeseal("opcua", "trust", "--state-dir", state, server.url)
    assert again.code == 0 and again.out.endswith("\ntrusted already\n"), again


def test_server_certificate_trusted_with_yes(edgeseal, state: Path, secured) -> None:
    server, cert = secured
    assert edgeseal("opcua", "trust", "--state-dir", state, server.url, "--yes").code == 0
    Pki(state / "pki").check_server_certificate(cert)


def test_server_presents_another_thumbprint(edgeseal, state: Path, secured) -> None:
    server, cert = secured
    result = edgeseal("opcua", "trust", "--state-dir", state, server.url, "--thumbprint", "AB" * 20)
    one_line_error(result, 1, f"no certificate of the server has thumbprint {'AB' * 20}", thumbprint(cert))
    assert Pki(state / "pki").listing().trusted == []


def test_server_without_certificate(edgeseal, state: Path, opcua_servers: ServerFarm) -> None:
    server = opcua_servers.start(ServerSpec())
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, server.url, "--yes"), 1, "presents no certificate")


# -- listing ----------------------------------------------------------------------------


def test_certs_lists_own_trusted_and_rejected(edgeseal, state: Path) -> None:
    own = Pki(state / "pki").client_certificate("urn:gw1:edgeseal", hostname="gw1").certificate
    trusted, rejected = server_certificate("plc1"), server_certificate("plc2")
    Pki(state / "pki").trust(trusted)
    refused_by_driver(state, rejected)

    text = edgeseal("opcua", "certs", "--state-dir", state)
    assert text.code == 0, text
    own_part, rest = text.out.split("trusted (1):")
    trusted_part, rejected_part = rest.split("rejected (1):")
    assert "CN=edgeseal@gw1, O=edgeseal" in own_part and thumbprint(own) in own_part
    assert "urn:gw1:edgeseal" in own_part
    assert "CN=plc1" in trusted_part and thumbprint(trusted) in trusted_part
    assert "CN=plc2" in rejected_part and thumbprint(rejected) in rejected_part
    assert f"edgeseal opcua trust --state-dir {state} THUMBPRINT" in rejected_part
    sha256 = rejected.fingerprint(hashes.SHA256()).hex(":").upper()
    assert f"SHA-256           {sha256}" in rejected_part

    listed = json.loads(edgeseal("opcua", "certs", "--state-dir", state, "--json").out)
    assert listed["own"]["thumbprint"] == thumbprint(own)
    assert listed["own"]["application_uri"] == "urn:gw1:edgeseal"
    assert [c["thumbprint"] for c in listed["trusted"]] == [thumbprint(trusted)]
    assert [c["subject"] for c in listed["rejected"]] == ["CN=plc2"]
    assert listed["rejected"][0]["sha256"] == sha256
    assert listed["unreadable"] == []


def test_certs_of_a_new_state_directory(edgeseal, state: Path) -> None:
    result = edgeseal("opcua", "certs", "--state-dir", state, "--json")
    assert result.code == 0
    assert json.loads(result.out) == {"own": None, "trusted": [], "rejected": [], "unreadable": []}
    assert "none yet" in edgeseal("opcua", "certs", "--state-dir", state).out


# -- bad input --------------------------------------------------------------------------


def test_missing_file(edgeseal, state: Path) -> None:
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, "plc1.der"), 2, "plc1.der", "cannot read")


@pytest.mark.parametrize(
    "content",
    [
        b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n",
        KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        b"\x30\x03\x02\x01\x01",
        b"",
    ],
    ids=["bad base64", "a private key", "DER, not a certificate", "empty"],
)
def test_file_that_is_not_a_certificate(edgeseal, state: Path, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "server.pem").write_bytes(content)
    result = edgeseal("opcua", "trust", "--state-dir", state, tmp_path / "server.pem")
    one_line_error(result, 2, f"{tmp_path / 'server.pem'}: not a DER or PEM certificate")


def test_directory_instead_of_a_file(edgeseal, state: Path, tmp_path: Path) -> None:
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, tmp_path), 2, "not a regular file")


@pytest.mark.parametrize("text", ["ABCD", "plc1", "AB" * 21])
def test_bad_thumbprint(edgeseal, state: Path, text: str) -> None:
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, text), 2, text, "expected a SHA-1 thumbprint")


def test_thumbprint_of_nothing_rejected(edgeseal, state: Path) -> None:
    refused_by_driver(state, server_certificate("plc2"))
    one_line_error(
        edgeseal("opcua", "trust", "--state-dir", state, "AB" * 20),
        2,
        f"no certificate with thumbprint {'AB' * 20}",
        "rejected",
    )


def test_missing_state_directory(edgeseal, tmp_path: Path) -> None:
    for argv in (("trust", "--state-dir", tmp_path / "nope", "AB" * 20), ("certs", "--state-dir", tmp_path / "nope")):
        one_line_error(edgeseal("opcua", *argv), 2, "nope", "not a directory")


@pytest.mark.parametrize("option", [("--yes",), ("--thumbprint", "AB" * 20)])
def test_confirmation_options_need_a_url(edgeseal, state: Path, option: tuple[str, ...]) -> None:
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, "AB" * 20, *option), 2, "opc.tcp:// URL")


def test_yes_and_thumbprint_together(edgeseal, state: Path) -> None:
    result = edgeseal("opcua", "trust", "--state-dir", state, "opc.tcp://plc1:4840", "--yes", "--thumbprint", "AB" * 20)
    assert result.code == 2 and "not allowed with argument" in result.err


@pytest.mark.parametrize("url", ["opc.tcp://", "opc.tcp://plc1:port", "opc.tcp://plc1:99999"])
def test_bad_url(edgeseal, state: Path, url: str) -> None:
    one_line_error(edgeseal("opcua", "trust", "--state-dir", state, url), 2, "expected a URL like opc.tcp://")


def test_bad_thumbprint_option(edgeseal, state: Path) -> None:
    result = edgeseal("opcua", "trust", "--state-dir", state, "opc.tcp://127.0.0.1:1", "--thumbprint", "xyz")
    one_line_error(result, 2, "--thumbprint", "'xyz'")


def test_server_that_does_not_answer(edgeseal, state: Path) -> None:
    result = edgeseal("opcua", "trust", "--state-dir", state, "opc.tcp://127.0.0.1:1", "--timeout", "1s")
    one_line_error(result, 1, "opc.tcp://127.0.0.1:1", "cannot read the server's endpoints", "Connection refused")


def test_server_name_that_does_not_resolve(edgeseal, state: Path) -> None:
    result = edgeseal("opcua", "trust", "--state-dir", state, "opc.tcp://no-such-host.invalid:4840", "--timeout", "1s")
    one_line_error(result, 1, "no-such-host.invalid", "cannot read the server's endpoints")


def test_unreachable_server_is_one_line_as_a_process(state: Path) -> None:
    """As a user runs it, with logging on: no library chatter around the one line."""
    command = [sys.executable, "-m", "agent.cli", "opcua", "trust", "--state-dir", str(state), "opc.tcp://127.0.0.1:1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "edgeseal: opc.tcp://127.0.0.1:1: cannot read the server's endpoints: Connection refused"
    ]
