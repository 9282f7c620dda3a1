"""A software device key in a PEM file, for development and tests.

The private key lives in process memory, so this signer proves nothing about where data
came from beyond "whoever holds this file": production devices use the TPM signer.
The file must not be readable by group or others, like ssh's private keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
)

from agent.errors import KeyError_


def load_key_file(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted P-256 private key, refusing group/world-accessible files."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read key file: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            f"{path}: key file is accessible by group or others (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyError_(f"{path}: expected an EC P-256 private key")
    return key


def load_certificate_chain(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read certificate chain: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyError_(f"{path}: not a PEM certificate chain: {exc}") from None
    return certs


def raw_signature(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class SoftwareSigner:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> None:
        self._key = private_key
        self._chain = chain
        if chain and chain[0].public_key() != private_key.public_key():
            raise KeyError_("the device certificate does not belong to the software key")

    @classmethod
    def from_files(cls, key_path: str | os.PathLike[str], chain_path: str | os.PathLike[str]) -> SoftwareSigner:
        return cls(load_key_file(key_path), load_certificate_chain(chain_path))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def certificate_chain(self) -> list[x509.Certificate]:
        return list(self._chain)

    async def sign_digest(self, digest: bytes) -> bytes:
        der = self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return raw_signature(der)

    async def close(self) -> None:
        return None
