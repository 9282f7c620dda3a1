"""Revocation: do the auditor's CRLs list a certificate of the device's chain?

A CRL speaks only for the CA that signed it (no indirect or delta CRLs): it counts for a
certificate of the chain when its issuer name is that certificate's issuer's subject and
its signature verifies with that issuer's key. A CRL that no CA of the chain signed is
unusable input, never skipped: an auditor who gives a CRL expects it to be applied.

Strict by choice: a listed certificate is revoked whatever its revocation date, even one
after the data was signed. A seal's time is the device's own claim, and whoever holds a
compromised key can sign seals dated before the revocation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

_PEM_CRL = b"-----BEGIN X509 CRL-----"


class CrlError(ValueError):
    """A CRL that cannot be used; `index` is its place in the list given, when known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class CrlCheck:
    """What the CRLs given say about one certificate of the chain."""

    subject: str
    serial_number: int
    issuer: str  # the CA that issued it: only its CRLs speak about it
    this_update: dt.datetime | None  # of the newest CRL of `issuer`; None: no CRL of it given
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def finding(self) -> str:
        assert self.revoked_at is not None
        reason = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.subject!r} (serial {self.serial_number:x}) is revoked: the CRL of {self.issuer!r} "
            f"lists it as revoked on {self.revoked_at.isoformat()}{reason}"
        )


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """One X.509 CRL, PEM or DER, with every field parsed now: cryptography parses lazily,
    so a damaged entry would otherwise fail later, in the middle of a check."""
    pem = data.lstrip().startswith(b"-----BEGIN")
    if pem and data.count(_PEM_CRL) != 1:
        raise CrlError(f"expected one PEM block {_PEM_CRL.decode()!r}, found {data.count(_PEM_CRL)}")
    try:
        crl = x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.signature_hash_algorithm)
        critical = [ext for ext in crl.extensions if ext.critical]
        for entry in crl:
            _ = (entry.serial_number, entry.revocation_date_utc)
            critical += [ext for ext in entry.extensions if ext.critical]
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        raise CrlError(f"neither a PEM nor a DER X.509 CRL ({exc})") from None
    if critical:
        # RFC 5280 5: a CRL with a critical extension one does not process must not be used.
        names = ", ".join(sorted({_extension_name(ext) for ext in critical}))
        raise CrlError(f"has critical extension(s) {names}, which edgeseal does not process (delta or indirect CRL)")
    return crl


def _extension_name(ext: x509.Extension[x509.ExtensionType]) -> str:
    return ext.oid.dotted_string if isinstance(ext.value, x509.UnrecognizedExtension) else type(ext.value).__name__


def check_revocation(
    path: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
) -> list[CrlCheck]:
    """path = device certificate, intermediates, root (as verify_chain found it): one check
    per certificate below the root. Raises CrlError, with the CRL's index, for a CRL that
    no CA of the path signed."""
    of_issuer: dict[int, list[x509.CertificateRevocationList]] = {}
    for index, crl in enumerate(crls):
        of_issuer.setdefault(_issuer_in(path, crl, index), []).append(crl)
    return [_check(cert, path[i + 1], of_issuer.get(i + 1, [])) for i, cert in enumerate(path[:-1])]


def _issuer_in(path: Sequence[x509.Certificate], crl: x509.CertificateRevocationList, index: int) -> int:
    """The position in `path` of the CA that signed `crl`."""
    name = crl.issuer.rfc4514_string()
    named = [i for i, ca in enumerate(path[1:], start=1) if ca.subject == crl.issuer]
    if not named:
        raise CrlError(f"issued by {name!r}, which is no CA of the device's certificate chain", index)
    signer = next((i for i in named if _signed_by(crl, path[i])), None)
    if signer is None:
        raise CrlError(f"names {name!r} as its issuer, but its signature does not verify with that CA's key", index)
    if not _may_sign_crls(path[signer]):
        raise CrlError(f"issued by {name!r}, whose keyUsage does not allow cRLSign", index)
    return signer


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]  # TypeError if unsuitable
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _may_sign_crls(ca: x509.Certificate) -> bool:
    try:
        return bool(ca.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return True  # RFC 5280 4.2.1.3: without keyUsage, every usage is allowed


def _check(cert: x509.Certificate, issuer: x509.Certificate, crls: list[x509.CertificateRevocationList]) -> CrlCheck:
    """Listed in any CRL of its issuer is revoked; the earliest listing dates it."""
    this_update = max((crl.last_update_utc for crl in crls), default=None)
    check = CrlCheck(cert.subject.rfc4514_string(), cert.serial_number, issuer.subject.rfc4514_string(), this_update)
    entries = [e for crl in crls if (e := crl.get_revoked_certificate_by_serial_number(cert.serial_number))]
    if not entries:
        return check
    first = min(entries, key=lambda e: e.revocation_date_utc)
    return dataclasses.replace(check, revoked_at=first.revocation_date_utc, reason=_reason(first))


def _reason(entry: x509.RevokedCertificate) -> str | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
    except x509.ExtensionNotFound:
        return None
