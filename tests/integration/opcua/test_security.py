"""OPC UA security against real servers (tests/opcua_servers.py): a session for every
policy and mode, with the client certificate made in the PKI directory; an unknown server
refused with the message that names it and the command that trusts it, after which the
next connect succeeds; users and passwords; and the ways a server refuses this client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import Client, ua
from cryptography import x509
from opcua_servers import CertificateFiles, OpcUaServer, ServerFarm, ServerSpec, make_certificate

from agent.cli import main
from drivers.opcua.pki import Pki, UntrustedServerCertificate, thumbprint
from drivers.opcua.security import SecurityRefused, SecuritySettings, configure, open_session

CLIENT_URI = "urn:edgeseal-test:gateway"
SECURE_POLICIES = {  # configuration name -> ua.SecurityPolicyType prefix
    "Basic256Sha256": "Basic256Sha256",
    "Aes128_Sha256_RsaOaep": "Aes128Sha256RsaOaep",
    "Aes256_Sha256_RsaPss": "Aes256Sha256RsaPss",
}
POLICY_URIS = {
    "None": "http://opcfoundation.org/UA/SecurityPolicy#None",
    **{name: f"http://opcfoundation.org/UA/SecurityPolicy#{name}" for name in SECURE_POLICIES},
}
COMBINATIONS = [("None", "None")] + [(p, m) for p in SECURE_POLICIES for m in ("Sign", "SignAndEncrypt")]


def endpoint(policy: str, mode: str) -> str:
    return "NoSecurity" if policy == "None" else f"{SECURE_POLICIES[policy]}_{mode}"


def settings(
    state: Path, policy: str = "Basic256Sha256", mode: str = "SignAndEncrypt", **user: str
) -> SecuritySettings:
    return SecuritySettings(policy, mode, CLIENT_URI, state / "pki", **user)  # type: ignore[arg-type]


async def session(server: OpcUaServer, security: SecuritySettings) -> tuple[str, ua.MessageSecurityMode, int]:
    """Connects as the driver does; returns the channel's policy URI and mode and the
    server's state, read over the session."""
    client = Client(server.url, timeout=5)
    await configure(client, security)
    await open_session(client)
    try:
        state = await client.nodes.server_state.read_value()
        return client.security_policy.URI, client.security_policy.Mode, state
    finally:
        await client.disconnect()


def connect(server: OpcUaServer, security: SecuritySettings) -> tuple[str, ua.MessageSecurityMode, int]:
    return asyncio.run(session(server, security))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def server_files(tmp_path: Path) -> CertificateFiles:
    return make_certificate(tmp_path)


def own_certificate(state: Path) -> Path:
    """The gateway's certificate, made now so that a server can be told to trust it."""
    return Pki(state / "pki").client_certificate(CLIENT_URI).certificate_path


