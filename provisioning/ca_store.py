"""A CA directory on disk: root.pem, root-key.pem, issuing.pem, issuing-key.pem, profile.json.

Private keys are PKCS#8 PEM encrypted with a passphrase (`BestAvailableEncryption`) and
created 0600. That encryption derives its key with PBKDF2-SHA256 at only 2048 rounds, so
the passphrase itself must carry the strength: `save` refuses short ones.

profile.json says whether the CA is for production (it issues only for keys proven to live
in a TPM) or for development (it may certify software keys too): {"v": 1, "profile": ...}.
A directory without it (made before profiles existed) is production: the strict default.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import KeyError_, UsageError
from provisioning.ca import CertificateAuthority
from provisioning.files import read_bytes, refuse_existing, write_private, write_public

ROOT_CERT = "root.pem"
ROOT_KEY = "root-key.pem"
ISSUING_CERT = "issuing.pem"
ISSUING_KEY = "issuing-key.pem"
PROFILE = "profile.json"
FILES = (ROOT_CERT, ROOT_KEY, ISSUING_CERT, ISSUING_KEY)
PRODUCTION, DEVELOPMENT = "production", "development"

MIN_PASSPHRASE = 16


def save(
    directory: Path, ca: CertificateAuthority, passphrase: bytes, *, force: bool = False, development: bool = False
) -> None:
    """Write the CA; refuses to replace an existing one unless `force`."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(
            f"the CA passphrase must be at least {MIN_PASSPHRASE} characters"
            " (e.g. the output of: openssl rand -base64 32)"
        )
    if not force:
        refuse_existing([directory / name for name in FILES], "use --force to replace this CA")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Until the new profile is written, the directory reads as production (the strict
        # one): a failure halfway never leaves a production key under a development profile.
        (directory / PROFILE).unlink(missing_ok=True)
    except OSError as exc:
        raise KeyError_(f"{directory}: cannot create the CA directory: {exc.strerror}") from None
    # Keys first: a directory with certificates but no keys would look like a usable CA.
    write_private(directory / ROOT_KEY, _encrypted(ca.root_key, passphrase), overwrite=force)
    write_private(directory / ISSUING_KEY, _encrypted(ca.issuing_key, passphrase), overwrite=force)
    write_public(directory / ROOT_CERT, _pem(ca.root_cert))
    write_public(directory / ISSUING_CERT, _pem(ca.issuing_cert))
    chosen = DEVELOPMENT if development else PRODUCTION
    write_public(directory / PROFILE, json.dumps({"v": 1, "profile": chosen}).encode() + b"\n")


def load_profile(directory: Path) -> str:
    """PRODUCTION or DEVELOPMENT."""
    path = directory / PROFILE
    if not path.exists():
        return PRODUCTION
    try:
        value = json.loads(read_bytes(path, "CA profile"))["profile"]
    except (ValueError, TypeError, KeyError):
        value = None
    if value not in (PRODUCTION, DEVELOPMENT):
        raise KeyError_(f'{path}: expected {{"v": 1, "profile": "production" or "development"}}, found something else')
    return value


def load(directory: Path, passphrase: bytes) -> CertificateAuthority:
    """The whole CA, root key included (needed only to make a new issuing CA)."""
    root_cert = _load_certificate(directory / ROOT_CERT)
    issuing_key, issuing_cert = load_issuer(directory, passphrase)
    return CertificateAuthority(
        _load_key(directory / ROOT_KEY, passphrase, root_cert), root_cert, issuing_key, issuing_cert
    )


def load_root_cert(directory: Path) -> x509.Certificate:
    return _load_certificate(directory / ROOT_CERT)


def load_issuer(directory: Path, passphrase: bytes) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Only what issuing needs, so root-key.pem can be kept offline after `init`."""
    issuing_cert = _load_certificate(directory / ISSUING_CERT)
    return _load_key(directory / ISSUING_KEY, passphrase, issuing_cert), issuing_cert


def _encrypted(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(read_bytes(path, "CA certificate"))
    except ValueError as exc:
        raise KeyError_(f"{path}: not a PEM certificate: {exc}") from None


def _load_key(path: Path, passphrase: bytes, cert: x509.Certificate) -> ec.EllipticCurvePrivateKey:
    data = read_bytes(path, "CA key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except ValueError:
        raise KeyError_(f"{path}: cannot decrypt the CA key: wrong passphrase, or the file is damaged") from None
    except TypeError:
        raise KeyError_(f"{path}: the CA key is not encrypted; CA keys must be encrypted at rest") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise KeyError_(f"{path}: this key does not belong to the certificate beside it")
    return key
