"""OPC UA security for the driver: the one place asyncua's client security is set.

`configure(client, settings)` gives the client its application URI and user, and, for a
secure policy, its certificate (made on first use in the PKI directory, see pki.py), the
policy and message mode of the server endpoint that offers them, and a certificate
validator that checks the server against the trust list. `open_session(client)`
connects and turns asyncua's security failures into messages an operator can act on.

asyncua checks no server certificate unless `Client.certificate_validator` is set. It
calls the validator in CreateSession, after the server has proven it holds the
certificate's key and before the user's password is sent (ActivateSession). It turns
only a `ServiceError` from the validator into a bare status code; our
`ServerCertificateRefused` reaches the caller of `connect()` as it was raised.

With policy None nothing is signed or encrypted, so checking a certificate would prove
nothing about who answers: no validator is set, and no client certificate is made.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from asyncua.crypto.validator import CertificateValidatorMethod
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from drivers.opcua.config import Mode, Policy
from drivers.opcua.pki import ClientCertificate, Pki, PkiError, first_certificate, thumbprint

POLICY_CLASSES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_POLICY_PREFIX = "http://opcfoundation.org/UA/SecurityPolicy#"

# The status codes of certificate validation (OPC 10000-4 6.1.3) a server answers with
# when it does not accept this client's certificate.
_CLIENT_REFUSED = {
    ua.StatusCodes.BadSecurityChecksFailed,
    ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadCertificateInvalid,
    ua.StatusCodes.BadCertificateUriInvalid,
    ua.StatusCodes.BadCertificateUseNotAllowed,
    ua.StatusCodes.BadCertificateTimeInvalid,
}
_USER_REFUSED = {
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadIdentityTokenRejected,
}


@dataclass(frozen=True)
class SecuritySettings:
    """A source's security, resolved: the password is the secret itself, not its name."""

    policy: Policy
    mode: Mode
    application_uri: str
    pki_dir: Path  # STATE_DIR/pki
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(f"mode {self.mode} does not go with policy {self.policy}")


class SecurityRefused(Exception):
    """The connection cannot be made secure as configured; str() says why and what to do.
    (A server certificate that is not trusted raises pki.ServerCertificateRefused.)"""


class ServerUnreachable(Exception):
    """No endpoints could be read from the server."""


async def configure(client: Client, settings: SecuritySettings) -> ClientCertificate | None:
    """Sets up `client` before `open_session`. For a secure policy this reads the
    server's endpoints (GetEndpoints needs no security) and returns this client's
    certificate, whose `new_because` is worth a log line."""
    client.application_uri = settings.application_uri
    if settings.username is not None:
        client.set_user(settings.username)
    if settings.password is not None:
        client.set_password(settings.password)
    if settings.policy == "None":
        return None
    pki = Pki(settings.pki_dir)
    own = pki.client_certificate(settings.application_uri)
    policy = POLICY_CLASSES[settings.policy]
    mode = ua.MessageSecurityMode[settings.mode]
    endpoint = _endpoint(await client.connect_and_get_server_endpoints(), policy.URI, mode)
    try:
        server_certificate = first_certificate(endpoint.ServerCertificate or b"")
    except PkiError:
        raise SecurityRefused(f"the server's {settings.policy}/{settings.mode} endpoint has no certificate") from None
    # contents, not paths: asyncua reads files through a worker thread
    await client.set_security(
        policy,
        own.certificate.public_bytes(serialization.Encoding.DER),
        uacrypto.CertProperties(own.private_key_path.read_bytes(), extension="pem"),
        server_certificate=server_certificate,
        mode=mode,
    )
    client.certificate_validator = _validator(pki)
    return own


async def open_session(client: Client) -> None:
    """`client.connect()`. Raises pki.ServerCertificateRefused when the server is not
    trusted here, SecurityRefused when the server refuses this client or its user."""
    try:
        await client.connect()
    except ua.UaStatusCodeError as exc:
        if exc.code in _USER_REFUSED:
            raise SecurityRefused(
                f"the server refused the user: {_status(exc.code)}; check the user name and password"
            ) from exc
        if exc.code in _CLIENT_REFUSED:
            raise SecurityRefused(_client_refused(client, exc.code)) from exc
        raise


async def server_certificates(url: str, timeout: float) -> list[x509.Certificate]:
    """The distinct certificates a server's endpoints present, in the order offered."""
    client = Client(url, timeout=timeout)
    try:
        endpoints = await client.connect_and_get_server_endpoints()
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise ServerUnreachable(f"{url}: cannot read the server's endpoints: {_reason(exc)}") from None
    found: list[x509.Certificate] = []
    for endpoint in endpoints:
        if not endpoint.ServerCertificate:
            continue  # a None endpoint may come without one
        try:
            cert = x509.load_der_x509_certificate(first_certificate(endpoint.ServerCertificate))
        except (PkiError, ValueError) as exc:
            raise SecurityRefused(f"{url}: the server presents a certificate that cannot be read ({exc})") from None
        if cert not in found:
            found.append(cert)
    return found


def _endpoint(
    endpoints: list[ua.EndpointDescription], policy_uri: str, mode: ua.MessageSecurityMode
) -> ua.EndpointDescription:
    for endpoint in endpoints:
        if endpoint.SecurityPolicyUri == policy_uri and endpoint.SecurityMode == mode:
            return endpoint
    offered = sorted({_endpoint_name(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints})
    wanted = _endpoint_name(policy_uri, mode)
    raise SecurityRefused(f"the server offers no {wanted} endpoint; it offers {', '.join(offered) or 'none'}")


def _endpoint_name(policy_uri: str, mode: ua.MessageSecurityMode) -> str:
    """'Basic256Sha256/Sign', in the words of the configuration."""
    mode_name = "None" if mode == ua.MessageSecurityMode.None_ else mode.name
    return f"{policy_uri.removeprefix(_POLICY_PREFIX)}/{mode_name}"


def _validator(pki: Pki) -> CertificateValidatorMethod:
    async def check_server(cert: x509.Certificate, _server: ua.ApplicationDescription) -> None:
        pki.check_server_certificate(cert)

    return check_server


def _client_refused(client: Client, code: int) -> str:
    own = client.security_policy.host_certificate  # None with policy None
    which = f" (SHA-1 thumbprint {thumbprint(x509.load_der_x509_certificate(own))})" if own else ""
    return f"the server refused this client's certificate{which}: {_status(code)}; trust it on the server"


def _status(code: int) -> str:
    return ua.StatusCode(ua.UInt32(code)).name


def _reason(exc: BaseException) -> str:
    """In the system's words ("Connection refused", "Name or service not known")."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text names only the call that failed
    return str(exc) or type(exc).__name__