def secure_server(
    farm: ServerFarm, files: CertificateFiles, *security: str, trusted_clients: tuple[str, ...] | None, **spec: object
) -> OpcUaServer:
    return farm.start(
        ServerSpec(
            security=security,
            certificate=str(files.certificate),
            private_key=str(files.private_key),
            trusted_clients=trusted_clients,
            **spec,  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize("policy, mode", COMBINATIONS, ids=[f"{p}-{m}" for p, m in COMBINATIONS])
def test_session_for_every_policy_and_mode(
    opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path, policy: str, mode: str
) -> None:
    # The server offers that one endpoint and, when secured, accepts only our certificate.
    trusted_clients = None if policy == "None" else (str(own_certificate(state)),)
    server = secure_server(opcua_servers, server_files, endpoint(policy, mode), trusted_clients=trusted_clients)
    Pki(state / "pki").trust_file(server_files.certificate)

    policy_uri, channel_mode, server_state = connect(server, settings(state, policy, mode))

    assert policy_uri == POLICY_URIS[policy]
    assert channel_mode == ua.MessageSecurityMode["None_" if mode == "None" else mode]
    assert server_state == ua.ServerState.Running


def test_policy_none_makes_no_certificate(opcua_servers: ServerFarm, state: Path) -> None:
    server = opcua_servers.start(ServerSpec())
    connect(server, settings(state, "None", "None"))
    assert not (state / "pki").exists()


def test_unknown_server_is_refused_until_trusted(
    opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path
) -> None:
    server = secure_server(opcua_servers, server_files, "Basic256Sha256_SignAndEncrypt", trusted_clients=None)
    server_cert = x509.load_der_x509_certificate(server_files.certificate.read_bytes())

    with pytest.raises(UntrustedServerCertificate) as refused:
        connect(server, settings(state))

    message = str(refused.value)
    rejected = state / "pki" / "rejected" / "certs" / f"edgeseal-test-server_{thumbprint(server_cert)}.der"
    assert message.startswith("server certificate not trusted: CN=edgeseal test server")
    assert f"SHA-1 thumbprint {thumbprint(server_cert)}" in message
    assert f"edgeseal opcua trust --state-dir {state} {thumbprint(server_cert)}" in message
    assert rejected.read_bytes() == server_files.certificate.read_bytes()

    assert main(refused.value.command.split()[1:]) == 0  # the command, as the message gives it
    assert connect(server, settings(state))[2] == ua.ServerState.Running
    assert not rejected.exists()


def test_another_server_with_the_same_name_is_refused(
    opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path, tmp_path: Path
) -> None:
    impostor_files = make_certificate(tmp_path, "impostor")  # same subject and URI, another key
    Pki(state / "pki").trust_file(server_files.certificate)
    impostor = secure_server(opcua_servers, impostor_files, "Basic256Sha256_SignAndEncrypt", trusted_clients=None)
    with pytest.raises(UntrustedServerCertificate):
        connect(impostor, settings(state))


def test_user_and_password(opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path) -> None:
    server = secure_server(
        opcua_servers,
        server_files,
        "Basic256Sha256_SignAndEncrypt",
        trusted_clients=None,
        users={"operator": "s3cret"},
    )
    Pki(state / "pki").trust_file(server_files.certificate)
    assert connect(server, settings(state, username="operator", password="s3cret"))[2] == ua.ServerState.Running

    with pytest.raises(SecurityRefused) as refused:
        connect(server, settings(state, username="operator", password="wrong"))
    assert str(refused.value) == "the server refused the user: BadUserAccessDenied; check the user name and password"

    with pytest.raises(SecurityRefused, match="refused the user"):
        connect(server, settings(state))  # anonymous, where the server wants a user


def test_server_that_does_not_trust_this_client(
    opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path, tmp_path: Path
) -> None:
    someone_else = make_certificate(tmp_path, "someone-else", "urn:someone-else")
    server = secure_server(
        opcua_servers, server_files, "Basic256Sha256_Sign", trusted_clients=(str(someone_else.certificate),)
    )
    Pki(state / "pki").trust_file(server_files.certificate)
    own = x509.load_der_x509_certificate(own_certificate(state).read_bytes())
    with pytest.raises(SecurityRefused) as refused:
        connect(server, settings(state, mode="Sign"))
    assert str(refused.value) == (
        f"the server refused this client's certificate (SHA-1 thumbprint {thumbprint(own)}): "
        "BadCertificateUntrusted; trust it on the server"
    )


def test_server_without_the_configured_endpoint(
    opcua_servers: ServerFarm, server_files: CertificateFiles, state: Path
) -> None:
    server = secure_server(
        opcua_servers,
        server_files,
        "NoSecurity",
        "Basic256Sha256_Sign",
        "Aes256Sha256RsaPss_Sign",
        trusted_clients=None,
    )
    with pytest.raises(SecurityRefused) as refused:
        connect(server, settings(state, "Aes256_Sha256_RsaPss", "SignAndEncrypt"))
    assert str(refused.value) == (
        "the server offers no Aes256_Sha256_RsaPss/SignAndEncrypt endpoint; "
        "it offers Aes256_Sha256_RsaPss/Sign, Basic256Sha256/Sign, None/None"
    )
