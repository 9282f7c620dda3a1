"""One body, every signer: what the sealer relies on holds for the software key and the TPM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from agent.keys.signer import Signer
from agent.keys.software import SoftwareSigner
from agent.keys.tpm.signer import TpmSigner
from agent.keys.tpm.tcti import parse_tcti
from provisioning.devca import make_demo_identity
from provisioning.swtpm import SoftwareTpm
from tests.tpm_identity import HANDLE, tpm_identity

DEVICE = "contract-1"


async def _software(tmp_path: Path, _: SoftwareTpm) -> Signer:
    identity = make_demo_identity(tmp_path, DEVICE)
    return SoftwareSigner.from_files(identity.key_path, identity.chain_path)


async def _tpm(tmp_path: Path, tpm: SoftwareTpm) -> Signer:
    identity = tpm_identity(tpm, tmp_path, DEVICE)
    return await TpmSigner.open(parse_tcti(tpm.tcti), HANDLE, identity.chain_path)


@pytest.fixture(params=[_software, _tpm], ids=["software", "tpm"])
def open_signer(request: pytest.FixtureRequest, tmp_path: Path, swtpm: SoftwareTpm) -> Callable[[], Awaitable[Signer]]:
    return lambda: request.param(tmp_path, swtpm)


def _verifies(signer: Signer, digest: bytes, raw: bytes) -> None:
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signer.certificate_chain[0].public_key().verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_signatures_are_raw_r_s_that_verify_with_the_certificate(open_signer: Callable[[], Awaitable[Signer]]) -> None:
    async def main() -> None:
        signer = await open_signer()
        try:
            assert isinstance(signer, Signer)
            assert signer.public_key == signer.certificate_chain[0].public_key()
            for digest in (bytes(32), bytes(range(32)), b"\xff" * 32):
                raw = await signer.sign_digest(digest)
                assert len(raw) == 64
                _verifies(signer, digest, raw)
        finally:
            await signer.close()

    asyncio.run(main())


def test_concurrent_requests_all_get_valid_signatures(open_signer: Callable[[], Awaitable[Signer]]) -> None:
    async def main() -> None:
        signer = await open_signer()
        try:
            digests = [bytes([n]) * 32 for n in range(8)]
            signatures = await asyncio.gather(*(signer.sign_digest(d) for d in digests))
            for digest, raw in zip(digests, signatures):
                _verifies(signer, digest, raw)
        finally:
            await signer.close()

    asyncio.run(main())
