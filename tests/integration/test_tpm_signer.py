"""The TPM signer against a real (software) TPM: start-up self-test, every refusal a
clear error, a TPM that goes away and comes back, the signing rate limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TPM2_CAP, TPM2_HC

from agent.errors import KeyError_, SigningError, TpmError, TpmUnreachable
from agent.keys.tpm import esys
from agent.keys.tpm.signer import TpmSigner
from agent.keys.tpm.tcti import parse_tcti
from provisioning.devca import make_demo_identity
from provisioning.swtpm import SoftwareTpm
from tests.tpm_identity import HANDLE, tpm_identity

DEVICE = "tpm-signer-1"


def _open(tpm: SoftwareTpm, chain: Path, handle: int = HANDLE, interval: float = 0.0) -> TpmSigner:
    async def opened() -> TpmSigner:
        return await TpmSigner.open(parse_tcti(tpm.tcti), handle, chain, interval)

    return asyncio.run(opened())


def test_refuses_a_certificate_for_another_key(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    tpm_identity(swtpm, tmp_path / "tpm", DEVICE)
    software = make_demo_identity(tmp_path / "software", DEVICE)
    with pytest.raises(KeyError_, match="not for the key at TPM handle 0x81020001"):
        _open(swtpm, software.chain_path)


def test_an_empty_handle_says_how_to_create_the_key(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)
    with pytest.raises(TpmError, match="0x81020099 is empty.*tpm keygen"):
        _open(swtpm, identity.chain_path, handle=0x81020099)


def test_refuses_a_handle_that_holds_another_kind_of_key(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)
    with pytest.raises(TpmError, match="0x81010001 does not hold an edgeseal device key: not an ECC P-256 key"):
        _open(swtpm, identity.chain_path, handle=0x81010001)  # the RSA endorsement key


def test_an_unreachable_tpm_is_a_clear_error(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)
    swtpm.kill()
    with pytest.raises(TpmUnreachable, match="cannot reach the TPM"):
        _open(swtpm, identity.chain_path)


def test_a_tpm_that_goes_away_fails_signatures_until_it_returns(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)

    async def main() -> None:
        signer = await TpmSigner.open(parse_tcti(swtpm.tcti), HANDLE, identity.chain_path)
        try:
            swtpm.kill()
            with pytest.raises(SigningError, match="cannot reach the TPM"):
                await signer.sign_digest(bytes(32))
            swtpm.start()  # same state, same port
            assert len(await signer.sign_digest(bytes(32))) == 64
        finally:
            await signer.close()

    asyncio.run(main())


def test_signatures_are_spaced_by_the_minimum_interval(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)

    async def main() -> float:
        signer = await TpmSigner.open(parse_tcti(swtpm.tcti), HANDLE, identity.chain_path, 0.2)
        try:
            started = time.monotonic()
            for _ in range(3):
                await signer.sign_digest(bytes(32))
            return time.monotonic() - started
        finally:
            await signer.close()

    # the self-test's signature, then three: each waits its turn (a lower bound only)
    assert asyncio.run(main()) >= 3 * 0.2


def test_a_key_replaced_underneath_the_agent_is_refused(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)

    async def main() -> None:
        signer = await TpmSigner.open(parse_tcti(swtpm.tcti), HANDLE, identity.chain_path)
        try:
            with esys.connected(parse_tcti(swtpm.tcti)) as esapi:
                esys.create_identity_key(esapi, HANDLE, "another-device", force=True)
            with pytest.raises(TpmError, match="changed while the agent ran") as raised:
                await signer.sign_digest(bytes(32))
            assert not isinstance(raised.value, SigningError)  # not retried: it ends the agent
        finally:
            await signer.close()

    asyncio.run(main())


def test_no_transient_object_or_session_is_left_in_the_tpm(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)

    async def main() -> None:
        signer = await TpmSigner.open(parse_tcti(swtpm.tcti), HANDLE, identity.chain_path)
        try:
            for _ in range(20):  # more than the TPM's 3 transient slots
                await signer.sign_digest(bytes(32))
        finally:
            await signer.close()

    asyncio.run(main())
    with esys.connected(parse_tcti(swtpm.tcti)) as esapi:
        key, _ = esys.open_persistent(esapi, HANDLE)
        esys.certify(esapi, key, b"nonce")
        esys.unseal(esapi, *esys.seal(esapi, b"secret"))
        for kind in (TPM2_HC.HR_TRANSIENT, TPM2_HC.HR_HMAC_SESSION, TPM2_HC.HR_POLICY_SESSION):
            _, data = esapi.get_capability(TPM2_CAP.HANDLES, kind, 16)
            assert list(data.data.handles) == [], f"left in the TPM: {list(data.data.handles)}"


def test_a_dictionary_attack_lockout_is_retried_with_a_clear_message(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    identity = tpm_identity(swtpm, tmp_path, DEVICE)

    def lock_out(esapi: ESAPI) -> None:  # wrong passwords on the device key until the TPM locks out
        esapi.dictionary_attack_parameters(2, 1000, 1000)
        key, _ = esys.open_persistent(esapi, HANDLE)
        esapi.tr_set_auth(key, b"wrong")
        for _ in range(3):
            with pytest.raises(TpmError):
                esys.sign_digest(esapi, key, bytes(32))
        esapi.tr_close(key)

    async def main(esapi: ESAPI) -> None:
        signer = await TpmSigner.open(parse_tcti(swtpm.tcti), HANDLE, identity.chain_path)
        try:
            lock_out(esapi)
            with pytest.raises(SigningError, match="dictionary-attack lockout"):
                await signer.sign_digest(bytes(32))
            esapi.dictionary_attack_lock_reset()
            assert len(await signer.sign_digest(bytes(32))) == 64
        finally:
            await signer.close()

    with esys.connected(parse_tcti(swtpm.tcti)) as esapi:
        asyncio.run(main(esapi))
