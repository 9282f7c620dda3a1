"""The OPC UA client's PKI directory: its application instance certificate and the
servers it trusts, laid out as UA-.NET and open62541 lay theirs out:

    ROOT/own/certs/client.der       this client's certificate (DER)
    ROOT/own/private/client.pem     its RSA key (PKCS#8 PEM, mode 0600, directory 0700)
    ROOT/trusted/certs/*.der        trusted server certificates, or CAs that issue them
    ROOT/rejected/certs/*.der       server certificates seen and refused, for review

ROOT is STATE_DIR/pki. A server certificate is trusted when that exact certificate is in
trusted/, or when a CA certificate in trusted/ issued it directly; either way it must be
within its validity dates. Any other one is copied to rejected/ and refused with the one
command that trusts it. Thumbprints are OPC UA's: SHA-1 of the DER, upper-case hex; the
SHA-256 is shown beside them for people who compare fingerprints.

Pure file logic: no asyncua here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Ten years: a gateway runs unattended for years, and a new certificate has to be trusted
# again by hand on every server it talks to; a certificate that expired would stop the
# plant's data at a moment nobody chose. Renewal is the operator's act (delete own/).
CLIENT_VALIDITY = dt.timedelta(days=3650)
CLIENT_KEY_BITS = 2048  # what all three secure policies accept (2048..4096)
KEEP_REJECTED = 20  # each refused connect may bring a new certificate: bound the disk it takes
_THUMBPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # SHA-1, or SHA-256 for people who use it


class PkiError(Exception):
    """Unusable input: a thumbprint or file that names no certificate."""


class ServerCertificateRefused(Exception):
    """A server's certificate is not trusted now; str() is the whole message for the operator."""

    def __init__(self, message: str, certificate: CertificateInfo) -> None:
        super().__init__(message)
        self.certificate = certificate


class UntrustedServerCertificate(ServerCertificateRefused):
    """A certificate the trust list does not hold; a copy is in rejected/ at `rejected_path`."""

    def __init__(self, certificate: CertificateInfo, rejected_path: Path, state_dir: Path) -> None:
        command = f"edgeseal opcua trust --state-dir {shlex.quote(str(state_dir))} {certificate.thumbprint}"
        super().__init__(
            f"server certificate not trusted: {certificate.subject} (SHA-1 thumbprint {certificate.thumbprint}, "
            f"valid {certificate.validity()}), saved as {rejected_path}; if that thumbprint is the one the "
            f"server shows, trust it with: {command}",
            certificate,
        )
        self.rejected_path = rejected_path
        self.command = command


class ServerCertificateOutOfDate(ServerCertificateRefused):
    """A trusted certificate, or the CA that issued it, outside its validity dates."""

    def __init__(self, certificate: CertificateInfo, why: str) -> None:
        super().__init__(
            f"server certificate {certificate.subject} (SHA-1 thumbprint {certificate.thumbprint}) is trusted "
            f"but {why}: the server needs a new certificate",
            certificate,
        )


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator needs to recognise a certificate."""

    subject: str
    application_uri: str | None
    thumbprint: str  # SHA-1, upper-case hex: OPC UA's
    sha256: str  # colon-separated, as browsers and openssl show it
    not_before: dt.datetime
    not_after: dt.datetime
    path: Path | None = None

    @classmethod
    def of(cls, cert: x509.Certificate, path: Path | None = None) -> CertificateInfo:
        return cls(
            subject=subject_text(cert),
            application_uri=application_uri(cert),
            thumbprint=thumbprint(cert),
            sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            path=path,
        )

    def validity(self) -> str:
        return f"{_time(self.not_before)} to {_time(self.not_after)}"

    def out_of_date(self, now: dt.datetime) -> str | None:
        """Why the certificate is not valid at `now`, or None when it is."""
        if now < self.not_before:
            return f"not valid before {_time(self.not_before)} (now {_time(now)})"
        if now > self.not_after:
            return f"expired on {_time(self.not_after)} (valid {self.validity()})"
        return None

    def as_json(self) -> dict[str, str | None]:
        return {
            "subject": self.subject,
            "application_uri": self.application_uri,
            "thumbprint": self.thumbprint,
            "sha256": self.sha256,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "path": str(self.path) if self.path else None,
        }


@dataclass(frozen=True)
class ClientCertificate:
    """This client's certificate and key, ready to load; `new_because` says why it was
    made at this call (worth a log line: servers must trust it again), None when reused."""

    certificate_path: Path
    private_key_path: Path
    certificate: x509.Certificate
    new_because: str | None


@dataclass(frozen=True)
class Listing:
    own: CertificateInfo | None
    trusted: list[CertificateInfo]
    rejected: list[CertificateInfo]
    unreadable: list[Path]  # files in trusted/ or rejected/ that hold no certificate


@dataclass(frozen=True)
class TrustResult:
    certificate: CertificateInfo  # its path is the file in trusted/
    already_trusted: bool


def thumbprint(cert: x509.Certificate) -> str:
    """OPC UA's certificate thumbprint: SHA-1 of the DER, upper-case hex."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # the protocol's identifier, not a signature


