"""Looking at a certificate chain: describe it, and check it against a root.

The check is the one a factory or an installer needs before shipping a box: every
certificate was issued by the next one, up to the root given, and every issuer is a CA.
It is not a full RFC 5280 path validation (no revocation, no name constraints).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.keys.signer import key_id
from agent.trust.certs import ChainError, check_issued, device_id_of, is_ca

# rfc4514_string() knows no short name for serialNumber and would print "2.5.4.5".
_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def rfc4514(name: x509.Name) -> str:
    return name.rfc4514_string(_NAMES)


def describe_chain(certs: list[x509.Certificate]) -> list[str]:
    """Lines for `inspect`: who, issued by whom, how long, which key (kid)."""
    lines = []
    for index, cert in enumerate(certs):
        lines += [
            f"certificate {index}: {rfc4514(cert.subject)}",
            f"  issuer:  {rfc4514(cert.issuer)}",
            f"  valid:   {_iso(cert.not_valid_before_utc)} .. {_iso(cert.not_valid_after_utc)}",
            f"  serial:  {cert.serial_number:x}",
            f"  CA:      {'yes' if is_ca(cert) else 'no'}",
            f"  key id:  {_key_id_hex(cert)}",
            f"  sha256:  {cert.fingerprint(hashes.SHA256()).hex()}",
        ]
    return lines


def summarize(cert: x509.Certificate) -> dict[str, object]:
    """One certificate for `inspect --json`; the keys are a stable contract."""
    return {
        "subject": rfc4514(cert.subject),
        "issuer": rfc4514(cert.issuer),
        "serial": f"{cert.serial_number:x}",
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "device_id": device_id_of(cert),
        "ca": is_ca(cert),
        "kid": _kid(cert),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def chain_problems(certs: list[x509.Certificate], root: x509.Certificate, *, now: datetime | None = None) -> list[str]:
    """What is wrong with `certs` (leaf first) as a chain to `root`; empty when nothing is.
    The issuance rule is the verifier's own (agent.trust.certs.check_issued)."""
    if not certs:
        return ["the chain holds no certificate"]
    if certs[-1] == root:
        certs = certs[:-1]  # a chain file may end with the root itself
    now = now or datetime.now(UTC)
    problems = []
    for index, (cert, issuer) in enumerate(zip(certs, [*certs[1:], root])):
        try:
            check_issued(cert, issuer)
        except ChainError as exc:
            problems.append(f"certificate {index}: {exc}")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            problems.append(f"certificate {index}: not valid at {_iso(now)}")
    return problems


def _key_id_hex(cert: x509.Certificate) -> str:
    return _kid(cert) or f"(not an EC key: {type(cert.public_key()).__name__})"


def _kid(cert: x509.Certificate) -> str | None:
    public_key = cert.public_key()
    return key_id(public_key).hex() if isinstance(public_key, ec.EllipticCurvePublicKey) else None


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
