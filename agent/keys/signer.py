"""The signer interface: what sealing needs from a device key, and nothing more.

A signer signs a SHA-256 digest and returns the raw ECDSA P-256 signature r||s
(64 bytes, the COSE form). Signing is a coroutine because a hardware TPM takes about
200 ms (p50) to 600 ms (p95) per signature: the sealer awaits it while readings keep
flowing, so a slow signer makes seals larger, never readings slower.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.trust.certs import key_id

__all__ = ["Signer", "key_id"]


@runtime_checkable
class Signer(Protocol):
    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    @property
    def certificate_chain(self) -> list[x509.Certificate]:
        """Device certificate first, then intermediates (not the root)."""
        ...

    async def sign_digest(self, digest: bytes) -> bytes:
        """ECDSA P-256 over a 32-byte SHA-256 digest; raw r||s (64 bytes, either s: the
        sealer normalises to low s). Raises agent.errors.SigningError when it cannot sign
        for now; the sealer retries."""
        ...

    async def close(self) -> None: ...