def subject_text(cert: x509.Certificate) -> str:
    """'CN=edgeseal@gw1, O=edgeseal': the subject in the order it was written."""
    return ", ".join(attribute.rfc4514_string() for attribute in cert.subject) or "(empty subject)"


def application_uri(cert: x509.Certificate) -> str | None:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def parse_thumbprint(text: str) -> str:
    """Upper-case hex without separators; colons and spaces, as tools print them, are allowed."""
    normalised = re.sub(r"[\s:]", "", text).upper()
    if not _THUMBPRINT.fullmatch(normalised):
        raise PkiError(f"expected a SHA-1 thumbprint (40 hex digits) or a SHA-256 one (64), found {text!r}")
    return normalised


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a DER file (one) or a PEM file (one or more)."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:  # cryptography's text points to its FAQ, not at the file
        raise PkiError("not a DER or PEM certificate") from None


def first_certificate(der_chain: bytes) -> bytes:
    """The first certificate of a DER chain (servers may send theirs concatenated):
    the outer SEQUENCE with its length header."""
    if len(der_chain) < 2 or der_chain[0] != 0x30:
        raise PkiError("not a DER certificate")
    length, header = der_chain[1], 2
    if length & 0x80:  # long form: the low bits count the length bytes that follow
        count = length & 0x7F
        length, header = int.from_bytes(der_chain[2 : 2 + count], "big"), 2 + count
    return der_chain[: header + length]


