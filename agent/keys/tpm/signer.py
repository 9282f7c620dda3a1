"""The production signer: the device key in the TPM signs seals and checkpoints.

Opening it is the agent's start-up self-test: the key at the handle must be an edgeseal
device key (non-duplicable ECC P-256 signer), it must be the key of the installed device
certificate, and a signature made by the TPM must verify with that certificate. Any
failure refuses the start with a clear message: an agent whose seals would not verify is
worse than one that does not run.

While running, one signature is in flight at most (the sealer signs one seal at a time,
and the worker serialises TPM commands), and `min_sign_interval` spaces signatures to
protect chips that throttle. A busy or unreachable TPM is a SigningError: the sealer
retries, readings keep flowing, and the next seal covers more.
"""

from __future__ import annotations

import asyncio
import os
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from tpm2_pytss import ESAPI, TPMT_PUBLIC
from tpm2_pytss.cryptography import public_to_key

from agent.errors import KeyError_, SigningError, TpmError
from agent.keys.secrets import unseal_secret
from agent.keys.software import load_certificate_chain
from agent.keys.tpm import esys
from agent.keys.tpm.tcti import Tcti
from agent.keys.tpm.templates import key_problems
from agent.keys.tpm.worker import TpmWorker


class TpmSigner:
    def __init__(
        self,
        worker: TpmWorker,
        handle: int,
        public: TPMT_PUBLIC,
        chain: list[x509.Certificate],
        min_sign_interval: float = 0.0,
    ) -> None:
        self._worker, self._handle, self._chain = worker, handle, chain
        self._public_area = public.marshal()
        self._public_key = _ec_key(public)
        self._min_interval = min_sign_interval
        self._next_signature_at = 0.0

    @classmethod
    async def open(
        cls, tcti: Tcti, handle: int, chain_path: str | os.PathLike[str], min_sign_interval: float = 0.0
    ) -> TpmSigner:
        """Connect, self-test, and return the signer; KeyError_/TpmError if it cannot sign."""
        chain = load_certificate_chain(chain_path)
        worker = TpmWorker(tcti)
        try:
            public = await worker.call(lambda esapi: read_device_key(esapi, handle))
            signer = cls(worker, handle, public, chain, min_sign_interval)
            await signer.self_test()
        except BaseException:
            await worker.close()
            raise
        return signer

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def certificate_chain(self) -> list[x509.Certificate]:
        return list(self._chain)

    async def self_test(self) -> None:
        if not self._chain:
            raise KeyError_("no device certificate: install one with 'edgeseal-provision install'")
        certified = self._chain[0].public_key()
        if certified != self._public_key:
            raise KeyError_(
                f"the device certificate is not for the key at TPM handle 0x{self._handle:08x}"
                " (another device's certificate, or the key was re-created): refusing to start"
            )
        digest = os.urandom(32)
        signature = await self._sign(digest)
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            certified.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            raise KeyError_("self-test: the TPM's signature does not verify with the device certificate") from None

    async def sign_digest(self, digest: bytes) -> bytes:
        try:
            return await self._sign(digest)
        except TpmError as exc:
            if exc.transient:
                raise SigningError(str(exc)) from None
            raise

    async def _sign(self, digest: bytes) -> bytes:
        wait = self._next_signature_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return await self._worker.call(lambda esapi: self._sign_with(esapi, digest))
        finally:
            self._next_signature_at = time.monotonic() + self._min_interval

    def _sign_with(self, esapi: ESAPI, digest: bytes) -> bytes:
        # The handle is looked up for every signature: a reconnected context has new
        # object handles, and a key replaced underneath the agent is caught here.
        key, public = esys.open_persistent(esapi, self._handle)
        try:
            if public.marshal() != self._public_area:
                raise TpmError(f"the key at TPM handle 0x{self._handle:08x} changed while the agent ran")
            return esys.sign_digest(esapi, key, digest)
        finally:
            esapi.tr_close(key)

    async def unseal(self, directory: str | os.PathLike[str], name: str) -> bytes:
        """A secret sealed to this TPM (agent.keys.secrets), through the signer's TPM thread."""
        return await unseal_secret(self._worker, directory, name)

    async def close(self) -> None:
        await self._worker.close()


def read_device_key(esapi: ESAPI, handle: int) -> TPMT_PUBLIC:
    """The public area of the device key at `handle`, refusing anything that is not one."""
    key, public = esys.open_persistent(esapi, handle)
    esapi.tr_close(key)
    problems = key_problems(public)
    if problems:
        raise TpmError(f"TPM handle 0x{handle:08x} does not hold an edgeseal device key: " + "; ".join(problems))
    return public


def _ec_key(public: TPMT_PUBLIC) -> ec.EllipticCurvePublicKey:
    key = public_to_key(public)
    assert isinstance(key, ec.EllipticCurvePublicKey)  # key_problems checked the type
    return key
