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
from agent.trust.certs import ChainError, check_issued, is_ca

# rfc4514_string() knows no short name for serialNumber and would print "2.5.4.5".
_NAMES = {NameOID.SERIAL_NUMBER: "serialNumber"}


def describe_chain(certs: list[x509.Certificate]) -> list[str]:
    """Lines for `inspect`: who, issued by whom, how long, which key (kid)."""
    lines = []
    for index, cert in enumerate(certs):
        lines += [
            f"certificate {index}: {cert.subject.rfc4514_string(_NAMES)}",
            f"  issuer:  {cert.issuer.rfc4514_string(_NAMES)}",
            f"  valid:   {_iso(cert.not_valid_before_utc)} .. {_iso(cert.not_valid_after_utc)}",
            f"  serial:  {cert.serial_number:x}",
            f"  CA:      {'yes' if is_ca(cert) else 'no'}",
            f"  key id:  {_key_id_hex(cert)}",
            f"  sha256:  {cert.fingerprint(hashes.SHA256()).hex()}",
        ]
    return lines


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
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"(not an EC key: {type(public_key).__name__})"
    return key_id(public_key).hex()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