class Pki:
    """The PKI directory at `root` (STATE_DIR/pki); directories are made as needed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.own_certificate_path = root / "own" / "certs" / "client.der"
        self.own_key_path = root / "own" / "private" / "client.pem"
        self.trusted_dir = root / "trusted" / "certs"
        self.rejected_dir = root / "rejected" / "certs"

    @property
    def state_dir(self) -> Path:
        return self.root.parent.absolute()

    # -- this client's certificate ----------------------------------------------------

    def client_certificate(
        self, application_uri: str, hostname: str | None = None, now: dt.datetime | None = None
    ) -> ClientCertificate:
        """The client certificate for `application_uri`, made on first use and whenever
        the one on disk cannot serve (another URI, expired, key missing or not its own)."""
        now = now or _now()
        hostname = hostname or socket.gethostname()
        existing, why_not = self._own(application_uri, now)
        if existing is not None:
            return ClientCertificate(self.own_certificate_path, self.own_key_path, existing, None)
        key = rsa.generate_private_key(public_exponent=65537, key_size=CLIENT_KEY_BITS)
        cert = make_client_certificate(key, application_uri, hostname, now)
        self._make_dirs()
        # key first: a crash between the two writes leaves a pair that does not match,
        # which the next start replaces, never a certificate without its key
        _write_atomically(self.own_key_path, _pem(key), mode=0o600)
        _write_atomically(self.own_certificate_path, cert.public_bytes(serialization.Encoding.DER))
        return ClientCertificate(self.own_certificate_path, self.own_key_path, cert, why_not)

    def _own(self, application_uri: str, now: dt.datetime) -> tuple[x509.Certificate | None, str]:
        """(the reusable certificate, "") or (None, why a new one is needed)."""
        if not self.own_certificate_path.exists():
            return None, "there was none"
        try:
            cert = x509.load_der_x509_certificate(self.own_certificate_path.read_bytes())
        except ValueError:
            return None, f"{self.own_certificate_path} is not a DER certificate"
        info = CertificateInfo.of(cert)
        if info.application_uri != application_uri:
            return None, f"the application URI changed from {info.application_uri} to {application_uri}"
        if why := info.out_of_date(now):
            return None, f"the old one is {why}"
        if not self._key_matches(cert):
            return None, f"{self.own_key_path} is missing or is not the certificate's key"
        return cert, ""

    def _key_matches(self, cert: x509.Certificate) -> bool:
        try:
            key = serialization.load_pem_private_key(self.own_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return False
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return key.public_key().public_bytes(*der) == cert.public_key().public_bytes(*der)

    # -- server certificates ------------------------------------------------------------

    def check_server_certificate(self, cert: x509.Certificate, now: dt.datetime | None = None) -> CertificateInfo:
        """Returns the certificate's description when it is trusted now; raises
        ServerCertificateRefused (with the message for the operator) when not."""
        now = now or _now()
        info = CertificateInfo.of(cert)
        trusted = self._trusted()
        issuer = None if cert in trusted else _trusted_issuer(cert, trusted)
        if cert not in trusted and issuer is None:
            raise UntrustedServerCertificate(info, self._reject(cert), self.state_dir)
        _require_in_date(info, now)
        if issuer is not None:
            _require_in_date(info, now, CertificateInfo.of(issuer))
        return info

    def is_trusted(self, cert: x509.Certificate) -> bool:
        """Whether trusted/ holds `cert` or the CA that issued it, dates aside."""
        trusted = self._trusted()
        return cert in trusted or _trusted_issuer(cert, trusted) is not None

    def _trusted(self) -> list[x509.Certificate]:
        return [cert for cert, _ in self._read(self.trusted_dir)[0]]

    def _reject(self, cert: x509.Certificate) -> Path:
        self._make_dirs()
        path = self.rejected_dir / _file_name(cert)
        _write_atomically(path, cert.public_bytes(serialization.Encoding.DER))
        older = sorted(self.rejected_dir.glob("*.der"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in older[KEEP_REJECTED:]:
            stale.unlink(missing_ok=True)
        return path

    def trust(self, cert: x509.Certificate) -> TrustResult:
        """Adds `cert` to trusted/ (a no-op when it is there) and removes it from rejected/."""
        self._make_dirs()
        for present, path in self._read(self.trusted_dir)[0]:
            if present == cert:
                return TrustResult(CertificateInfo.of(cert, path), already_trusted=True)
        path = self.trusted_dir / _file_name(cert)
        _write_atomically(path, cert.public_bytes(serialization.Encoding.DER))
        for rejected, rejected_path in self._read(self.rejected_dir)[0]:
            if rejected == cert:
                rejected_path.unlink(missing_ok=True)
        return TrustResult(CertificateInfo.of(cert, path), already_trusted=False)

    def trust_thumbprint(self, text: str) -> TrustResult:
        """Trusts the certificate in rejected/ (or, again, in trusted/) with that
        SHA-1 (or SHA-256) thumbprint."""
        wanted = parse_thumbprint(text)
        for directory in (self.rejected_dir, self.trusted_dir):
            for cert, _ in self._read(directory)[0]:
                if wanted in (thumbprint(cert), cert.fingerprint(hashes.SHA256()).hex().upper()):
                    return self.trust(cert)
        rejected = [thumbprint(c) for c, _ in self._read(self.rejected_dir)[0]]
        seen = f"it holds {', '.join(rejected)}" if rejected else "it is empty"
        raise PkiError(f"no certificate with thumbprint {wanted} in {self.rejected_dir} ({seen})")

    def trust_file(self, path: Path) -> list[TrustResult]:
        """Trusts every certificate of a DER or PEM file (a server's, or a CA's)."""
        if path.exists() and not path.is_file():  # a directory, or /dev/zero
            raise PkiError(f"{path}: cannot read: not a regular file")
        try:
            certs = load_certificates(path.read_bytes())
        except OSError as exc:
            raise PkiError(f"{path}: cannot read: {exc.strerror}") from None
        except PkiError as exc:
            raise PkiError(f"{path}: {exc}") from None
        return [self.trust(cert) for cert in certs]

    def listing(self) -> Listing:
        owned, bad_own = self._read(self.own_certificate_path.parent)
        trusted, bad_trusted = self._read(self.trusted_dir)
        rejected, bad_rejected = self._read(self.rejected_dir)
        return Listing(
            next((CertificateInfo.of(c, p) for c, p in owned if p == self.own_certificate_path), None),
            [CertificateInfo.of(c, p) for c, p in trusted],
            [CertificateInfo.of(c, p) for c, p in rejected],
            bad_own + bad_trusted + bad_rejected,
        )

    def _read(self, directory: Path) -> tuple[list[tuple[x509.Certificate, Path]], list[Path]]:
        """(certificate, file) for each certificate file of `directory` by name, and the
        files that hold none; temporary files of an interrupted write are skipped."""
        if not directory.is_dir():
            return [], []
        found: list[tuple[x509.Certificate, Path]] = []
        unreadable: list[Path] = []
        for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                found.extend((cert, path) for cert in load_certificates(path.read_bytes()))
            except PkiError:
                unreadable.append(path)
        return found, unreadable

    def _make_dirs(self) -> None:
        for directory in (self.own_certificate_path.parent, self.trusted_dir, self.rejected_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.own_key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.own_key_path.parent, 0o700)  # also when it existed with looser rights


def make_client_certificate(
    key: rsa.RSAPrivateKey, application_uri: str, hostname: str, now: dt.datetime
) -> x509.Certificate:
    """A self-signed application instance certificate as OPC 10000-6 6.2.2 describes it."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"edgeseal@{hostname}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeseal"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,  # nonRepudiation
        key_encipherment=True,
        data_encipherment=True,
        key_agreement=False,
        key_cert_sign=True,  # a self-signed certificate signs itself
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a server whose clock is a little behind
        .not_valid_after(now + CLIENT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(application_uri), x509.DNSName(hostname)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _trusted_issuer(cert: x509.Certificate, trusted: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA certificate in the trust list that signed `cert`, if any (one level: the
    issuer itself must be trusted; there are no revocation lists here)."""
    for candidate in trusted:
        if candidate.subject != cert.issuer or not _is_ca(candidate):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return False


def _require_in_date(server: CertificateInfo, now: dt.datetime, issuer: CertificateInfo | None = None) -> None:
    """Refuses `server` when it, or the `issuer` that vouches for it, is out of date."""
    why = (issuer or server).out_of_date(now)
    if why:
        whose = f"its issuer {issuer.subject} (SHA-1 thumbprint {issuer.thumbprint}) is " if issuer else ""
        raise ServerCertificateOutOfDate(server, whose + why)


def _file_name(cert: x509.Certificate) -> str:
    """'<common name>_<SHA-1 thumbprint>.der', the name kept to characters every shell takes."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else "unnamed"
    safe = re.sub(r"[^A-Za-z0-9.@-]+", "-", common_name).strip("-.")[:64] or "unnamed"
    return f"{safe}_{thumbprint(cert)}.der"


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temporary file beside `path`, fsync'd, renamed over it: a power cut leaves the old
    file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            os.fchmod(f.fileno(), mode)  # a leftover temporary file keeps its old mode otherwise
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
